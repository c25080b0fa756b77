"""The PostgreSQL pool hands out live connections only (store/database.py).

When the server closes pooled connections (a restart, ``pg_terminate_backend``, an idle
timeout), the next requests must be served on new connections, not fail with 500; when a
middlebox drops an idle connection silently, the ping must notice within its timeout. liveboard
checks each connection on checkout instead of SQLAlchemy's ``pool_pre_ping`` (three round
trips per checkout), so these are the tests that the cheaper check still does the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]  # (no type information shipped)
import pytest
from aiohttp.test_utils import TestClient

from liveboard.store import database
from liveboard.store.database import Database
from tests.support.app import AppClientFactory, make_settings
from tests.support.postgres import POSTGRES_ADMIN_URL, fresh_postgres_database
from tests.support.timing import TIMEOUT_FACTOR
from tests.support.tokens import auth

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


class SilentProxy:
    """A TCP proxy to PostgreSQL that can go silent for the connections it already carries:
    bytes are swallowed and nothing is closed, as a middlebox that dropped its state does."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.carried: list[dict[str, bool]] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def silence_existing(self) -> None:
        for state in self.carried:
            state["silent"] = True

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        state = {"silent": False}
        self.carried.append(state)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink, state))
            self._tasks.add(task)

    @staticmethod
    async def _pipe(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, state: dict[str, bool]
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                if not state["silent"]:
                    sink.write(data)
                    await sink.drain()
        sink.close()  # one side closed: close the other (a silent connection never gets here)


async def test_a_silently_dropped_idle_connection_is_pinged_and_replaced(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = urlsplit(postgres_url)
    proxy = SilentProxy(upstream.port or 5432)
    await proxy.start()
    db = Database(
        postgres_url.replace(upstream.netloc, f"{upstream.username}@127.0.0.1:{proxy.port}")
    )
    try:
        async with db.read() as conn:
            assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1
        # The pooled connection's packets now vanish: asyncpg cannot tell, only a ping can.
        proxy.silence_existing()
        monkeypatch.setattr(database, "IDLE_PING_SECONDS", 0.0)
        monkeypatch.setattr(database, "PING_TIMEOUT_SECONDS", 0.5)
        started = time.monotonic()
        async with asyncio.timeout(10 * TIMEOUT_FACTOR), db.read() as conn:
            assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1
        # 0.5 s of ping, then up to 2 s of SQLAlchemy trying to close the dead one gracefully.
        assert time.monotonic() - started < 5 * TIMEOUT_FACTOR
        # Served on a new connection (asyncpg also opens one to cancel the timed-out ping).
        assert len(proxy.carried) >= 2
    finally:
        await db.aclose()
        await proxy.close()
