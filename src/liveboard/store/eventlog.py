"""The event log: the durable truth behind every real-time guarantee.

Each room (``project:{id}``, ``workspace:{id}``) has a head row in ``rooms`` and its events in
``events``. ``append_event`` must run inside the write transaction that makes the change it
describes; it increments the room's ``last_offset`` with ``UPDATE … RETURNING``, which takes the
row's write lock, so concurrent writers of one room are serialised and the offsets they commit are
exactly previous + 1, with no gap and no duplicate, on SQLite and PostgreSQL alike. A transaction
that rolls back takes its offset with it.
"""

from __future__ import annotations

import secrets
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import (
    BigInteger,
    String,
    Text,
    bindparam,
    delete,
    exists,
    func,
    literal_column,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard.protocol import BrokerEvent, Position
from liveboard.store.schema import events, projects, rooms

#: ``events.user_id`` of an event no user caused (``userId: null`` on the wire): no user id is
#: empty (``liveboard.text``), and the column stays NOT NULL. NULL is read as null too.
NO_USER = ""

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder(dict[str, Any]).decode


def decode_event_data(text: str) -> dict[str, Any]:
    """An event's ``data`` column (JSON text) as the object it holds."""
    return _json_decode(text)


def encode_event_data(data: dict[str, Any]) -> str:
    """An event's ``data`` as its column holds it (JSON text)."""
    return _json_encode(data).decode()


def new_epoch() -> str:
    return secrets.token_hex(4)


async def create_room(conn: AsyncConnection, room: str) -> Position:
    """Create a room's log head at offset 0 with a fresh epoch."""
    position = Position(offset=0, epoch=new_epoch())
    await conn.execute(rooms.insert().values(room=room, epoch=position.epoch, last_offset=0))
    return position


# Built once (they run on every change). The room's head moves with ``UPDATE … RETURNING``:
# its row lock serialises the room's writers, so each commits previous + 1.
_NEXT_OFFSET = (
    rooms.update()
    .where(rooms.c.room == bindparam("head_room"))
    .values(last_offset=rooms.c.last_offset + 1)
    .returning(rooms.c.last_offset, rooms.c.epoch)
)
# The head of the room an event depends on (its workspace's), read by the same statement: no
# round trip more while the room's row lock is held. FOR SHARE (PostgreSQL; SQLite runs one
# writer at a time and omits it): under READ COMMITTED a plain read would see the statement's
# snapshot, taken before it waited for its own room's row, so a removal committed during that
# wait would be missed and this event, committed after it, would name the head before it. The
# locking read returns the row's latest committed version, and while this transaction holds
# the share lock a removal's UPDATE of that row waits for it to commit: either way the head
# named covers every membership change committed before this event.
_depended = rooms.alias("depended")
_DEPENDED_HEAD = (
    select(_depended.c.last_offset)
    .where(_depended.c.room == bindparam("depends_on"))
    .with_for_update(read=True)
    .scalar_subquery()
)
_NEXT_OFFSET_AND_DEPENDED = (
    rooms.update()
    .where(rooms.c.room == bindparam("head_room"))
    .values(last_offset=rooms.c.last_offset + 1)
    .returning(rooms.c.last_offset, rooms.c.epoch, _DEPENDED_HEAD.label("depended"))
)
_INSERT_EVENT = events.insert()
_EVENT_COLUMNS = ["room", "offset", "epoch", "type", "ts", "user_id", "origin", "data"]


# PostgreSQL: both in one statement, so one round trip instead of two while the writer holds
# the room's (and its task's) row lock. SQLite has no data-modifying CTE, and no round trip.
def _append_postgres(change: Any = None) -> tuple[Any, Any]:
    """The append as one PostgreSQL statement (plain, and naming the depended-on head); with
    ``change`` (an UPDATE) that change too, in the same statement, the event appended only
    if it changed a row (so an event never outlives its change: no row, no event, and
    ``append_event`` raises)."""
    head_update = _NEXT_OFFSET
    if change is not None:
        changed = change.returning(*change.table.primary_key.columns).cte("change")
        head_update = head_update.where(exists(select(literal_column("1")).select_from(changed)))
    head = head_update.cte("head")
    statement = _INSERT_EVENT.from_select(
        _EVENT_COLUMNS,
        select(
            bindparam("head_room", type_=String),
            head.c.last_offset,
            head.c.epoch,
            bindparam("event_type", type_=String),
            bindparam("event_ts", type_=BigInteger),
            bindparam("event_user_id", type_=String),
            bindparam("event_origin", type_=String),
            bindparam("event_data", type_=Text),
        ),
    )
    return (
        statement.returning(events.c.offset, events.c.epoch),
        statement.returning(events.c.offset, events.c.epoch, _DEPENDED_HEAD.label("depended")),
    )


_APPEND_POSTGRES_PLAIN, _APPEND_POSTGRES_DEPENDENT = _append_postgres()
#: ``_append_postgres(change)`` by ``Change.key``: built once per kind of change (building a
#: statement and its cache key per call costs more CPU than executing it).
_APPEND_WITH: dict[tuple[str, ...], tuple[Any, Any]] = {}


class Change(NamedTuple):
    """A change of one row (an UPDATE of it, by primary key) for ``append_event`` to make in the
    statement that appends its event (PostgreSQL; before it on SQLite): ``statement`` and its
    ``params`` (named apart from the append's: not ``head_room``, ``depends_on``,
    ``event_*``). ``key`` names the statement: the same key, the same statement object."""

    key: tuple[str, ...]
    statement: Any
    params: dict[str, Any]


async def append_event(
    conn: AsyncConnection,
    *,
    room: str,
    type: str,
    user_id: str | None,
    data: dict[str, Any],
    ts: int,
    origin: str | None = None,
    depends_on: str | None = None,
    change: Change | None = None,
) -> BrokerEvent:
    """Append one event to ``room`` inside the caller's write transaction and return it.

    ``depends_on``: a room (a project's workspace room) whose head this transaction reads into
    the returned event's ``workspace_offset``. Every change of that room committed before this
    transaction began is at or below it; instances hold the event until they have released that
    room up to there. Not stored: events read back from the log have 0.

    ``user_id`` None: no user caused the event (a service's; ``userId: null``).

    ``change``: a change of the row the event describes, made in the same statement on
    PostgreSQL, so that the row locks it takes (the room's head; the task's, when the caller
    has not locked it already) are taken and the event appended in one round trip; on SQLite
    it runs just before the append, as a separate statement (one writer at a time anyway).

    Raises ``sqlalchemy.exc.NoResultFound`` when the room does not exist, or ``change``
    changed no row (on PostgreSQL; nothing is appended then).
    """
    # (Parameter names differ from the column names: SQLAlchemy reserves those for VALUES.)
    values = {
        "type": type,
        "ts": ts,
        "user_id": user_id or NO_USER,
        "origin": origin,
        "data": encode_event_data(data),
    }
    heads = {"head_room": room}
    if depends_on is not None:
        heads["depends_on"] = depends_on
    if conn.dialect.name == "postgresql":
        params = {f"event_{key}": value for key, value in values.items()}
        if change is None:
            plain, dependent = _APPEND_POSTGRES_PLAIN, _APPEND_POSTGRES_DEPENDENT
        else:
            found = _APPEND_WITH.get(change.key)
            if found is None:
                found = _APPEND_WITH[change.key] = _append_postgres(change.statement)
            plain, dependent = found
            params.update(change.params)
        statement = plain if depends_on is None else dependent
        appended = (await conn.execute(statement, {**heads, **params})).one()
        offset, epoch = int(appended.offset), str(appended.epoch)
    else:
        if change is not None:
            await conn.execute(change.statement, change.params)
        head = _NEXT_OFFSET if depends_on is None else _NEXT_OFFSET_AND_DEPENDED
        appended = (await conn.execute(head, heads)).one()
        offset, epoch = int(appended.last_offset), str(appended.epoch)
        await conn.execute(
            _INSERT_EVENT, {"room": room, "offset": offset, "epoch": epoch, **values}
        )
    depended = 0 if depends_on is None else int(appended.depended or 0)
    return BrokerEvent(
        type=type,
        room=room,
        offset=offset,
        epoch=epoch,
        ts=ts,
        user_id=user_id,
        data=data,
        origin=origin,
        workspace_offset=depended,
    )


_LOCK_ROOM = (
    select(rooms.c.last_offset).where(rooms.c.room == bindparam("head_room")).with_for_update()
)


async def lock_room(conn: AsyncConnection, room: str) -> None:
    """Take now the row lock ``append_event`` takes on the room's head, for a transaction that
    must read the room's state without any other writer of the room changing it before it
    commits (a task's place in its column). PostgreSQL; on SQLite the write transaction already
    holds the database's only write lock (``BEGIN IMMEDIATE``), and this is a no-op."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_LOCK_ROOM, {"head_room": room})


async def room_position(conn: AsyncConnection, room: str) -> Position | None:
    """The room's head, or None when the room does not exist."""
    row = (
        await conn.execute(select(rooms.c.last_offset, rooms.c.epoch).where(rooms.c.room == room))
    ).first()
    return None if row is None else Position(offset=int(row.last_offset), epoch=str(row.epoch))


async def room_positions(conn: AsyncConnection, names: list[str]) -> dict[str, Position]:
    """Heads of several rooms at once (rooms that do not exist are absent from the result)."""
    if not names:
        return {}
    result = await conn.execute(
        select(rooms.c.room, rooms.c.last_offset, rooms.c.epoch).where(rooms.c.room.in_(names))
    )
    return {str(r.room): Position(offset=int(r.last_offset), epoch=str(r.epoch)) for r in result}


async def read_events(
    conn: AsyncConnection, room: str, *, after: int, limit: int, up_to: int | None = None
) -> list[BrokerEvent]:
    """Events of ``room`` with offset > ``after`` (and ≤ ``up_to``), in offset order."""
    query = select(events).where(events.c.room == room, events.c.offset > after)
    if up_to is not None:
        query = query.where(events.c.offset <= up_to)
    result = await conn.execute(query.order_by(events.c.offset).limit(limit))
    return [
        BrokerEvent(
            type=str(r.type),
            room=str(r.room),
            offset=int(r.offset),
            epoch=str(r.epoch),
            ts=int(r.ts),
            user_id=r.user_id or None,
            data=_json_decode(r.data),
            origin=r.origin,
        )
        for r in result
    ]


# The head of a project room's workspace room, by the project's id: read in the same statement
# as the project's events (one snapshot), for ``read_events_held``.
_workspace_head = rooms.alias("workspace_head")
_WORKSPACE_HEAD = (
    select(_workspace_head.c.last_offset)
    .where(
        _workspace_head.c.room
        == "workspace:"
        + select(projects.c.workspace_id)
        .where(projects.c.id == bindparam("project_id"))
        .scalar_subquery()
    )
    .scalar_subquery()
)
_EVENTS_AND_WORKSPACE_HEAD = (
    select(events, _WORKSPACE_HEAD.label("workspace_head"))
    .where(
        events.c.room == bindparam("log_room"),
        events.c.offset > bindparam("after"),
        events.c.offset <= bindparam("up_to"),
    )
    .order_by(events.c.offset)
    .limit(bindparam("batch"))
)


async def read_events_held(
    conn: AsyncConnection, room: str, *, after: int, up_to: int, limit: int
) -> list[BrokerEvent]:
    """Events of ``room`` with ``after`` < offset ≤ ``up_to``, in offset order, as a broker
    hands them to the hub: those of a project room name its workspace room's head, read in the
    same statement (``BrokerEvent.workspace_offset``). A membership change committed before any
    of them is in that snapshot too, so the hub holds them until the workspace room has
    released it (CONTRACT §3), as it holds a live event its writer published."""
    kind, _, rid = room.partition(":")
    if kind != "project":
        return await read_events(conn, room, after=after, up_to=up_to, limit=limit)
    result = await conn.execute(
        _EVENTS_AND_WORKSPACE_HEAD,
        {"log_room": room, "after": after, "up_to": up_to, "batch": limit, "project_id": rid},
    )
    return [
        BrokerEvent(
            type=str(r.type),
            room=str(r.room),
            offset=int(r.offset),
            epoch=str(r.epoch),
            ts=int(r.ts),
            user_id=r.user_id or None,
            data=_json_decode(r.data),
            origin=r.origin,
            workspace_offset=int(r.workspace_head or 0),
        )
        for r in result
    ]


async def oldest_offset(conn: AsyncConnection, room: str) -> int | None:
    """The smallest offset still kept for ``room``, or None when its log is empty."""
    value = await conn.scalar(select(func.min(events.c.offset)).where(events.c.room == room))
    return None if value is None else int(value)


async def rooms_longer_than(
    conn: AsyncConnection, offset: int, *, after_room: str, limit: int
) -> list[tuple[str, int]]:
    """Up to ``limit`` rooms whose head is past ``offset``, named after ``after_room`` (in name
    order: a cursor over all rooms), with their heads."""
    result = await conn.execute(
        select(rooms.c.room, rooms.c.last_offset)
        .where(rooms.c.last_offset > offset, rooms.c.room > after_room)
        .order_by(rooms.c.room)
        .limit(limit)
    )
    return [(str(r.room), int(r.last_offset)) for r in result]


async def first_offset_since(
    conn: AsyncConnection, room: str, ts: int, *, from_offset: int, up_to: int
) -> int | None:
    """The first offset in ``from_offset..up_to`` of ``room`` whose event's ``ts`` is at least
    ``ts``; None when all of them are older. Walks the primary key in offset order from
    ``from_offset``: it reads the old events it passes, which are the ones to prune."""
    value = await conn.scalar(
        select(events.c.offset)
        .where(
            events.c.room == room,
            events.c.offset >= from_offset,
            events.c.offset <= up_to,
            events.c.ts >= ts,
        )
        .order_by(events.c.offset)
        .limit(1)
    )
    return None if value is None else int(value)


async def delete_through(conn: AsyncConnection, room: str, offset: int) -> int:
    """Delete ``room``'s events with an offset at most ``offset``; return how many. The caller
    bounds the range (a batch of consecutive offsets)."""
    result = await conn.execute(
        delete(events).where(events.c.room == room, events.c.offset <= offset)
    )
    return int(result.rowcount or 0)
