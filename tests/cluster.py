"""Helpers for the cluster tests (``tests/integration/test_cluster_*.py``). Holds no test itself.

A *cluster* is two or three real ``liveboard serve`` processes sharing one PostgreSQL database
(a fresh one per test module) and one private ``redis-server`` (a fresh one per test, from
``tests.redis_server``). The ``cluster`` fixture starts the instances in parallel and waits
until every ``/readyz`` says the Redis broker is up.

``Watcher`` drains one WebSocket client in the background and records every message with its
arrival time, so a test can wait for a condition (``until``) and then check the whole stream:
events in offset order with no gap and no duplicate (``assert_sequence``), the latest presence
list, how many ``presence:update`` messages arrived.

A test module uses them with::

    from tests.cluster import Cluster, cluster_database_fixture, cluster_fixture  # noqa: F401
    from tests.redis_server import redis_server  # noqa: F401

and asks for the ``cluster`` fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.redis_server import RedisServer
from tests.servers import LiveboardProcess
from tests.support import POSTGRES_ADMIN_URL, make_token, timeout
from tests.wsclient import EVENT_TYPES, Board, Json, WsClient, parse_metrics

# The database


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module", name="cluster_database")
def cluster_database_fixture(postgres_server_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for one test module (next to the session's), then dropped."""
    name = f"liveboard_cluster_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{postgres_server_url.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# The instances


class Cluster:
    """Instances on one database and one Redis; ``boards[i]`` is the REST/WS harness of ``i``."""

    def __init__(self, database_url: str, redis: RedisServer, directory: Path) -> None:
        self.database_url = database_url
        self.redis = redis
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
                env={"LIVEBOARD_REDIS_URL": self.redis.url, **(env or {})},
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
                    assert body == {"status": "ready", "broker": "redis", "degraded": degraded}
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


# Watching a connection


@dataclass
class Received:
    at: float  # time.monotonic() on arrival
    message: Json


