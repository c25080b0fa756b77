"""The SQL of a publish batch (``tasks.publish_batch``): several published events, one
transaction, a fixed number of statements whatever the batch's size.

In the batch's transaction, in this order:

1. ``lock_heads``: the heads of the batch's rooms, row-locked (``FOR NO KEY UPDATE``, the lock
   the ``UPDATE`` of ``store.eventlog`` takes) in room-name order, and for a batch of project
   rooms the head of each project's workspace room, share-locked (``FOR SHARE``, as
   ``eventlog`` reads it) in room-name order. One statement each. Locks taken in one global
   order (project rooms, then workspace rooms; by name within each) cannot form a cycle with
   another batch's, on any instance: a batch holds rooms of one kind only
   (``tasks.publish_batch``). liveboard's own writes take a project room's lock, then its
   workspace room's share lock: the same order.
2. ``write``: the rooms' new heads, the events and the idempotency keys of the members that
   carry one, in one statement (PostgreSQL: data-modifying CTEs over arrays; SQLite: one
   statement per row, SQLite has no round trips). It returns the keys it stored: a key
   missing from that set was already taken, and the caller rolls the whole transaction back
   (nothing of it commits) and tries again without that member.

PostgreSQL runs on the asyncpg connection itself (``Database.driver``): the statements are
prepared once per connection and kept by asyncpg, with none of SQLAlchemy's compile and result
layers on the hot path. SQLite runs through SQLAlchemy in ``Database.write``'s transaction (one
writer at a time: no lock order to keep).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard.protocol import Position
from liveboard.store.eventlog import NO_USER
from liveboard.store.schema import events, projects, rooms, service_idempotency_keys

__all__ = ["EventRow", "KeyRow", "PostgresBatchSql", "lock_heads_sqlite", "write_sqlite"]


class EventRow(NamedTuple):
    """An event to insert (a service's: no user, no origin)."""

    room: str
    offset: int
    epoch: str
    type: str
    data: str  # JSON text


class KeyRow(NamedTuple):
    """A service's idempotency key and the answer stored with it (``store.idempotency``)."""

    api_key_id: str
    key: str
    fingerprint: str
    status: int
    body: bytes
    headers: str  # JSON text


Heads = tuple[dict[str, Position], dict[str, int]]


class PostgresBatchSql:
    """The statements, with liveboard's schema in them; built once per database."""

    def __init__(self, table: Any) -> None:
        """``table``: ``Database.table`` (a table's schema-qualified name)."""
        r, p, e = table("rooms"), table("projects"), table("events")
        k = table("service_idempotency_keys")
        self.lock_rooms = (
            f"SELECT room, last_offset, epoch FROM {r} WHERE room = ANY($1::text[]) "
            "ORDER BY room FOR NO KEY UPDATE"
        )
        self.lock_workspaces = (
            f"SELECT 'project:' || p.id, w.last_offset FROM {p} AS p "
            f"JOIN {r} AS w ON w.room = 'workspace:' || p.workspace_id "
            "WHERE p.id = ANY($1::text[]) ORDER BY w.room FOR SHARE OF w"
        )
        # Data-modifying CTEs run once and to completion whether or not anything reads them.
        self.write = (
            f"WITH heads AS (UPDATE {r} AS r SET last_offset = h.last_offset "
            "FROM unnest($1::text[], $2::bigint[]) AS h(room, last_offset) "
            "WHERE r.room = h.room), "
            f"appended AS (INSERT INTO {e} "
            '(room, "offset", epoch, type, ts, user_id, origin, data) '
            "SELECT a.room, a.off, a.epoch, a.type, $8::bigint, $9::text, NULL, a.data "
            "FROM unnest($3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[]) "
            "AS a(room, off, epoch, type, data)) "
            f"INSERT INTO {k} "
            "(api_key_id, key, fingerprint, status, body, headers, created_at) "
            "SELECT k.id, k.key, k.fp, k.status, k.body, k.headers, $8::bigint "
            "FROM unnest($10::text[], $11::text[], $12::text[], $13::int[], $14::bytea[], "
            "$15::text[]) AS k(id, key, fp, status, body, headers) "
            "ON CONFLICT (api_key_id, key) DO NOTHING RETURNING api_key_id, key"
        )

    async def lock_heads(
        self, conn: Any, room_names: Sequence[str], project_ids: Sequence[str]
    ) -> Heads:
        """Step 1 (see the module) on an asyncpg connection in a transaction."""
        heads = {
            str(row[0]): Position(offset=int(row[1]), epoch=str(row[2]))
            for row in await conn.fetch(self.lock_rooms, list(room_names))
        }
        workspace_heads: dict[str, int] = {}
        if project_ids:
            for row in await conn.fetch(self.lock_workspaces, list(project_ids)):
                workspace_heads[str(row[0])] = int(row[1])
        return heads, workspace_heads

    async def write_rows(
        self,
        conn: Any,
        new_heads: dict[str, int],
        rows: Sequence[EventRow],
        keys: Sequence[KeyRow],
        now_ms: int,
    ) -> set[tuple[str, str]]:
        """Step 2 (see the module); the keys stored."""
        stored = await conn.fetch(
            self.write,
            list(new_heads),
            list(new_heads.values()),
            [row.room for row in rows],
            [row.offset for row in rows],
            [row.epoch for row in rows],
            [row.type for row in rows],
            [row.data for row in rows],
            now_ms,
            NO_USER,
            [key.api_key_id for key in keys],
            [key.key for key in keys],
            [key.fingerprint for key in keys],
            [key.status for key in keys],
            [key.body for key in keys],
            [key.headers for key in keys],
        )
        return {(str(row[0]), str(row[1])) for row in stored}


_SQLITE_HEADS = select(rooms.c.room, rooms.c.last_offset, rooms.c.epoch).where(
    rooms.c.room.in_(bindparam("names", expanding=True))
)
_workspace = rooms.alias("workspace")
_SQLITE_WORKSPACE_HEADS = (
    select(projects.c.id, _workspace.c.last_offset)
    .select_from(
        projects.join(_workspace, _workspace.c.room == "workspace:" + projects.c.workspace_id)
    )
    .where(projects.c.id.in_(bindparam("ids", expanding=True)))
)
_SQLITE_SET_HEAD = (
    rooms.update()
    .where(rooms.c.room == bindparam("head_room"))
    .values(last_offset=bindparam("head"))
)
_SQLITE_INSERT_EVENT = events.insert()
_SQLITE_INSERT_KEY = (
    sqlite.insert(service_idempotency_keys)
    .on_conflict_do_nothing(
        index_elements=[service_idempotency_keys.c.api_key_id, service_idempotency_keys.c.key]
    )
    .returning(service_idempotency_keys.c.key)
)


async def lock_heads_sqlite(
    conn: AsyncConnection, room_names: Sequence[str], project_ids: Sequence[str]
) -> Heads:
    """Step 1 on SQLite, in ``Database.write``'s transaction (which holds the write lock)."""
    result = await conn.execute(_SQLITE_HEADS, {"names": list(room_names)})
    heads = {str(r.room): Position(offset=int(r.last_offset), epoch=str(r.epoch)) for r in result}
    workspace_heads: dict[str, int] = {}
    if project_ids:
        found = await conn.execute(_SQLITE_WORKSPACE_HEADS, {"ids": list(project_ids)})
        workspace_heads = {f"project:{r.id}": int(r.last_offset) for r in found}
    return heads, workspace_heads


async def write_sqlite(
    conn: AsyncConnection,
    new_heads: dict[str, int],
    rows: Sequence[EventRow],
    keys: Sequence[KeyRow],
    now_ms: int,
) -> set[tuple[str, str]]:
    """Step 2 on SQLite; the keys stored."""
    await conn.execute(
        _SQLITE_SET_HEAD, [{"head_room": room, "head": head} for room, head in new_heads.items()]
    )
    await conn.execute(
        _SQLITE_INSERT_EVENT,
        [{**row._asdict(), "ts": now_ms, "user_id": NO_USER, "origin": None} for row in rows],
    )
    stored: set[tuple[str, str]] = set()
    for key in keys:  # one at a time: RETURNING says which were taken
        result = await conn.execute(_SQLITE_INSERT_KEY, {**key._asdict(), "created_at": now_ms})
        if result.first() is not None:
            stored.add((key.api_key_id, key.key))
    return stored
