"""``liveboard.emit`` and ``liveboard.position``: a Python app's events inside its own transaction.

For a Python backend that shares liveboard's database (CONTRACT §6.3). ``emit(conn, room, type,
data)`` appends one event to ``room``'s log in the transaction open on ``conn`` and returns its
offset; the event exists if and only if that transaction commits, and reaches subscribers
like every other event. ``position(conn, room)`` is the room's head as that transaction sees it
(for an app's own snapshot: read it in the same ``REPEATABLE READ`` transaction as its rows).

``conn`` may be:

* an SQLAlchemy ``Connection`` (sync: the functions return their result) or ``AsyncConnection``
  (async: they return an awaitable), on PostgreSQL or on liveboard's own SQLite file;
* an asyncpg ``Connection`` (async), on PostgreSQL.

On PostgreSQL they call the SQL functions ``liveboard_emit`` and ``liveboard_position`` that
``liveboard migrate`` installs, by those names (the wrappers in ``public``, or whatever the
connection's ``search_path`` finds first), or in ``schema`` when it is given. On SQLite they do
what ``liveboard_emit`` does in the same transaction: the room's head row moves with ``UPDATE …
RETURNING`` (SQLite has one writer at a time), the event is inserted; the instance serving that
file delivers it at its next audit (within about a second; PostgreSQL wakes instances at
once).

Checked before any SQL, with ``EmitError`` (a ``ValueError``): the room's syntax
(``project:{id}`` / ``workspace:{id}``), the type (``protocol.custom_events``), ``data`` a
``dict`` whose JSON is at most 64 KiB. A room that does not exist: ``EmitError`` on SQLite, the
function's error (SQLSTATE P0002) from the driver on PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping
from typing import Any, overload

import msgspec
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard.protocol import Position, ProtocolError, custom_event_type_problem, parse_room
from liveboard.store.open_log_sql import MAX_DATA_BYTES

__all__ = ["EmitError", "emit", "position"]

_encode = msgspec.json.Encoder().encode
_decode_position = msgspec.json.Decoder(dict[str, Any]).decode


class EmitError(ValueError):
    """An event ``emit`` refuses: its room, type or data, said in the message."""


def _checked(room: str, type: str, data: Mapping[str, Any]) -> str:
    """The event's ``data`` as JSON text, once the room, type and data pass (else EmitError)."""
    try:
        parse_room(room)
    except ProtocolError as error:
        raise EmitError(error.message) from None
    problem = custom_event_type_problem(type)
    if problem is not None:
        raise EmitError(f"type {problem}")
    if not isinstance(data, Mapping):
        raise EmitError("data must be a JSON object (a dict)")
    try:
        encoded = _encode(data)
    except (TypeError, msgspec.EncodeError) as error:
        raise EmitError(f"data must be JSON: {error}") from None
    if len(encoded) > MAX_DATA_BYTES:
        raise EmitError(f"data must be at most {MAX_DATA_BYTES} bytes of JSON")
    return encoded.decode()


def _qualified(function: str, schema: str | None) -> str:
    if schema is None:
        return function
    if not schema.isidentifier() or not schema.isascii() or schema.lower() != schema:
        raise EmitError(f"schema must be a lowercase SQL identifier, got {schema!r}")
    return f"{schema}.{function}"


# SQLite: what liveboard_emit does, in the caller's transaction.
_SQLITE_HEAD = text(
    "UPDATE rooms SET last_offset = last_offset + 1 WHERE room = :room RETURNING last_offset, epoch"
)
_SQLITE_INSERT = text(
    'INSERT INTO events (room, "offset", epoch, type, ts, user_id, origin, data) '
    "VALUES (:room, :offset, :epoch, :type, :ts, '', NULL, :data)"
)
_SQLITE_POSITION = text("SELECT last_offset, epoch FROM rooms WHERE room = :room")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _no_room(room: str) -> EmitError:
    return EmitError(f"no room {room!r} (a room exists once its workspace or project is created)")


