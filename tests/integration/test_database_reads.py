"""``Database.read`` and ``Database.read_one`` on a real database.

``read_one`` serves the single-statement reads of the real-time layer (a subscribe without
``since``, gap fills, the audit): on PostgreSQL it must run its statement outside a
transaction, without the BEGIN and ROLLBACK round trips ``read`` pays for its snapshot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard.store.database import Database


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    yield db
    await db.aclose()


async def test_read_one_and_read_return_what_is_there(database: Database) -> None:
    for reading in (database.read_one, database.read):
        async with reading() as conn:
            assert (await conn.execute(text("SELECT 41 + 1"))).scalar_one() == 42


async def _in_transaction(conn: AsyncConnection) -> bool:
    """Whether the server reports this connection inside a transaction block right now."""
    await conn.execute(text("SELECT 1"))
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    return bool(driver.is_in_transaction())


@pytest.mark.postgres
async def test_read_one_runs_its_statement_without_a_transaction(postgres_server_url: str) -> None:
    database = Database(postgres_server_url)
    try:
        async with database.read() as conn:  # the check itself: read's BEGIN is seen
            assert await _in_transaction(conn)
        async with database.read_one() as conn:
            assert not await _in_transaction(conn)
        # The pooled connection it used goes back to serving snapshots.
        async with database.read() as conn:
            assert await _in_transaction(conn)
            level = (await conn.execute(text("SHOW transaction_isolation"))).scalar_one()
            assert level == "repeatable read"
    finally:
        await database.aclose()