@dataclass(eq=False)
class Watcher:
    """Records everything one ``WsClient`` receives, from the moment it is created."""

    client: WsClient
    name: str = ""
    received: list[Received] = field(default_factory=list)
    closed: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        while True:
            message = await self.client.queue.get()
            if message is None:
                self.closed = True
                self.client.queue.put_nowait(None)
                self._changed.set()
                return
            self.received.append(Received(time.monotonic(), message))
            self._changed.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    # Views

    def messages(self, type_: str | None = None, since: float = 0.0) -> list[Json]:
        return [
            r.message
            for r in self.received
            if r.at >= since and (type_ is None or r.message.get("type") == type_)
        ]

    def events(self, room: str) -> list[Json]:
        return [
            r.message
            for r in self.received
            if r.message.get("type") in EVENT_TYPES and r.message.get("room") == room
        ]

    def offsets(self, room: str) -> list[int]:
        return [int(e["offset"]) for e in self.events(room)]

    def last_offset(self, room: str) -> int:
        offsets = self.offsets(room)
        return offsets[-1] if offsets else 0

    def presence_updates(self, room: str, since: float = 0.0) -> list[Received]:
        return [
            r
            for r in self.received
            if r.at >= since
            and r.message.get("type") == "presence:update"
            and r.message.get("room") == room
        ]

    def users(self, room: str) -> list[str] | None:
        """The user ids of the latest ``presence:update`` of ``room`` (None if none came)."""
        updates = self.presence_updates(room)
        if not updates:
            return None
        return [u["userId"] for u in updates[-1].message["users"]]

    # Waiting

    async def until(
        self, predicate: Callable[[], bool], wait: float, what: str = "condition"
    ) -> float:
        """Wait until ``predicate()`` holds (checked on every message); return the seconds taken."""
        started = time.monotonic()
        deadline = started + timeout(wait)
        while True:
            self._changed.clear()
            if predicate():
                return time.monotonic() - started
            if self.closed:
                raise AssertionError(
                    f"{self.name}: socket closed (code {self.client.close_code}) waiting for {what}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no {what} within {wait}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.25))

    async def until_offset(self, room: str, offset: int, wait: float) -> float:
        return await self.until(
            lambda: self.last_offset(room) >= offset, wait, f"event with offset {offset} in {room}"
        )

    async def until_users(self, room: str, users: list[str], wait: float) -> float:
        expected = sorted(users)
        return await self.until(
            lambda: self.users(room) == expected,
            wait,
            f"presence {len(expected)} users {expected[:5]}... in {room}",
        )


def assert_sequence(events: list[Json], first: int, last: int, who: str = "") -> None:
    """``events`` are exactly offsets ``first``..``last``, in order, each once, one epoch."""
    got = [int(e["offset"]) for e in events]
    expected = list(range(first, last + 1))
    if got != expected:
        duplicates = sorted({o for o in got if got.count(o) > 1})
        missing = sorted(set(expected) - set(got))
        raise AssertionError(
            f"{who}: offsets {first}..{last} expected once each in order; got {len(got)} events, "
            f"missing {missing[:20]}, duplicated {duplicates[:20]}, "
            f"out of order: {got != sorted(got)}; first 30: {got[:30]}"
        )
    assert len({e["epoch"] for e in events}) <= 1, f"{who}: several epochs"


# Setting up a board


async def shared_board(cluster: Cluster, owner: str, *members: str) -> tuple[str, str]:
    """A workspace (owner + members) with one project, made through instance 1: (wid, pid).

    Members are added concurrently, spread over the instances (each has its own REST rate
    limiter, 200 calls of burst per user).
    """
    first = cluster.boards[0]
    wid = await first.workspace(owner)
    semaphore = asyncio.Semaphore(16)

    async def add(index: int, member: str) -> None:
        async with semaphore:
            board = cluster.boards[index % len(cluster.boards)]
            await board.add_member(owner, wid, member)

    await asyncio.gather(*(add(i, m) for i, m in enumerate(members)))
    project = await first.project(owner, wid)
    return wid, str(project["id"])


async def subscriber(board: Board, user: str, room: str, *, name: str | None = None) -> WsClient:
    """A connection of ``user`` on ``board``'s instance, subscribed to ``room``."""
    client = await board.connect(user, name=name)
    reply = await client.subscribe(room)
    assert reply["type"] == "subscribed", reply
    return client


async def join_presence(client: WsClient, room: str) -> None:
    await client.send({"type": "presence", "action": "join", "room": room})


async def leave_presence(client: WsClient, room: str) -> None:
    await client.send({"type": "presence", "action": "leave", "room": room})


# A burst of mutations


@dataclass
class Ack:
    at: float  # time.monotonic() when the answer arrived
    task_id: str
    version: int


class Writers:
    """One PATCH loop per (user, task) against one instance, all concurrent, until ``stop``.

    Every answer is recorded: 2xx in ``acked`` (task id and new version, to find its event),
    anything else in ``failures``. A connection error (the instance died) ends that loop and is
    kept in ``errors``.
    """

    def __init__(self, board: Board, writers: list[tuple[str, str]], pace: float = 0.02) -> None:
        self.board = board
        self.writers = writers
        self.pace = pace  # keeps each user well under the REST rate limit (50/s)
        self.acked: list[Ack] = []
        self.failures: list[str] = []
        self.errors: list[BaseException] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> Writers:
        self._tasks = [
            asyncio.create_task(self._loop(user, task_id)) for user, task_id in self.writers
        ]
        return self

    async def _loop(self, user: str, task_id: str) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                async with self.board.http.patch(
                    f"{self.board.url}/api/tasks/{task_id}",
                    json={"title": f"{user} #{n}"},
                    headers={"Authorization": f"Bearer {make_token(user)}"},
                ) as response:
                    text = await response.text()
                    if response.status == 200:
                        body = json.loads(text)
                        self.acked.append(Ack(time.monotonic(), task_id, int(body["version"])))
                    else:
                        self.failures.append(f"{response.status} {text}")
            except (aiohttp.ClientError, ConnectionError) as exc:
                self.errors.append(exc)
                return
            await asyncio.sleep(self.pace)

    async def stop(self) -> None:
        """Stop and wait for the requests in flight (each bounded by the client's timeout)."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def acked_since(self, since: float) -> list[Ack]:
        return [a for a in self.acked if a.at >= since]


def event_of(watcher: Watcher, room: str, task_id: str, version: int) -> Received | None:
    """The arrival of the ``task:updated`` event that took ``task_id`` to ``version``."""
    for r in watcher.received:
        m = r.message
        if m.get("room") != room or m.get("type") != "task:updated":
            continue
        task = m["data"]["task"]
        if task["id"] == task_id and int(task["version"]) == version:
            return r
    return None


# Many cheap connections (coalescing test)


class Drain:
    """A bare WebSocket that reads and counts what it gets without decoding JSON.

    Used for hundreds of connections in one test process; it keeps reading so the server never
    sees it as a slow consumer.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames = 0
        self.close_code: int | None = None
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, ws_url: str, user: str, room: str) -> Drain:
        ws = await session.ws_connect(
            ws_url,
            headers={"Authorization": f"Bearer {make_token(user)}"},
            autoclose=False,
            max_msg_size=16 * 1024 * 1024,
        )
        connected = json.loads((await ws.receive(timeout(10))).data)
        assert connected["type"] == "connected", connected
        await ws.send_str(json.dumps({"type": "subscribe", "room": room, "id": 1}))
        reply = json.loads((await ws.receive(timeout(10))).data)
        assert reply["type"] == "subscribed", reply
        return cls(ws)

    async def _read(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                self.frames += 1
            elif msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                continue
            else:
                self.close_code = self.ws.close_code
                return

    async def send(self, message: Json) -> None:
        await self.ws.send_str(json.dumps(message))

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        with contextlib.suppress(Exception):
            await self.ws.close()


async def gather_limited(
    count: int, make: Callable[[int], Awaitable[Any]], limit: int = 20
) -> list[Any]:
    """``make(0) … make(count - 1)``, at most ``limit`` at a time, results in order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(index: int) -> Any:
        async with semaphore:
            return await make(index)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


__all__ = [
    "Ack",
    "Cluster",
    "Drain",
    "Received",
    "Watcher",
    "Writers",
    "assert_sequence",
    "cluster_database_fixture",
    "cluster_fixture",
    "event_of",
    "gather_limited",
    "join_presence",
    "leave_presence",
    "shared_board",
    "subscriber",
]
