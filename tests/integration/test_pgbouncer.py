"""liveboard through a real PgBouncer in transaction pooling mode (``LIVEBOARD_DB_PGBOUNCER=1``).

In transaction mode PgBouncer hands each transaction of a client connection whichever server
connection is free, so a prepared statement left on a server connection by one client meets the
next client there. ``LIVEBOARD_DB_PGBOUNCER=1`` turns asyncpg's and SQLAlchemy's statement caches
off (statements are then prepared unnamed, within the transaction that runs them). The tests run a
``liveboard serve`` with more pooled connections than PgBouncer has server connections, drive task
mutations and WebSocket subscriptions through it, and show that without the mode two connections
sharing one server connection fail.

Needs Debian's ``pgbouncer`` (``.ci/run`` installs it): skipped without it, failed under CI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from liveboard.protocol.rooms import project_room
from liveboard.store.database import Database
from tests.support.board import Board
from tests.support.pgbouncer import PgBouncer
from tests.support.postgres import fresh_postgres_database
from tests.support.servers import LiveboardProcess
from tests.support.system_tools import service_directory

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _pgbouncer(server_pool_size: int) -> Iterator[PgBouncer]:
    with service_directory("liveboard-pgbouncer-") as directory:
        bouncer = PgBouncer(directory, server_pool_size=server_pool_size)
        bouncer.start()
        try:
            yield bouncer
        finally:
            bouncer.stop()


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[PgBouncer]:
    """Two server connections, fewer than the liveboard pool below."""
    yield from _pgbouncer(2)


@pytest.fixture(scope="module")
def database(module_postgres_url: str) -> Iterator[str]:
    with fresh_postgres_database(module_postgres_url) as url:
        yield url


@pytest.fixture(scope="module")
def server(
    pgbouncer: PgBouncer, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveboardProcess]:
    process = LiveboardProcess(
        database_url=pgbouncer.url_for(database),
        log_path=tmp_path_factory.mktemp("pgbouncer") / "server.log",
        env={"LIVEBOARD_DB_PGBOUNCER": "1", "LIVEBOARD_DB_POOL_SIZE": "6"},
    )
    process.start()  # migrations run through PgBouncer too
    yield process
    process.kill()


async def _reuse_a_statement_while_its_server_connection_is_busy(db: Database) -> None:
    """A statement run twice on one connection, the second time while another connection's
    transaction holds the server connection it first ran on (PgBouncer hands out the most
    recently used server connection first), so the second run goes to the other one."""
    async with db.read_one() as first:
        assert (await first.execute(text("SELECT 41 + 1"))).scalar() == 42
        async with db.engine.begin() as second:
            await second.execute(text("SELECT count(*) FROM pg_class"))
            assert (await first.execute(text("SELECT 41 + 1"))).scalar() == 42


async def test_without_the_mode_a_cached_statement_is_lost_on_another_server_connection(
    pgbouncer: PgBouncer, database: str
) -> None:
    """The control: the cached (named) statement does not exist on the other server connection.
    With the mode the same steps work."""
    url = pgbouncer.url_for(database)
    db = Database(url)
    try:
        with pytest.raises(DBAPIError, match=r"prepared statement .* does not exist"):
            await _reuse_a_statement_while_its_server_connection_is_busy(db)
    finally:
        await db.aclose()
    db = Database(url, pgbouncer=True)
    try:
        await _reuse_a_statement_while_its_server_connection_is_busy(db)
    finally:
        await db.aclose()


async def test_mutations_and_subscriptions_through_pgbouncer(
    server: LiveboardProcess, pgbouncer: PgBouncer
) -> None:
    async with Board(server) as board:
        owner, member = board.user("owner"), board.user("member")
        _, pid = await board.board(owner, member)
        room = project_room(pid)
        watchers = [await board.connect(user) for user in (owner, member)]
        for watcher in watchers:
            await watcher.subscribe(room)

        # Concurrent writers: more transactions at once than PgBouncer has server connections.
        created = await asyncio.gather(
            *(board.task(owner if n % 2 else member, pid, f"Task {n}") for n in range(12))
        )
        await asyncio.gather(
            *(board.patch(owner, task["id"], {"title": f"{task['title']}!"}) for task in created)
        )
        await asyncio.gather(*(board.move(member, task["id"], "done") for task in created[:6]))
        await asyncio.gather(*(board.delete(owner, task["id"]) for task in created[6:9]))

        expected = 12 + 12 + 6 + 3
        for watcher in watchers:
            events = await watcher.events(expected, wait=20.0)
            offsets = [event["offset"] for event in events]
            assert offsets == sorted(offsets)
            assert len(set(offsets)) == expected
            kinds = [event["type"] for event in events]
            assert kinds.count("task:created") == 12
            assert kinds.count("task:deleted") == 3

        # A late subscriber catches up from the log (reads through PgBouncer as well).
        late = await board.connect(member)
        since = {"epoch": events[0]["epoch"], "offset": events[0]["offset"] - 1}
        await late.subscribe(room, since=since)
        replayed = await late.events(expected, wait=20.0)
        assert [event["offset"] for event in replayed] == offsets

        snapshot = await board.snapshot(owner, pid)
        tasks = {task["id"]: task for task in snapshot["tasks"]}
        kept = created[:6] + created[9:]
        assert set(tasks) == {task["id"] for task in kept}
        assert {tasks[task["id"]]["title"] for task in kept} == {f"{t['title']}!" for t in kept}
        assert {task["id"] for task in tasks.values() if task["status"] == "done"} == {
            task["id"] for task in created[:6]
        }

    log = server.log()
    assert " ERROR " not in log, log
    assert "Traceback" not in log, log
    assert "prepared statement" not in pgbouncer.log()
