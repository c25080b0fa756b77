"""Migration 7 (task ranks) on a database made before it, on SQLite and PostgreSQL: every column
is ranked in the order it was listed in before (``order``, then ``createdAt``, then ``id``), and
placement works on the ranks it wrote."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from liveboard.auth import Actor
from liveboard.events import RecordingPublisher
from liveboard.store.database import Database
from liveboard.store.migrations import migrate
from liveboard.tasks.placement import Slot
from liveboard.tasks.service import TaskService
from tests.support.postgres import DATABASE_PARAMS, fresh_postgres_database


@pytest.fixture(params=DATABASE_PARAMS, name="own_database_url")
def own_database_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test alone: its schema is taken back to before migration 7."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_server_url")) as url:
        yield url


async def test_migration_4_ranks_existing_columns_in_their_old_order(own_database_url: str) -> None:
    db = Database(own_database_url)
    try:
        await migrate(db)
        service = TaskService(db, RecordingPublisher())
        alice = Actor("alice")
        wid = (await service.create_workspace(alice, "W")).id
        pid = (await service.create_project(alice, wid, "P", None)).id
        made = [await service.create_task(alice, pid, title=f"t{n}") for n in range(6)]
        # Back to the schema before migration 7, with orders as an older release left them:
        # ties included (broken by createdAt, then id), and two columns.
        orders = [(5.0, "todo"), (1.0, "todo"), (5.0, "todo"), (-2.5, "todo"), (3.0, "done")]
        orders.append((1.0, "done"))
        async with db.write() as conn:
            tasks, index = db.table("tasks"), db.table("ix_tasks_project_status_rank")
            await conn.execute(text(f"DROP INDEX {index}"))
            await conn.execute(text(f"ALTER TABLE {tasks} DROP COLUMN sort_rank"))
            migrations = db.table("schema_migrations")
            await conn.execute(text(f"DELETE FROM {migrations} WHERE version = 7"))
            for task, (order, status) in zip(made, orders, strict=True):
                await conn.execute(
                    text(
                        f"UPDATE {tasks} SET sort_order = :o, status = :s, created_at = :c "
                        "WHERE id = :id"
                    ),
                    {"o": order, "s": status, "c": "2026-01-01T00:00:00.000Z", "id": task.id},
                )
        await db.aclose()
        db = Database(own_database_url)  # new connections: no statement cached on the old table
        assert await migrate(db) == [7]
        assert await migrate(db) == []
        service = TaskService(db, RecordingPublisher())

        snapshot = await service.snapshot(alice, pid)
        for status in ("todo", "done"):
            listed = [t for t in snapshot.tasks if t.status == status]
            expected = sorted(listed, key=lambda t: (t.order, t.created_at, t.id))
            assert [t.id for t in listed] == [t.id for t in expected]
            ranks = [t.rank for t in listed]
            assert ranks == sorted(set(ranks))
        # Placement on the migrated ranks: at the end, and after a migrated card.
        end = await service.create_task(alice, pid, title="end")
        todo = [t for t in (await service.snapshot(alice, pid)).tasks if t.status == "todo"]
        assert todo[-1].id == end.id
        second = await service.create_task(alice, pid, title="2nd", slot=Slot(after_id=todo[0].id))
        todo = [t for t in (await service.snapshot(alice, pid)).tasks if t.status == "todo"]
        assert todo[1].id == second.id
    finally:
        await db.aclose()
