"""A cluster for tests: two or three ``liveboard serve`` processes on one database and one Redis.

The instances share a PostgreSQL database (a fresh one per test module: the ``cluster_database``
fixture) and a private ``redis-server`` (a fresh one per test: ``redis_server``). The ``cluster``
fixture gives an empty ``Cluster``; ``await cluster.start(n)`` starts ``n`` instances in parallel
and waits until every ``/readyz`` says the Redis broker is up. The fixtures are registered for
every integration module in ``tests/integration/conftest.py``; the instances' logs are printed
at teardown (pytest shows them when the test failed).

Watching connections: ``tests.support.watcher``; setting up rooms across the instances:
``tests.support.cluster_setup``; a burst of mutations: ``tests.support.writers``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import aiohttp
import pytest

from tests.support.board import Board
from tests.support.contract import Json
from tests.support.postgres import fresh_postgres_database
from tests.support.probes import parse_metrics
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.redis_server import RedisServer
from tests.support.servers import LiveboardProcess
from tests.support.timing import timeout


@pytest.fixture(scope="module", name="cluster_database")
def cluster_database_fixture(postgres_server_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test module (next to the session's), then dropped."""
    with fresh_postgres_database(postgres_server_url, prefix="liveboard_cluster") as url:
        yield url


class Cluster:
    """Instances on one database and one Redis; ``boards[i]`` is the REST/WS harness of ``i``."""

    def __init__(
        self,
        database_url: str,
        redis: RedisServer | RedisClusterNodes | None,
        directory: Path,
        broker: str = "redis",
    ) -> None:
        """``broker="postgres"``: the instances use PostgreSQL's broker and no Redis at all."""
        self.database_url = database_url
        self._redis = redis
        self.broker = broker
        self.directory = directory
        self.servers: list[LiveboardProcess] = []
        self.boards: list[Board] = []
        self.tag = secrets.token_hex(3)
        self.http = aiohttp.ClientSession()

    async def start(self, count: int, env: Mapping[str, str] | None = None) -> list[Board]:
        """Start ``count`` instances in parallel; return their boards once all are ready."""
        new = [
            LiveboardProcess(
                database_url=self.database_url,
                log_path=self.directory / f"instance-{len(self.servers) + i + 1}.log",
                env={**self._broker_env(), **(env or {})},
            )
            for i in range(count)
        ]
        self.servers.extend(new)
        began = time.monotonic()
        await asyncio.gather(*(asyncio.to_thread(server.start, 30.0) for server in new))
        boards = [Board(server) for server in new]
        for board in boards:
            board.tag = self.tag  # one set of user ids for the whole cluster
        self.boards.extend(boards)
        await self.wait_ready(boards, degraded=False, wait=10.0)
        print(f"{count} instances ready in {time.monotonic() - began:.2f}s")
        return boards

    @property
    def redis(self) -> RedisServer | RedisClusterNodes:
        assert self._redis is not None, "this cluster runs without Redis"
        return self._redis

    def _broker_env(self) -> dict[str, str]:
        if self.broker == "postgres":
            return {"LIVEBOARD_BROKER": "postgres"}
        return {"LIVEBOARD_REDIS_URL": self.redis.url}

    def user(self, name: str) -> str:
        """A user id unique to this test."""
        return f"{name}-{self.tag}"

    async def readyz(self, board: Board) -> Json:
        async with self.http.get(board.url + "/readyz") as response:
            assert response.status == 200, await response.text()
            body: Json = await response.json()
            return body

    async def wait_ready(self, boards: list[Board], *, degraded: bool, wait: float = 10.0) -> float:
        """Wait until every board's ``/readyz`` says ``degraded``; return the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout(wait)
        while True:
            bodies = [await self.readyz(board) for board in boards]
            if all(b["degraded"] is degraded for b in bodies):
                for body in bodies:
                    assert body == {
                        "status": "ready",
                        "broker": self.broker,
                        "degraded": degraded,
                    }
                return time.monotonic() - started
            if time.monotonic() > deadline:
                raise AssertionError(f"/readyz never said degraded={degraded} in {wait}s: {bodies}")
            await asyncio.sleep(0.05)

    async def metrics(self, board: Board) -> dict[str, float]:
        async with self.http.get(board.url + "/metrics") as response:
            assert response.status == 200
            return dict(parse_metrics(await response.text()))

    def logs(self) -> str:
        return "\n".join(
            f"----- {server.log_path.name} (port {server.port}) -----\n{server.log()}"
            for server in self.servers
        )

    async def aclose(self) -> None:
        for board in self.boards:
            await board.aclose()
        await self.http.close()
        for server in self.servers:
            server.kill()


@pytest.fixture(name="cluster")
async def cluster_fixture(
    cluster_database: str, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[Cluster]:
    """An empty cluster on the module's database and the test's Redis: ``await cluster.start(n)``.

    The instances' logs are printed at teardown (pytest shows them when the test failed).
    """
    c = Cluster(cluster_database, redis_server, tmp_path)
    try:
        yield c
    finally:
        await c.aclose()
        print(c.logs())
