"""The SQL of the open log on PostgreSQL (CONTRACT §6.3): ``liveboard_emit`` and
``liveboard_position``, as ``liveboard migrate`` installs them in liveboard's schema.

``liveboard_emit(room, type, data)`` appends one event to ``room``'s log inside the caller's
transaction, exactly as liveboard's own writes do (``store.eventlog``): ``UPDATE … RETURNING`` on
the room's head row takes its row lock, so the room's writers, liveboard's and the app's alike,
commit offsets previous + 1 with no gap and no duplicate; a transaction that rolls back takes its
offset with it. The event's ``userId`` is null (stored as ``''``, as ``store.eventlog`` writes
an event no user caused), its ``ts`` the time of the call in unix milliseconds. It then
``pg_notify``s ``wakeup_channel(schema)`` with ``"<room> <offset>"``: PostgreSQL delivers the
notification when, and only if, the transaction commits, and every liveboard instance
listening reads the room's log at once (``realtime.brokers.wakeup``).

Rows locked: the room's head only (one row per call), the same lock a task change takes after
its task's row and before its workspace room's: a transaction that emits to a project room and
to its workspace room should emit to the project room first.

Refused with SQLSTATE 22023 (``invalid_parameter_value``): a room that is not ``project:{id}``
or ``workspace:{id}``, a type that is not a custom event type (the rule of
``liveboard.protocol``: ``namespace:name``, at most 64 characters, not one of the server's own
message types), ``data`` that is not a JSON object or is over ``MAX_DATA_BYTES``. With SQLSTATE
P0002 (``no_data_found``): a well-formed room that does not exist. Each message starts with the
function's name.

The functions are ``SECURITY INVOKER``: the caller needs what liveboard's own role has on the
schema's ``rooms`` (SELECT, UPDATE) and ``events`` (INSERT), so a role that may not write
liveboard's log cannot write it through them either.

Frozen with the migration that installs them: a change to this SQL is a new migration.
"""

from __future__ import annotations

from typing import Final

#: The rule of a custom event's type, as PostgreSQL's regular expressions read it (ASCII ranges).
TYPE_PATTERN: Final = "^[a-z][a-z0-9_.-]*:[a-z][a-z0-9_.-]*$"
#: The longest custom event type, in characters.
MAX_TYPE_LENGTH: Final = 64
#: Server message types that fit the pattern and so must be refused by name.
RESERVED_TYPES: Final = ("presence:update",)
#: The room names the function accepts (``liveboard.protocol.rooms``' syntax).
ROOM_PATTERN: Final = "^(project|workspace):[A-Za-z0-9_-]{1,128}$"
#: The largest ``data`` accepted, in bytes of its JSON text.
MAX_DATA_BYTES: Final = 65536


def wakeup_channel(schema: str) -> str:
    """The notification channel of the installation in ``schema``: several installations in
    one database (one schema each) wake only their own instances."""
    return f"{schema}_events"


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


def function_statements(schema: str) -> list[str]:
    """``CREATE OR REPLACE FUNCTION`` statements of both functions in ``schema`` (a checked
    identifier), and, unless ``schema`` is ``public``, of wrappers of the same names in
    ``public``: the names then resolve from an app's default ``search_path``."""
    channel = wakeup_channel(schema)
    statements = [
        f"""
CREATE OR REPLACE FUNCTION {schema}.liveboard_emit(room text, type text, data jsonb)
RETURNS bigint
LANGUAGE plpgsql
VOLATILE
AS $liveboard$
#variable_conflict use_column
DECLARE
    appended bigint;
    room_epoch text;
BEGIN
    IF liveboard_emit.room IS NULL OR length(liveboard_emit.room) > 138
            OR liveboard_emit.room !~ '{ROOM_PATTERN}' THEN
        RAISE EXCEPTION 'liveboard_emit: room must be project:{{id}} or workspace:{{id}}, the id '
            'being 1 to 128 letters, digits, ''_'' or ''-'', got %',
            coalesce(quote_literal(left(liveboard_emit.room, 160)), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF liveboard_emit.type IS NULL OR length(liveboard_emit.type) > {MAX_TYPE_LENGTH}
            OR liveboard_emit.type !~ '{TYPE_PATTERN}' THEN
        RAISE EXCEPTION 'liveboard_emit: type must be namespace:name (each part a lowercase '
            'letter followed by lowercase letters, digits, ''_'', ''.'' or ''-''), at most '
            '{MAX_TYPE_LENGTH} characters, got %',
            coalesce(quote_literal(left(liveboard_emit.type, 100)), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF liveboard_emit.type IN ({_sql_list(RESERVED_TYPES)}) THEN
        RAISE EXCEPTION 'liveboard_emit: type % is a message type of the server itself',
            liveboard_emit.type
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF liveboard_emit.data IS NULL OR jsonb_typeof(liveboard_emit.data) <> 'object' THEN
        RAISE EXCEPTION 'liveboard_emit: data must be a JSON object, got %',
            coalesce(jsonb_typeof(liveboard_emit.data), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(liveboard_emit.data::text) > {MAX_DATA_BYTES} THEN
        RAISE EXCEPTION 'liveboard_emit: data must be at most {MAX_DATA_BYTES} bytes of JSON'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The room's head row: its lock serialises the room's writers (store/eventlog.py).
    UPDATE {schema}.rooms AS head
        SET last_offset = head.last_offset + 1
        WHERE head.room = liveboard_emit.room
        RETURNING head.last_offset, head.epoch INTO appended, room_epoch;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'liveboard_emit: no room %', quote_literal(liveboard_emit.room)
            USING ERRCODE = 'no_data_found',
                  HINT = 'A room exists once its workspace or project is created.';
    END IF;
    INSERT INTO {schema}.events (room, "offset", epoch, type, ts, user_id, origin, data)
        VALUES (liveboard_emit.room, appended, room_epoch, liveboard_emit.type,
                floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint, '', NULL,
                liveboard_emit.data::text);
    -- Sent at commit, and only then: the instances read the room's log at once.
    PERFORM pg_notify('{channel}', liveboard_emit.room || ' ' || appended);
    RETURN appended;
END
$liveboard$""",
        f"""
CREATE OR REPLACE FUNCTION {schema}.liveboard_position(room text)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
AS $liveboard$
#variable_conflict use_column
DECLARE
    found_position jsonb;
BEGIN
    SELECT jsonb_build_object('offset', head.last_offset, 'epoch', head.epoch)
        INTO found_position
        FROM {schema}.rooms AS head
        WHERE head.room = liveboard_position.room;
    IF found_position IS NULL THEN
        RAISE EXCEPTION 'liveboard_position: no room %',
            coalesce(quote_literal(left(liveboard_position.room, 160)), 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'A room exists once its workspace or project is created.';
    END IF;
    RETURN found_position;
END
$liveboard$""",
    ]
    if schema != "public":
        statements += [
            f"""
CREATE OR REPLACE FUNCTION public.liveboard_emit(room text, type text, data jsonb)
RETURNS bigint LANGUAGE sql VOLATILE
AS $liveboard$ SELECT {schema}.liveboard_emit(room, type, data) $liveboard$""",
            f"""
CREATE OR REPLACE FUNCTION public.liveboard_position(room text)
RETURNS jsonb LANGUAGE sql STABLE
AS $liveboard$ SELECT {schema}.liveboard_position(room) $liveboard$""",
        ]
    return statements
