"""Schema migrations, applied in order by ``liveboard serve`` and ``liveboard migrate``.

Each migration is a numbered function run in one write transaction together with the row that
records it, so a migration is applied completely or not at all, and applying twice is a no-op.
Several instances starting at once are safe: PostgreSQL serialises them on an advisory lock.

On PostgreSQL everything lives in liveboard's schema (``Database.schema``; created if missing).
An installation made before migration 4 has its tables in ``public``: migration 4 moves them,
and runs first, before any other pending one, since every other migration works in the schema
(moving a table moves its indexes and constraints along and rewrites nothing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import inspect, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard.errors import StartupError
from liveboard.store import open_log_sql, schema
from liveboard.store.availability import reason, wait_for_database
from liveboard.store.columns import ranks_backfill
from liveboard.store.database import Database

Migration = Callable[[AsyncConnection], Awaitable[None]]

_ADVISORY_LOCK_KEY = 0x11FEB0A4D


def _schema_of(conn: AsyncConnection) -> str | None:
    """liveboard's PostgreSQL schema on this connection (``Database``'s translate map), or None
    on SQLite."""
    options = conn.sync_connection.get_execution_options() if conn.sync_connection else {}
    translated: str | None = options.get("schema_translate_map", {}).get(None)
    return translated


def _table(conn: AsyncConnection, name: str) -> str:
    target = _schema_of(conn)
    return name if target is None else f"{target}.{name}"


#: Tables a later migration creates: the initial schema is everything else.
_LATER_TABLES = frozenset(
    {schema.schema_migrations, schema.idempotency_keys, schema.service_idempotency_keys}
)


async def _initial_schema(conn: AsyncConnection) -> None:
    tables = [t for t in schema.metadata.sorted_tables if t not in _LATER_TABLES]
    await conn.run_sync(lambda sync: schema.metadata.create_all(sync, tables=tables))


async def _idempotency_keys(conn: AsyncConnection) -> None:
    tables = [schema.idempotency_keys]
    await conn.run_sync(lambda sync: schema.metadata.create_all(sync, tables=tables))


async def _task_field_versions(conn: AsyncConnection) -> None:
    """``tasks.title_version``, ``description_version``, ``assignee_version``, ``fields_at``.

    Nullable, without a default, and left NULL on existing rows: when their fields last changed
    is not known, and a NULL ``fields_at`` makes any edit of them from a stale version a
    conflict, as before, until their next change records it. Adding such a column rewrites no
    row (SQLite, and PostgreSQL since 11), and a release without them runs on beside it. A
    database created by migration 1 from today's schema already has them: only missing ones
    are added."""

    target = _schema_of(conn)

    def missing(sync: Any) -> list[str]:
        columns = inspect(sync).get_columns(schema.tasks.name, schema=target)
        present = {c["name"] for c in columns}
        return [c for c in schema.MERGE_COLUMNS if c not in present]

    tasks = _table(conn, "tasks")
    for column in await conn.run_sync(missing):
        await conn.execute(text(f"ALTER TABLE {tasks} ADD COLUMN {column} INTEGER"))


async def _legacy_layout(conn: AsyncConnection) -> bool:
    """Whether liveboard's tables are still in ``public`` (made before migration 4), and not
    yet in its schema. Recognised by the columns of liveboard's own ``schema_migrations`` and
    ``rooms``, so an app's table of the same name (Rails has a ``schema_migrations``) is never
    taken for liveboard's."""
    target = _schema_of(conn)
    if target is None or target == "public":
        return False

    def check(sync: Any) -> bool:
        inspector = inspect(sync)
        if inspector.has_table(schema.schema_migrations.name, schema=target):
            return False
        for table in (schema.schema_migrations, schema.rooms):
            if not inspector.has_table(table.name, schema="public"):
                return False
            present = {c["name"] for c in inspector.get_columns(table.name, schema="public")}
            if not set(table.c.keys()) <= present:
                return False
        return True

    return bool(await conn.run_sync(check))


async def _own_schema(conn: AsyncConnection) -> None:
    """Move liveboard's tables from ``public`` into its schema (PostgreSQL, an installation
    made before this migration; a no-op otherwise). ``ALTER TABLE … SET SCHEMA`` rewrites no
    row and takes the table's indexes and constraints along."""
    if not await _legacy_layout(conn):
        return
    target = _schema_of(conn)
    # Only the tables its recorded migrations made: a table of the app's that happens to bear
    # the name of one a later migration would have made stays where it is.
    versions = set(
        (await conn.execute(text("SELECT version FROM public.schema_migrations"))).scalars()
    )
    moving = [schema.schema_migrations]
    if 1 in versions:
        moving += [t for t in schema.metadata.sorted_tables if t not in _LATER_TABLES]
    if 3 in versions:
        moving.append(schema.idempotency_keys)
    for table in moving:
        await conn.execute(text(f"ALTER TABLE public.{table.name} SET SCHEMA {target}"))


