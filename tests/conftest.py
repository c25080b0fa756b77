"""Shared fixtures: real databases (SQLite files and PostgreSQL), real servers on free ports.

PostgreSQL: tests marked ``postgres`` (or parametrised over the ``database_url`` fixture) use the
server at ``LIVEBOARD_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``)
and create a fresh database for the test run (one per pytest-xdist worker under ``make test``),
dropped at the end (``module_postgres_url``: one for a module). When no server answers they are
skipped with a one-line reason, unless ``LIVEBOARD_REQUIRE_POSTGRES=1`` (set by CI), which turns
that into a failure.

The helpers these fixtures are built from, and those the test modules import, are in
``tests/support/``.

Timeouts in tests scale with ``LIVEBOARD_TEST_TIMEOUT_FACTOR`` (default 1) for slow machines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # (no type information shipped)
import hypothesis
import pytest
from aiohttp.test_utils import TestClient, TestServer

from liveboard.app import build_app
from liveboard.config import Settings
from tests.support.app import AppClientFactory, make_settings
from tests.support.postgres import (
    DATABASE_PARAMS,
    POSTGRES_ADMIN_URL,
    REQUIRE_POSTGRES,
    create_database,
    drop_database,
    fresh_postgres_database,
)
from tests.support.servers import server_factory


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "soak: a variant `make test` leaves out for its time, collected only with "
        "LIVEBOARD_BROKERS_FULL=1 (`make soak-brokers`, which selects these with -m soak)",
    )


__all__ = ["server_factory"]

# Hypothesis's per-example deadline (200 ms) measures the machine, not the code: on a shared
# 2-core CI runner one slow example failed a property that holds. Properties keep their
# examples; only the wall-clock limit goes.
hypothesis.settings.register_profile("liveboard", deadline=None)
hypothesis.settings.load_profile("liveboard")


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run (dropped at the end)."""
    try:
        url = create_database(POSTGRES_ADMIN_URL)
    except (OSError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL not available at {POSTGRES_ADMIN_URL}: {exc}"
        if REQUIRE_POSTGRES:
            pytest.fail(message)
        pytest.skip(message)
    yield url
    drop_database(url)


@pytest.fixture(scope="module")
def module_postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A PostgreSQL database of the module's own, next to the session's (dropped at the end);
    see ``tests.support.postgres.module_database_url_fixture``."""
    with fresh_postgres_database(postgres_server_url) as url:
        yield url


@pytest.fixture(params=DATABASE_PARAMS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that uses this runs once on a new SQLite file and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'liveboard.db'}"
    url: str = request.getfixturevalue("postgres_server_url")
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


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
