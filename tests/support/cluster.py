"""A cluster for tests: two or three ``liveboard serve`` processes on one database and one broker.

The instances share a PostgreSQL database (a fresh one per test module: the ``cluster_database``
fixture) and a broker: by default a private ``redis-server`` (a fresh one per test:
``redis_server``). The ``cluster`` fixture gives an empty ``Cluster``; ``await cluster.start(n)``
starts ``n`` instances in parallel and waits until every ``/readyz`` says the broker is up. A
test parametrised with ``on_brokers("redis", "redis-cluster", "postgres")`` runs on each: the
session's Redis Cluster (3 masters + 3 replicas, ``redis_cluster``; left healthy after each
test) or PostgreSQL's broker (no Redis). The ``Cluster`` methods that act on the broker (kill
its subscriber connections, pause its writes, read its presence keys) work on every kind that
has the thing. The fixtures are registered for every integration module in
``tests/integration/conftest.py``; the instances' logs are printed at teardown (pytest shows
them when the test failed).

Watching connections: ``tests.support.watcher``; setting up rooms across the instances:
``tests.support.cluster_setup``; a burst of mutations: ``tests.support.writers``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]  # (no type information shipped)
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from liveboard.realtime.brokers.redis_publisher import channel_of, cluster_channel_of
from liveboard.realtime.presence_layout import INSTANCES_KEY, key_of
from tests.support.board import Board
from tests.support.contract import Json
from tests.support.postgres import fresh_postgres_database
from tests.support.probes import parse_metrics
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.redis_server import RedisServer
from tests.support.servers import LiveboardProcess
from tests.support.timing import timeout

#: The brokers a cluster test can run on.
BROKERS = ("redis", "redis-cluster", "postgres")
#: ``LIVEBOARD_BROKERS_FULL=1`` (``make soak-brokers``): also the variants kept out of
#: ``make test`` for their time (``on_brokers(…, soak=…)``).
FULL = os.environ.get("LIVEBOARD_BROKERS_FULL") == "1"


async def _on_node(port: int, *command: str | bytes | int) -> Any:
    """The reply to one command on one local Redis node, on a connection of its own."""
    node = Redis(port=port)
    try:
        return await node.execute_command(*command)  # type: ignore[no-untyped-call]
    finally:
        await node.aclose()


def on_brokers(*kinds: str, soak: tuple[str, ...] = ()) -> pytest.MarkDecorator:
    """Run the test once per broker of ``kinds`` (and of ``soak``, marked ``soak``, under
    ``make soak-brokers``); the ``cluster`` fixture is then on that broker."""
    assert set(kinds) | set(soak) <= set(BROKERS), (kinds, soak)
    chosen = [
        *kinds,
        *(pytest.param(kind, marks=pytest.mark.soak) for kind in soak if FULL),
    ]
    return pytest.mark.parametrize("cluster", chosen, indirect=True)


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
        #: What ``/readyz`` names: "redis" (a single Redis or a cluster) or "postgres".
        self.broker = broker
        #: Which broker: "redis", "redis-cluster" or "postgres".
        self.kind = (
            "postgres"
            if broker == "postgres"
            else "redis-cluster"
            if isinstance(redis, RedisClusterNodes)
            else "redis"
        )
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
                    assert body == self.ready_body(degraded=degraded)
                return time.monotonic() - started
            if time.monotonic() > deadline:
                raise AssertionError(f"/readyz never said degraded={degraded} in {wait}s: {bodies}")
            await asyncio.sleep(0.05)

    def ready_body(self, *, degraded: bool) -> Json:
        """``/readyz``'s body on this broker (a cluster's names its mode)."""
        body: Json = {"status": "ready", "broker": self.broker, "degraded": degraded}
        if self.kind == "redis-cluster":
            body["redisMode"] = "cluster"
        return body

    # The broker, whichever it is

    def _redis_ports(self) -> list[int]:
        """The ports of every running Redis process (every node of a cluster)."""
        redis = self.redis
        if isinstance(redis, RedisClusterNodes):
            return redis.running_ports()
        return [redis.port]

    def redis_client(self) -> Any:
        """A client for the broker's keys (a cluster client on a cluster); close it after."""
        redis = self.redis
        if isinstance(redis, RedisClusterNodes):
            return RedisCluster(host="127.0.0.1", port=redis.running_ports()[0])
        return Redis.from_url(redis.url)

    def presence_key(self, room: str) -> str:
        return key_of(room, cluster=self.kind == "redis-cluster")

    instances_key = INSTANCES_KEY

    async def kill_subscriber_connections(self) -> int:
        """End every instance's subscriber connections from the broker's side: ``CLIENT KILL
        TYPE pubsub`` on every Redis node, or ``pg_terminate_backend`` of the listening
        connections. Returns how many were killed."""
        if self.kind == "postgres":
            conn = await asyncpg.connect(self.database_url)
            try:
                return int(
                    await conn.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE application_name = 'liveboard listen'"
                        " AND datname = current_database()"
                    )
                )
            finally:
                await conn.close()
        killed = 0
        for port in self._redis_ports():
            killed += int(await _on_node(port, "CLIENT", "KILL", "TYPE", "pubsub"))
        return killed

    async def channel_subscribers(self, room: str) -> int | None:
        """How many connections subscribe ``room``'s channel (``PUBSUB NUMSUB``, or ``PUBSUB
        SHARDNUMSUB`` on the shard that owns it); None on PostgreSQL (one LISTEN for all)."""
        redis = self._redis
        if self.kind == "postgres" or redis is None:
            return None
        if isinstance(redis, RedisClusterNodes):
            channel = cluster_channel_of(room)
            port = (await asyncio.to_thread(redis.master_of_slot, key_slot(channel))).port
            command = ("PUBSUB", "SHARDNUMSUB", channel)
        else:
            port, command = redis.port, ("PUBSUB", "NUMSUB", channel_of(room))
        reply = await _on_node(port, *command)
        pairs = reply if isinstance(reply, list) else list(reply.items())
        flat = [x for pair in pairs for x in (pair if isinstance(pair, list | tuple) else [pair])]
        return int(flat[1])

    async def pause_writes(self, milliseconds: int) -> None:
        """``CLIENT PAUSE … WRITE`` on every Redis node: no PUBLISH is carried meanwhile."""
        for port in self._redis_ports():
            await _on_node(port, "CLIENT", "PAUSE", milliseconds, "WRITE")

    async def unpause(self) -> None:
        for port in self._redis_ports():
            await _on_node(port, "CLIENT", "UNPAUSE")

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
    request: pytest.FixtureRequest, cluster_database: str, tmp_path: Path
) -> AsyncIterator[Cluster]:
    """An empty cluster on the module's database and the broker the test is parametrised with
    (``on_brokers``; by default the test's own Redis): ``await cluster.start(n)``.

    The instances' logs are printed at teardown (pytest shows them when the test failed). On
    the session's Redis Cluster, every node stopped by the test is started again afterwards.
    """
    kind = getattr(request, "param", "redis")
    redis: RedisServer | RedisClusterNodes | None = None
    if kind == "redis":
        redis = request.getfixturevalue("redis_server")
    elif kind == "redis-cluster":
        redis = request.getfixturevalue("redis_cluster")
    c = Cluster(
        cluster_database, redis, tmp_path, broker="postgres" if kind == "postgres" else "redis"
    )
    try:
        yield c
    finally:
        await c.aclose()
        print(c.logs())
        if isinstance(redis, RedisClusterNodes):
            await asyncio.to_thread(redis.restart_stopped)