async def _emit_functions(conn: AsyncConnection) -> None:
    """``liveboard_emit`` and ``liveboard_position`` (CONTRACT §6.3, ``store.open_log_sql``) on
    PostgreSQL, where ``events.type`` takes the 64 characters of a custom type (a longer
    varchar rewrites no row; SQLite enforces no length). Nothing else on SQLite: there the
    Python ``liveboard.emit`` writes the log itself."""
    target = _schema_of(conn)
    if target is None:
        return
    await conn.execute(text(f"ALTER TABLE {target}.events ALTER COLUMN type TYPE VARCHAR(64)"))
    for statement in open_log_sql.function_statements(target):
        await conn.execute(text(statement))


async def _task_ranks(conn: AsyncConnection) -> None:
    """``tasks.sort_rank`` and its index, every column's tasks ranked in the order they were
    listed in before (``order``, then ``created_at``, then ``id``).

    The column stays nullable on SQLite (which cannot add NOT NULL to a table with rows); on
    PostgreSQL it is NOT NULL once filled. Every writer of this release sets it, so a release
    without it must not write beside this one (its new tasks would have no rank)."""

    target = _schema_of(conn)

    def missing(sync: Any) -> bool:
        columns = inspect(sync).get_columns(schema.tasks.name, schema=target)
        return "sort_rank" not in {c["name"] for c in columns}

    tasks = _table(conn, "tasks")
    postgres = conn.dialect.name == "postgresql"
    if await conn.run_sync(missing):
        collate = ' COLLATE "C"' if postgres else ""
        await conn.execute(text(f"ALTER TABLE {tasks} ADD COLUMN sort_rank VARCHAR(64){collate}"))
    await ranks_backfill(conn)
    if postgres:
        await conn.execute(text(f"ALTER TABLE {tasks} ALTER COLUMN sort_rank SET NOT NULL"))
    await conn.execute(
        text(
            "CREATE INDEX IF NOT EXISTS ix_tasks_project_status_rank "
            f"ON {tasks} (project_id, status, sort_rank)"
        )
    )


async def _service_idempotency_keys(conn: AsyncConnection) -> None:
    """The idempotency keys of services (API keys, CONTRACT §6.3), a table of their own."""
    tables = [schema.service_idempotency_keys]
    await conn.run_sync(lambda sync: schema.metadata.create_all(sync, tables=tables))


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "initial schema", _initial_schema),
    (2, "task field versions", _task_field_versions),
    (3, "idempotency keys", _idempotency_keys),
    (4, "own schema", _own_schema),
    (5, "liveboard_emit and liveboard_position", _emit_functions),
    (6, "service idempotency keys", _service_idempotency_keys),
    (7, "task ranks", _task_ranks),
]


async def migrate(db: Database) -> list[int]:
    """Apply every pending migration; return the versions applied now (empty when up to date)."""
    applied_now: list[int] = []
    async with db.write() as conn:
        if db.schema is not None:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK_KEY})
            await conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {db.schema}"))
            await _own_schema(conn)  # first: every other migration works in the schema
        has_table = await conn.run_sync(
            lambda sync: inspect(sync).has_table(schema.schema_migrations.name, schema=db.schema)
        )
        if not has_table:
            await conn.run_sync(
                lambda sync: schema.metadata.create_all(sync, tables=[schema.schema_migrations])
            )
        done = set((await conn.execute(select(schema.schema_migrations.c.version))).scalars())
        for version, name, apply in MIGRATIONS:
            if version in done:
                continue
            await apply(conn)
            await conn.execute(
                schema.schema_migrations.insert().values(
                    version=version,
                    name=name,
                    applied_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
                )
            )
            applied_now.append(version)
    return applied_now


async def prepare_database(db: Database, wait: float) -> list[int]:
    """At start: wait up to ``wait`` seconds for the database (``wait_for_database``), then
    ``migrate``. Any failure is a ``StartupError`` whose message is one line."""
    await wait_for_database(db, wait)
    try:
        return await migrate(db)
    except Exception as error:
        raise StartupError(f"database migrations failed: {reason(error)}") from None
