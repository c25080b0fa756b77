"""Schema migrations, applied in order by ``liveboard serve`` and ``liveboard migrate``.

Each migration is a numbered function run in one write transaction together with the row that
records it, so a migration is applied completely or not at all, and applying twice is a no-op.
Several instances starting at once are safe: PostgreSQL serialises them on an advisory lock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import inspect, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard.errors import StartupError
from liveboard.store import schema
from liveboard.store.availability import reason, wait_for_database
from liveboard.store.database import Database

Migration = Callable[[AsyncConnection], Awaitable[None]]

_ADVISORY_LOCK_KEY = 0x11FEB0A4D


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

    def missing(sync: Any) -> list[str]:
        present = {c["name"] for c in inspect(sync).get_columns(schema.tasks.name)}
        return [c for c in schema.MERGE_COLUMNS if c not in present]

    for column in await conn.run_sync(missing):
        await conn.execute(text(f"ALTER TABLE tasks ADD COLUMN {column} INTEGER"))


async def _open_log(conn: AsyncConnection) -> None:
    """Events from other backends (CONTRACT §6.3): event types up to 64 characters, and the
    idempotency keys of services.

    On PostgreSQL ``events.type`` grows from ``varchar(32)`` to ``varchar(64)``, a change of
    the column's declared length only (no row is rewritten since PostgreSQL 9.2). SQLite
    does not enforce a ``VARCHAR`` length: nothing to change there."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("ALTER TABLE events ALTER COLUMN type TYPE VARCHAR(64)"))
    tables = [schema.service_idempotency_keys]
    await conn.run_sync(lambda sync: schema.metadata.create_all(sync, tables=tables))


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "initial schema", _initial_schema),
    (2, "task field versions", _task_field_versions),
    (3, "idempotency keys", _idempotency_keys),
    (4, "open log: longer event types, service idempotency keys", _open_log),
]


async def migrate(db: Database) -> list[int]:
    """Apply every pending migration; return the versions applied now (empty when up to date)."""
    applied_now: list[int] = []
    async with db.write() as conn:
        if not db.is_sqlite:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK_KEY})
        has_table = await conn.run_sync(
            lambda sync: inspect(sync).has_table(schema.schema_migrations.name)
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
