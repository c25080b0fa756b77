"""``Database.driver`` keeps a cleanly used connection checked out for the next call
(store/database.py), within the pool's guarantees: the limit holds, a waiting caller is never
kept from a connection, a dead or long-idle one is not handed out, and ``aclose`` returns them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg  # type: ignore[import-untyped]
import pytest

from liveboard.store import database
from liveboard.store.database import Database
from tests.support.postgres import fresh_postgres_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    with fresh_postgres_database(postgres_server_url) as url:
        yield url


@pytest.fixture
async def db(postgres_url: str) -> AsyncIterator[Database]:
    db = Database(postgres_url, pool_size=1, max_overflow=1)
    try:
        yield db
    finally:
        await db.aclose()


def checked_out(db: Database) -> int:
    return int(db.engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]


async def test_a_clean_use_keeps_the_connection_for_the_next(db: Database) -> None:
    async with db.driver() as first:
        assert db.in_use == 1
        assert await first.fetchval("SELECT 1") == 1
    assert (db.in_use, checked_out(db)) == (0, 1)  # kept: not in use, still checked out
    async with db.driver() as second:
        assert second is first
    async with db.driver_write() as conn:  # a transaction, committed: kept as well
        assert conn is first
        await conn.execute("SELECT 1")
    assert checked_out(db) == 1


async def test_a_failed_use_or_an_open_transaction_gives_the_connection_back(
    db: Database,
) -> None:
    with pytest.raises(asyncpg.PostgresError):
        async with db.driver() as conn:
            await conn.execute("SELECT * FROM no_such_table")
    assert checked_out(db) == 0
    async with db.driver() as conn:
        await conn.execute("BEGIN")
    assert checked_out(db) == 0  # left in a transaction: not kept
    await conn.execute("ROLLBACK")


async def test_at_most_driver_spares_are_kept_and_the_limit_holds(postgres_url: str) -> None:
    db = Database(postgres_url, pool_size=3, max_overflow=0)
    try:
        async with db.driver() as a, db.driver() as b, db.driver() as c:
            assert len({id(a), id(b), id(c)}) == 3
        assert checked_out(db) == database.DRIVER_SPARES
        # Every connection the pool may open, driver's and SQLAlchemy's together.
        async with db.driver(), db.driver(), db.read_one() as conn:
            assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1
            assert checked_out(db) == 3
    finally:
        await db.aclose()
    assert checked_out(db) == 0


async def test_a_caller_of_the_pool_gets_a_kept_connection_when_the_pool_is_full(
    db: Database,
) -> None:
    async with db.driver(), db.driver():
        pass
    assert checked_out(db) == 2  # both kept: the pool (1 + 1 overflow) is exhausted
    async with asyncio.timeout(5), db.read_one() as conn:  # not the pool's 30 s wait
        assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1


async def test_a_connection_is_not_kept_while_someone_waits_for_one(db: Database) -> None:
    async with db.driver(), db.driver():
        waiter = asyncio.ensure_future(db.driver().__aenter__())
        await asyncio.sleep(0.1)
        assert db.waiting == 1
    conn = await asyncio.wait_for(waiter, 5)  # handed the connection given back
    assert await conn.fetchval("SELECT 2") == 2


async def test_a_closed_or_long_idle_kept_connection_is_not_handed_out(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with db.driver() as first:
        pid = first.get_server_pid()
    await first.close()  # as if the server had closed it
    async with db.driver() as second:
        assert second is not first
        assert await second.fetchval("SELECT 1") == 1
    monkeypatch.setattr(database, "IDLE_PING_SECONDS", -1.0)  # every kept one is too old
    async with db.driver() as third:
        # Back to the pool and out again: the pool's checkout (which pings an idle one)
        # may hand out the same connection, but never the closed one.
        assert not third.is_closed()
        assert third.get_server_pid() != pid
