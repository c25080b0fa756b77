"""What admitting a subscription needs from the database, read in one query.

A subscribe is checked against membership and starts from the room's head; a project room also
needs its workspace room's head (the node watches it for ``member:removed``). Asked one by one
that is four queries, each a round trip through the driver; joined it is one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard.protocol import BrokerEvent, Position
from liveboard.protocol.rooms import WORKSPACE_ROOM_PREFIX
from liveboard.store.eventlog import decode_event_data
from liveboard.store.schema import members, projects, rooms


@dataclass(frozen=True, slots=True)
class Admission:
    """A subscription the database allows, and where its streams start."""

    workspace_id: str
    position: Position  # the room's head
    workspace_head: Position  # its workspace room's head (the same for a workspace room)


# Built once: a subscribe runs one of these, and building the statement (and its cache key)
# per call cost more CPU than running it.
_workspace_rooms = rooms.alias("workspace_rooms")
_ADMIT_PROJECT = (
    select(
        projects.c.workspace_id,
        rooms.c.last_offset,
        rooms.c.epoch,
        _workspace_rooms.c.last_offset,
        _workspace_rooms.c.epoch,
    )
    .select_from(
        projects.join(
            members,
            and_(
                members.c.workspace_id == projects.c.workspace_id,
                members.c.user_id == bindparam("user_id"),
            ),
        )
        .join(rooms, rooms.c.room == bindparam("room_name"))
        .join(
            _workspace_rooms,
            _workspace_rooms.c.room == literal(WORKSPACE_ROOM_PREFIX) + projects.c.workspace_id,
        )
    )
    .where(projects.c.id == bindparam("project_id"))
)
_ADMIT_WORKSPACE = (
    select(rooms.c.last_offset, rooms.c.epoch)
    .select_from(members.join(rooms, rooms.c.room == bindparam("room_name")))
    .where(
        members.c.workspace_id == bindparam("workspace_id"),
        members.c.user_id == bindparam("user_id"),
    )
)


async def admit_project(
    conn: AsyncConnection, project_id: str, room: str, user_id: str
) -> Admission | None:
    """None unless project ``project_id`` exists, ``user_id`` is a member of its workspace, and
    both ``room`` and the workspace's room exist."""
    params = {"project_id": project_id, "room_name": room, "user_id": user_id}
    row = (await conn.execute(_ADMIT_PROJECT, params)).first()
    if row is None:
        return None
    return Admission(
        workspace_id=str(row[0]),
        position=Position(offset=int(row[1]), epoch=str(row[2])),
        workspace_head=Position(offset=int(row[3]), epoch=str(row[4])),
    )


async def admit_workspace(
    conn: AsyncConnection, workspace_id: str, room: str, user_id: str
) -> Admission | None:
    """None unless ``user_id`` is a member of ``workspace_id`` and ``room`` exists."""
    params = {"workspace_id": workspace_id, "room_name": room, "user_id": user_id}
    row = (await conn.execute(_ADMIT_WORKSPACE, params)).first()
    if row is None:
        return None
    position = Position(offset=int(row[0]), epoch=str(row[1]))
    return Admission(workspace_id=workspace_id, position=position, workspace_head=position)


@dataclass(frozen=True, slots=True)
class WorkspaceMembers:
    """A workspace's members and its room's head, read in one snapshot (``read_members``)."""

    head: Position
    user_ids: list[str]


# One statement, so one snapshot: the workspace room's head and the members as of it. A left
# join, so that a workspace without members still gives its head.
_MEMBERS = (
    select(rooms.c.last_offset, rooms.c.epoch, members.c.user_id)
    .select_from(rooms.outerjoin(members, members.c.workspace_id == bindparam("workspace_id")))
    .where(rooms.c.room == bindparam("room_name"))
    .limit(bindparam("most"))
)


async def read_members(
    conn: AsyncConnection, workspace_id: str, most: int
) -> WorkspaceMembers | None:
    """Up to ``most`` members of ``workspace_id`` and its room's head as of the same snapshot
    (one statement); None if the workspace's room does not exist."""
    params = {
        "workspace_id": workspace_id,
        "room_name": WORKSPACE_ROOM_PREFIX + workspace_id,
        "most": most,
    }
    rows = (await conn.execute(_MEMBERS, params)).all()
    if not rows:
        return None
    head = Position(offset=int(rows[0][0]), epoch=str(rows[0][1]))
    return WorkspaceMembers(head=head, user_ids=[str(r[2]) for r in rows if r[2] is not None])


@dataclass(frozen=True, slots=True)
class Recovery:
    """A subscription with ``since`` the database allows: its admission, the lowest offset its
    room's log still holds (None: none), and the events after ``since`` up to the room's head
    (read only when the epoch matches and the distance is within the history asked for)."""

    admission: Admission
    oldest: int | None
    history: list[BrokerEvent]
    #: ``history`` and up to ``recent`` events before it, when the epoch matched (see ``recover``)
    read: list[BrokerEvent]


