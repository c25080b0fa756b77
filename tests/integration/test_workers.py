"""``liveboard serve --workers N`` (CONTRACT §6.6, issue 20 item 1) with real processes.

A supervisor and its workers on one port (SO_REUSEPORT), on one PostgreSQL database and a private
``redis-server``: connections spread over the workers (the spread is printed), events and
presence cross workers as between instances, a SIGKILLed worker is replaced and its clients
recover what they missed with ``since``, SIGTERM drains every worker (1012) and the supervisor
exits 0; without a broker ``serve`` exits 2 with one line; workers that keep dying make the
supervisor give up with exit 1. Which worker holds which connection is read from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest

from tests.support.board import Board
from tests.support.contract import project_room
from tests.support.probes import parse_metrics
from tests.support.redis_server import RedisServer
from tests.support.servers import ROOT, LiveboardProcess, free_port
from tests.support.timing import timeout, wait_until
from tests.support.tokens import TEST_SECRET
from tests.support.watcher import Watcher, assert_sequence
from tests.support.workers import (
    listening_workers,
    process_exists,
    worker_of_client_ports,
    worker_pids,
)
from tests.support.wsclient import WsClient

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT, /proc"),
]

WORKERS = 2


class Supervised:
    """A ``serve --workers`` process and its workers."""

    def __init__(self, database_url: str, redis: RedisServer | None, directory: Path) -> None:
        """``redis`` None: the workers share rooms through the postgres broker."""
        #: Worker i serves /metrics alone on metrics_port + i.
        self.metrics_port = free_ports_in_a_row(WORKERS)
        broker = (
            {"LIVEBOARD_BROKER": "postgres"}
            if redis is None
            else {"LIVEBOARD_REDIS_URL": redis.url}
        )
        self.server = LiveboardProcess(
            database_url=database_url,
            log_path=directory / "supervisor.log",
            env={
                **broker,
                "LIVEBOARD_WORKERS": str(WORKERS),
                "LIVEBOARD_METRICS_PORT": str(self.metrics_port),
            },
        )
        self.board = Board(self.server)

    async def start(self) -> None:
        await asyncio.to_thread(self.server.start, 60.0)
        await self.until_listening(set())

    async def until_listening(self, not_these: set[int]) -> list[int]:
        """Wait until ``WORKERS`` workers, none of ``not_these``, listen on the port."""

        def ready() -> bool:
            pids = [pid for pid in self.pids() if pid not in not_these]
            return len(listening_workers(pids, self.server.port)) == WORKERS

        await wait_until(ready, wait=60)
        return self.pids()

    def pids(self) -> list[int]:
        return worker_pids(self.server.pid)

    async def workers_of(self, clients: list[WsClient]) -> list[int]:
        """The pid of the worker holding each client's connection, in ``clients``' order.

        One read of ``/proc/net/tcp`` answers for every client, off the event loop (a blocking
        read per client stalled the loop long enough under load for the server to drop
        sockets for unanswered pings)."""
        client_ports = [client.ws.get_extra_info("sockname")[1] for client in clients]
        owners: dict[int, int] = {}
        # /proc/net/tcp is read in chunks and can skip rows while other sockets come and go:
        # read it again before deciding a connection is nowhere.
        for _ in range(50):
            owners.update(
                await asyncio.to_thread(worker_of_client_ports, self.pids(), self.server.port)
            )
            if all(port in owners for port in client_ports):
                return [owners[port] for port in client_ports]
            await asyncio.sleep(0.02)
        missing = [port for port in client_ports if port not in owners]
        raise AssertionError(f"no worker holds the connections from ports {missing}")


def free_ports_in_a_row(count: int) -> int:
    """The first of ``count`` consecutive ports that nothing listens on right now."""
    for _ in range(100):
        first = free_port()
        if first + count - 1 > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise AssertionError(f"no {count} free ports in a row")


@pytest.fixture
async def supervised(
    cluster_database: str, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[Supervised]:
    s = Supervised(cluster_database, redis_server, tmp_path)
    try:
        await s.start()
        yield s
    finally:
        await s.board.aclose()
        pids = s.pids()
        s.server.kill()
        for pid in pids:  # the workers die with the supervisor (PR_SET_PDEATHSIG); be sure
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        print(s.server.log())


def has_events(watcher: Watcher, room: str) -> bool:
    return bool(watcher.events(room))


def _serve(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "liveboard", "serve", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout(60),
    )


def _base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEBOARD_")}
    env.update(
        LIVEBOARD_JWT_SECRET=TEST_SECRET,
        LIVEBOARD_DATABASE_URL=f"sqlite:///{tmp_path / 'lb.db'}",
    )
    return env


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--workers", "2"), "LIVEBOARD_REDIS_URL"),
        (("--workers", "0"), "--workers must be a positive integer or auto"),
        (("--workers", "many"), "--workers must be a positive integer or auto"),
        (("--workers", "2", "--dev"), "--dev runs one process"),
    ],
)
def test_a_bad_worker_setting_exits_2_with_one_line(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    env = _base_env(tmp_path)
    if "--dev" in args:
        env["LIVEBOARD_REDIS_URL"] = "redis://127.0.0.1:1/0"
    done = _serve(*args, "--port", str(free_port()), env=env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert says in lines[0]


async def test_connections_spread_and_events_and_presence_cross_workers(
    supervised: Supervised,
) -> None:
    board = supervised.board
    alice, bob = board.user("alice"), board.user("bob")
    _, pid = await board.board(alice, bob)
    room = project_room(pid)
    clients = [await board.connect(alice if i % 2 else bob) for i in range(40)]
    spread = Counter(await supervised.workers_of(clients))
    print(f"40 connections over {WORKERS} workers: {sorted(spread.values())}")
    assert len(spread) == WORKERS, spread  # all on one worker: 2 ** -39 by chance
    for client in clients:
        assert (await client.subscribe(room))["type"] == "subscribed"
    watchers = [Watcher(client, f"c{i}") for i, client in enumerate(clients)]
    created = await board.task(alice, pid, "crosses workers")
    offsets = set()
    for watcher in watchers:
        await watcher.until(partial(has_events, watcher, room), 10, "task:created")
        offsets.add(watcher.events(room)[-1]["offset"])
        assert watcher.events(room)[-1]["data"]["task"]["id"] == created["id"]
    assert len(offsets) == 1  # one event, one offset, on every worker
    # Presence: alice joins on one worker, bob on the other; both see both.
    by_worker: dict[int, dict[str, Watcher]] = {}
    owners = await supervised.workers_of(clients)
    for index, (owner, watcher) in enumerate(zip(owners, watchers, strict=True)):
        user = alice if index % 2 else bob
        by_worker.setdefault(owner, {}).setdefault(user, watcher)
    first, second = list(by_worker.values())[:2]
    joiners = [first[alice], second[bob]] if bob in second else [first[bob], second[alice]]
    for watcher in joiners:
        await watcher.client.send({"type": "presence", "action": "join", "room": room})
    for watcher in joiners:
        await watcher.until_users(room, sorted([alice, bob]), wait=5)


async def test_each_worker_is_scraped_on_its_own_metrics_port(supervised: Supervised) -> None:
    board = supervised.board
    clients = [await board.connect(board.user("alice")) for _ in range(10)]
    spread = Counter(await supervised.workers_of(clients))
    scraped = []
    for index in range(WORKERS):
        url = f"http://127.0.0.1:{supervised.metrics_port + index}/metrics"
        async with board.http.get(url) as response:
            assert response.status == 200
            scraped.append(parse_metrics(await response.text()))
    # Each port answers for one worker: together they count every connection, once.
    assert sum(metrics["liveboard_connections"] for metrics in scraped) == len(clients)
    assert sorted(int(m["liveboard_connections"]) for m in scraped) == sorted(
        [*spread.values(), *[0] * (WORKERS - len(spread))]
    )
    async with board.http.get(f"http://127.0.0.1:{supervised.metrics_port}/healthz") as response:
        assert response.status == 404  # the metrics port serves /metrics alone


async def test_a_killed_worker_is_replaced_and_its_clients_recover(
    supervised: Supervised,
) -> None:
    board = supervised.board
    alice = board.user("alice")
    _, pid = await board.board(alice)
    room = project_room(pid)
    clients = [await board.connect(alice) for _ in range(12)]
    owners = await supervised.workers_of(clients)
    victim = owners[0]
    on_victim = [c for c, owner in zip(clients, owners, strict=True) if owner == victim]
    for client in clients:
        await client.subscribe(room)
    await board.task(alice, pid, "before the kill")
    last_seen = [await client.next("task:created") for client in on_victim]
    os.kill(victim, signal.SIGKILL)
    for client in on_victim:
        assert await client.expect_close(wait=10) in (None, 1006)
    # Its listening socket closes with the process: a connection the kernel hashed to it just
    # before is reset (a client's retry lands on a live worker). Write once it is gone.
    await wait_until(lambda: not process_exists(victim), wait=10)
    # Changes while the worker is gone, through the other worker: on new connections (the
    # board's keep-alive ones to the killed worker are reset).
    writer = Board(supervised.server)
    try:
        for n in range(5):
            await writer.task(alice, pid, f"while it was gone {n}")
    finally:
        await writer.aclose()
    pids = await supervised.until_listening({victim})
    assert victim not in pids
    for event in last_seen:
        again = await board.connect(alice)
        since = {"offset": event["offset"], "epoch": event["epoch"]}
        reply = await again.subscribe(room, since=since)
        assert reply["type"] == "subscribed", reply
        assert reply.get("recovered") is True, reply
        offset = int(event["offset"])
        assert_sequence(await again.events(5), offset + 1, offset + 5)


async def test_sigterm_drains_every_worker_and_the_supervisor_exits_0(
    supervised: Supervised,
) -> None:
    board = supervised.board
    clients = [await board.connect(board.user("alice")) for _ in range(10)]
    assert len(set(await supervised.workers_of(clients))) >= 1
    pids = supervised.pids()
    code = await asyncio.to_thread(supervised.server.terminate, 60.0)
    assert code == 0, supervised.server.log()
    for client in clients:
        assert await client.expect_close(wait=10) == 1012
    assert [pid for pid in pids if process_exists(pid)] == []


def test_workers_that_keep_dying_make_the_supervisor_exit_1(tmp_path: Path) -> None:
    env = _base_env(tmp_path)
    # A database nobody listens on, tried once: every worker exits 1 at start.
    env.update(
        LIVEBOARD_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/none",
        LIVEBOARD_DB_WAIT="0",
        LIVEBOARD_REDIS_URL="redis://127.0.0.1:1/0",
    )
    done = _serve("--workers", "2", "--port", str(free_port()), env=env)
    assert done.returncode == 1, done.stderr
    assert "workers died 6 times" in done.stderr