@overload
def emit(
    conn: Connection, room: str, type: str, data: Mapping[str, Any], *, schema: str | None = None
) -> int: ...
@overload
def emit(
    conn: AsyncConnection | Any,
    room: str,
    type: str,
    data: Mapping[str, Any],
    *,
    schema: str | None = None,
) -> Awaitable[int]: ...
def emit(
    conn: Any, room: str, type: str, data: Mapping[str, Any], *, schema: str | None = None
) -> int | Awaitable[int]:
    """Append an event to ``room``'s log in ``conn``'s transaction; its offset (see the module).

    A sync SQLAlchemy ``Connection`` gets the offset; an ``AsyncConnection`` or an asyncpg
    connection gets an awaitable of it."""
    payload = _checked(room, type, data)
    function = _qualified("liveboard_emit", schema)
    if isinstance(conn, Connection):
        if conn.dialect.name == "sqlite":
            return _emit_sqlite_sync(conn, room, type, payload)
        statement = text(f"SELECT {function}(:room, :type, CAST(:data AS jsonb))")
        return int(conn.execute(statement, {"room": room, "type": type, "data": payload}).one()[0])
    if isinstance(conn, AsyncConnection):
        return _emit_async(conn, function, room, type, payload)
    return _emit_asyncpg(conn, function, room, type, payload)


def _emit_sqlite_sync(conn: Connection, room: str, type: str, payload: str) -> int:
    head = conn.execute(_SQLITE_HEAD, {"room": room}).first()
    if head is None:
        raise _no_room(room)
    values = {"room": room, "offset": head[0], "epoch": head[1], "type": type}
    conn.execute(_SQLITE_INSERT, {**values, "ts": _now_ms(), "data": payload})
    return int(head[0])


async def _emit_async(
    conn: AsyncConnection, function: str, room: str, type: str, payload: str
) -> int:
    if conn.dialect.name == "sqlite":
        head = (await conn.execute(_SQLITE_HEAD, {"room": room})).first()
        if head is None:
            raise _no_room(room)
        values = {"room": room, "offset": head[0], "epoch": head[1], "type": type}
        await conn.execute(_SQLITE_INSERT, {**values, "ts": _now_ms(), "data": payload})
        return int(head[0])
    statement = text(f"SELECT {function}(:room, :type, CAST(:data AS jsonb))")
    result = await conn.execute(statement, {"room": room, "type": type, "data": payload})
    return int(result.one()[0])


async def _emit_asyncpg(conn: Any, function: str, room: str, type: str, payload: str) -> int:
    return int(await conn.fetchval(f"SELECT {function}($1, $2, $3::jsonb)", room, type, payload))


@overload
def position(conn: Connection, room: str, *, schema: str | None = None) -> Position: ...
@overload
def position(
    conn: AsyncConnection | Any, room: str, *, schema: str | None = None
) -> Awaitable[Position]: ...
def position(conn: Any, room: str, *, schema: str | None = None) -> Position | Awaitable[Position]:
    """``room``'s head (offset and epoch) as ``conn``'s transaction sees it; ``EmitError`` for
    a bad room name (and, on SQLite, one that does not exist)."""
    try:
        parse_room(room)
    except ProtocolError as error:
        raise EmitError(error.message) from None
    function = _qualified("liveboard_position", schema)
    if isinstance(conn, Connection):
        if conn.dialect.name == "sqlite":
            return _position_row(room, conn.execute(_SQLITE_POSITION, {"room": room}).first())
        raw = conn.execute(text(f"SELECT {function}(:room)::text"), {"room": room}).scalar_one()
        return _position_json(raw)
    if isinstance(conn, AsyncConnection):
        return _position_async(conn, function, room)
    return _position_asyncpg(conn, function, room)


def _position_row(room: str, row: Any) -> Position:
    if row is None:
        raise _no_room(room)
    return Position(offset=int(row[0]), epoch=str(row[1]))


def _position_json(raw: str) -> Position:
    found = _decode_position(raw)
    return Position(offset=int(found["offset"]), epoch=str(found["epoch"]))


async def _position_async(conn: AsyncConnection, function: str, room: str) -> Position:
    if conn.dialect.name == "sqlite":
        row = (await conn.execute(_SQLITE_POSITION, {"room": room})).first()
        return _position_row(room, row)
    result = await conn.execute(text(f"SELECT {function}(:room)::text"), {"room": room})
    return _position_json(result.scalar_one())


async def _position_asyncpg(conn: Any, function: str, room: str) -> Position:
    return _position_json(await conn.fetchval(f"SELECT {function}($1)::text", room))
