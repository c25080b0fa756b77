"""The PostgreSQL pool hands out live connections only (store/database.py).

When the server closes pooled connections (a restart, ``pg_terminate_backend``, an idle
timeout), the next requests must be served on new connections, not fail with 500. liveboard
checks each connection on checkout instead of SQLAlchemy's ``pool_pre_ping`` (three round
trips per checkout), so this is the test that the cheaper check still does the job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from liveboard.store import database
from liveboard.store.database import Database
from tests.conftest import AppClientFactory, auth, make_settings
from tests.integration.test_rest_support import fresh_postgres_database
from tests.support import POSTGRES_ADMIN_URL

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    with fresh_postgres_database(postgres_server_url) as url:
        yield url


async def terminate_connections_to(url: str) -> int:
    """Close every server-side connection to ``url``'s database, as a restart would."""
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        killed: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            url.rsplit("/", 1)[1],
        )
    finally:
        await admin.close()
    return killed


async def get(client: TestClient[Any, Any], path: str) -> int:
    async with client.get(path, headers=auth("alice")) as response:
        await response.read()
        return response.status


async def test_requests_after_the_server_closed_every_pooled_connection_succeed(
    postgres_url: str, app_client_factory: AppClientFactory
) -> None:
    client = await app_client_factory(make_settings(postgres_url))
    async with client.post(
        "/api/workspaces", json={"name": "Pool"}, headers=auth("alice")
    ) as response:
        assert response.status == 201
    # Several requests at once, so the pool holds more than one connection.
    statuses = await asyncio.gather(*(get(client, "/api/workspaces") for _ in range(5)))
    assert statuses == [200] * 5

    assert await terminate_connections_to(postgres_url) >= 1
    await asyncio.sleep(0.2)  # the server's goodbye reaches the idle connections

    statuses = await asyncio.gather(*(get(client, "/api/workspaces") for _ in range(5)))
    assert statuses == [200] * 5


async def test_a_connection_idle_past_the_ping_threshold_is_pinged_and_replaced_if_dead(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = Database(postgres_url)
    try:
        async with db.read() as conn:
            assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1
            raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        # A connection dropped without the client noticing (a middlebox), so only a ping can
        # tell: its transport is torn down while asyncpg is made to report it open.
        raw._transport.abort()
        monkeypatch.setattr(asyncpg.connection.Connection, "is_closed", lambda _self: False)
        monkeypatch.setattr(database, "IDLE_PING_SECONDS", 0.0)
        async with db.read() as conn:
            assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1
            replacement = (await conn.get_raw_connection()).driver_connection
        assert replacement is not raw
    finally:
        await db.aclose()
