"""PostgreSQL for tests: where the server is, and databases created for a run, a module or a test.

The server is ``LIVEBOARD_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``); ``REQUIRE_POSTGRES``
(``LIVEBOARD_REQUIRE_POSTGRES=1``, set by CI) turns "no server" from a skip into a failure.
``fresh_postgres_database`` makes a new, empty database next to a given one and drops it
(``WITH (FORCE)``) on exit.

``module_database_url_fixture`` is the ``database_url`` fixture for a module whose PostgreSQL
tests use a database of their own (the session's ``module_postgres_url``), so the users and
workspaces they create do not show up in other modules' tests that share the session database,
and the other way round. A module opts in by importing it::

    from tests.support.postgres import module_database_url_fixture  # noqa: F401
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]  # (no type information shipped)
import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "LIVEBOARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_POSTGRES = os.environ.get("LIVEBOARD_REQUIRE_POSTGRES") == "1"

#: The ``database_url`` parameters: a new SQLite file, and PostgreSQL (marked ``postgres``).
DATABASE_PARAMS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


async def admin(sql: str) -> None:
    """Run one statement on the server's admin database (``POSTGRES_ADMIN_URL``)."""
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(server_url: str, prefix: str = "liveboard_test") -> str:
    """A new, empty database ``<prefix>_<random>`` next to ``server_url``'s; returns its URL.

    Raises ``OSError`` or ``asyncpg.PostgresError`` when the server does not answer."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    return f"{server_url.rsplit('/', 1)[0]}/{name}"


def drop_database(url: str) -> None:
    """Drop the database of ``url``, closing its connections (``WITH (FORCE)``)."""
    name = url.rsplit("/", 1)[1]
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def fresh_postgres_database(server_url: str, prefix: str = "liveboard_test") -> Iterator[str]:
    """A new, empty database next to ``server_url``'s; dropped on exit."""
    url = create_database(server_url, prefix)
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture(params=DATABASE_PARAMS, name="database_url")
def module_database_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """``database_url`` for a module with a PostgreSQL database of its own: a new SQLite file,
    or the module's database (the ``module_postgres_url`` fixture)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'liveboard.db'}"
    url: str = request.getfixturevalue("module_postgres_url")
    return url
