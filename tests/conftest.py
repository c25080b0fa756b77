"""Shared fixtures: real databases (SQLite files and PostgreSQL), real servers on free ports.

PostgreSQL: tests marked ``postgres`` (or parametrised over the ``database_url`` fixture) use the
server at ``LIVEBOARD_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``)
and create a fresh database for the test run, dropped at the end. When no server answers they are
skipped with a one-line reason, unless ``LIVEBOARD_REQUIRE_POSTGRES=1`` (set by CI), which turns
that into a failure.

Timeouts in tests scale with ``LIVEBOARD_TEST_TIMEOUT_FACTOR`` (default 1) for slow machines.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from liveboard.app import build_app
from liveboard.config import Settings
from tests.servers import server_factory
from tests.support import (
    POSTGRES_ADMIN_URL,
    REQUIRE_POSTGRES,
    TEST_SECRET,
    TIMEOUT_FACTOR,
    auth,
    make_token,
    timeout,
)

__all__ = [
    "TEST_SECRET",
    "TIMEOUT_FACTOR",
    "auth",
    "make_token",
    "server_factory",
    "timeout",
]


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run (dropped at the end)."""
    import asyncio

    name = f"liveboard_test_{secrets.token_hex(4)}"
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL not available at {POSTGRES_ADMIN_URL}: {exc}"
        if REQUIRE_POSTGRES:
            pytest.fail(message)
        pytest.skip(message)
    yield f"{base}/{name}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that uses this runs once on a new SQLite file and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'liveboard.db'}"
    url: str = request.getfixturevalue("postgres_server_url")
    return url


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "jwt_secret": TEST_SECRET,
        "host": "127.0.0.1",
        "port": 0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


AppClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def app_client_factory() -> AsyncIterator[AppClientFactory]:
    """Start the real app on a free port (in this process) with the given settings."""
    clients: list[TestClient[Any, Any]] = []

    async def start(settings: Settings, **kwargs: Any) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(build_app(settings, **kwargs)))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def client(settings: Settings, app_client_factory: AppClientFactory) -> TestClient[Any, Any]:
    return await app_client_factory(settings)
