"""Fixtures shared by the integration modules.

``server`` is one real liveboard process per module (its own SQLite file), ``board`` the
per-test helpers bound to it. A module that needs other settings defines its own ``server``
(``board`` then uses it); modules with fixtures of the same names for other purposes (the
REST and CLI modules) keep theirs, which take precedence.

``redis_server`` is a private ``redis-server`` per test, ``redis_cluster`` a private Redis
Cluster (3 masters + 3 replicas) per session; ``cluster`` (on ``cluster_database``,
one PostgreSQL database per module) starts several instances on it (``tests.support.cluster``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.board import Board
from tests.support.cluster import cluster_database_fixture, cluster_fixture
from tests.support.redis_cluster import redis_cluster
from tests.support.redis_server import redis_server
from tests.support.servers import LiveboardProcess, start_server

__all__ = ["cluster_database_fixture", "cluster_fixture", "redis_cluster", "redis_server"]


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveboardProcess]:
    process = start_server(tmp_path_factory, request.module.__name__.rsplit(".", 1)[-1])
    yield process
    process.kill()


@pytest.fixture
async def board(server: LiveboardProcess) -> AsyncIterator[Board]:
    async with Board(server) as b:
        yield b