# The whole read of a reconnect with ``since``, as one statement on PostgreSQL: membership,
# both heads, the oldest offset kept and the history, in one round trip and one snapshot (a
# statement sees one snapshot by itself, so no transaction either: no BEGIN, no ROLLBACK). It
# is sent as text to the asyncpg connection, which prepares it once per connection and keeps
# it (its statement cache; under PgBouncer it is prepared unnamed each time, see Database):
# SQLAlchemy's compile and result layers cost more CPU than the query did (issue 20: 28 % of a
# reconnect). ``{…}`` are table names (``Database.table``); ``$1`` the room's id, ``$2`` the
# room, ``$3`` the user, ``$4``/``$5`` since's offset/epoch, ``$6`` the history size, ``$7``
# the most events read, ``$8`` how many events before the head to read at least (the start of
# the hub's ``Room.recent``, for the room's later reconnects; see ``realtime.admit_cache``).
_HISTORY = """
LEFT JOIN LATERAL (
  SELECT e."offset", e.epoch, e.type, e.ts, e.user_id, e.origin, e.data
  FROM {events} e
  WHERE e.room = $2 AND e."offset" > LEAST($4, a.last_offset - $8)
    AND e."offset" <= a.last_offset
    AND a.epoch = $5 AND a.last_offset - $4 <= $6
  ORDER BY e."offset"
  LIMIT $7
) h ON true
ORDER BY h."offset"
"""
_RECOVER_PROJECT = (
    """
WITH a AS (
  SELECT p.workspace_id, r.last_offset, r.epoch, w.last_offset AS ws_offset, w.epoch AS ws_epoch
  FROM {projects} p
  JOIN {members} m ON m.workspace_id = p.workspace_id AND m.user_id = $3
  JOIN {rooms} r ON r.room = $2
  JOIN {rooms} w ON w.room = '"""
    + WORKSPACE_ROOM_PREFIX
    + """' || p.workspace_id
  WHERE p.id = $1
)
SELECT a.workspace_id, a.last_offset, a.epoch, a.ws_offset, a.ws_epoch,
  (SELECT min(o."offset") FROM {events} o WHERE o.room = $2) AS oldest,
  h."offset", h.epoch AS event_epoch, h.type, h.ts, h.user_id, h.origin, h.data
FROM a"""
    + _HISTORY
)
_RECOVER_WORKSPACE = (
    """
WITH a AS (
  SELECT m.workspace_id, r.last_offset, r.epoch, r.last_offset AS ws_offset, r.epoch AS ws_epoch
  FROM {members} m JOIN {rooms} r ON r.room = $2
  WHERE m.workspace_id = $1 AND m.user_id = $3
)
SELECT a.workspace_id, a.last_offset, a.epoch, a.ws_offset, a.ws_epoch,
  (SELECT min(o."offset") FROM {events} o WHERE o.room = $2) AS oldest,
  h."offset", h.epoch AS event_epoch, h.type, h.ts, h.user_id, h.origin, h.data
FROM a"""
    + _HISTORY
)


def recovery_statements(table: Callable[[str], str]) -> tuple[str, str]:
    """The project and workspace recovery statements with ``table``'s table names."""
    names = {t: table(t) for t in ("events", "projects", "members", "rooms")}
    return _RECOVER_PROJECT.format(**names), _RECOVER_WORKSPACE.format(**names)


async def recover(
    driver: Any,
    statement: str,
    *,
    rid: str,
    room: str,
    user_id: str,
    since: Position,
    history_size: int,
    limit: int,
    recent: int = 0,
) -> Recovery | None:
    """Run a recovery statement (``recovery_statements``) on an asyncpg connection: None
    unless the user may subscribe to ``room`` (as ``admit_project``/``admit_workspace``).

    With ``recent``, up to that many events before the head are read as well (``Recovery.read``;
    ``history`` is still at most ``limit`` events after ``since``), ``limit + recent`` in all."""
    rows = await driver.fetch(
        statement,
        rid,
        room,
        user_id,
        since.offset,
        since.epoch,
        history_size,
        limit + recent,
        recent,
    )
    if not rows:
        return None
    first = rows[0]
    admission = Admission(
        workspace_id=str(first[0]),
        position=Position(offset=int(first[1]), epoch=str(first[2])),
        workspace_head=Position(offset=int(first[3]), epoch=str(first[4])),
    )
    oldest = None if first[5] is None else int(first[5])
    read = [
        BrokerEvent(
            type=str(r[8]),
            room=room,
            offset=int(r[6]),
            epoch=str(r[7]),
            ts=int(r[9]),
            user_id=r[10] or None,
            data=decode_event_data(r[12]),
            origin=r[11],
        )
        for r in rows
        if r[6] is not None
    ]
    history = [e for e in read if e.offset > since.offset][:limit]
    return Recovery(admission=admission, oldest=oldest, history=history, read=read)
