"""A deploy as clients see it: a reconnect storm through the SDK's own policy (issue 20 item 4).

The smaller version of bench scenario G that runs in ``make test``: 200 ``LiveboardClient``s
(10 users) subscribed to one project on instance 1 of two (PostgreSQL + Redis) while a writer
creates tasks through instance 2 at 20 per second. Instance 1 gets SIGTERM (1012 to every
socket, spread over 2 s), exits, and starts again on the same port. Every client comes back by
itself, with ``since``: each ends with every event from the one it started at to the last, in
order, once, without a ``Resync``. The spread of the clients' returns after the new server
listens is printed (a figure for the storm's shape, not asserted: performance lives in bench/).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time

import pytest

from liveboard.client import ConnectionState, Event, LiveboardClient, Resync
from tests.support.cluster import Cluster
from tests.support.cluster_setup import shared_board
from tests.support.contract import project_room
from tests.support.servers import LiveboardProcess
from tests.support.timing import wait_until
from tests.support.tokens import make_token

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

CLIENTS = 200
USERS = 10
WRITES_PER_SECOND = 20


class Tracked:
    """One SDK client: the offsets it was given and when it connected again (the callback is
    registered once the first connection is up)."""

    def __init__(self, client: LiveboardClient) -> None:
        self.client = client
        self.offsets: list[int] = []
        self.resyncs = 0
        self.connected_at: list[float] = []
        client.on_state_change(self._on_state)

    def _on_state(self, state: ConnectionState) -> None:
        if state is ConnectionState.CONNECTED:
            self.connected_at.append(time.monotonic())

    def on_event(self, event: Event) -> None:
        self.offsets.append(event.offset)

    def on_resync(self, _: Resync) -> None:
        self.resyncs += 1


async def test_every_client_returns_by_itself_gap_free_after_a_restart(cluster: Cluster) -> None:
    restarting, writer_board = await cluster.start(2)
    owner = cluster.user("owner")
    users = [cluster.user(f"u{n}") for n in range(USERS)]
    _, pid = await shared_board(cluster, owner, *users)
    room = project_room(pid)
    tracked: list[Tracked] = []
    for n in range(CLIENTS):
        client = LiveboardClient(restarting.url, make_token(users[n % USERS], ttl=3600))
        await client.connect()
        one = Tracked(client)
        sub = await client.subscribe(room, buffer=False)
        sub.on_event(one.on_event)
        sub.on_resync(one.on_resync)
        tracked.append(one)

    stop_writing = asyncio.Event()

    async def write() -> None:
        n = 0
        while not stop_writing.is_set():
            await writer_board.task(owner, pid, f"during the deploy {n}")
            n += 1
            await asyncio.sleep(1 / WRITES_PER_SECOND)

    writer = asyncio.create_task(write())
    try:
        await asyncio.sleep(1.0)
        old = cluster.servers[0]
        assert await asyncio.to_thread(old.terminate, 30.0) == 0
        again = LiveboardProcess(
            database_url=cluster.database_url,
            log_path=cluster.directory / "instance-1-restarted.log",
            env=old.env,
            port=old.port,
        )
        cluster.servers.append(again)
        await asyncio.to_thread(again.start, 60.0)
        listening_at = time.monotonic()
        await wait_until(lambda: all(t.connected_at for t in tracked), wait=60)
        await asyncio.sleep(1.0)  # writes go on while and after the clients return
    finally:
        stop_writing.set()
        await writer
    head = int((await writer_board.snapshot(owner, pid))["offset"])
    await wait_until(lambda: all(t.offsets and t.offsets[-1] >= head for t in tracked), wait=30)
    try:
        for t in tracked:
            first = t.offsets[0]
            assert t.offsets == list(range(first, head + 1)), "a gap or a duplicate"
            assert t.resyncs == 0
        returns = sorted(max(0.0, t.connected_at[0] - listening_at) for t in tracked)
        print(
            f"{CLIENTS} clients back after the restarted server listened: "
            f"p50 {statistics.median(returns):.2f} s, "
            f"p99 {returns[int(len(returns) * 0.99) - 1]:.2f} s, max {returns[-1]:.2f} s"
        )
    finally:
        for t in tracked:
            with contextlib.suppress(Exception):
                await t.client.aclose()
