"""Several instances on PostgreSQL alone: the postgres broker (``LIVEBOARD_BROKER=postgres``).

Real ``liveboard serve`` processes on one PostgreSQL database and no Redis at all:

* the listening connections killed by the database (``pg_terminate_backend``) in the middle of
  a burst: the instances listen again, ``/metrics`` counts it, and every subscriber ends with
  the complete ordered sequence (what the Redis ``CLIENT KILL`` test checks); presence shows
  nobody leaving, and a join after it crosses within 1 s;
* an instance SIGKILLed in the middle of a burst: the survivor's subscribers get every committed
  event within 5 s, in order, once;
* with ``LIVEBOARD_PG_BROKER_FULL=1`` (``make soak-pg-broker``), the Redis cluster's tests on
  this broker too: presence is the same on every instance within 1 s (joins, leaves, tabs on
  two instances, names); events made through one instance reach subscribers on every instance, in
  offset order, once, and concurrent changes through all three end in one order, the same
  everywhere; a SIGKILLed instance's users leave everywhere within 15 s; and
  ``serve --workers 2``: connections spread over both workers, events and presence cross them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.integration import test_cluster_events, test_cluster_presence, test_workers
from tests.integration.test_cluster_events import QUIET, head, new_tasks
from tests.integration.test_workers import Supervised
from tests.support.cluster import Cluster
from tests.support.cluster_setup import join_presence, shared_board, subscriber
from tests.support.contract import project_room
from tests.support.timing import timeout
from tests.support.watcher import Watcher, assert_sequence
from tests.support.writers import Writers

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

#: ``make soak-pg-broker``: also run the Redis cluster's events, presence and dead-instance
#: tests and the workers' test on this broker (about a minute more than ``make test``).
FULL = os.environ.get("LIVEBOARD_PG_BROKER_FULL") == "1"

# The Redis cluster's tests, run here on this module's fixtures (no Redis). ``make test`` sees
# presence cross instances in the listening-connection test below.
if FULL:
    test_presence_is_shared_within_a_second = (
        test_cluster_presence.test_presence_is_shared_within_a_second
    )
    test_events_reach_every_instance_in_order = (
        test_cluster_events.test_events_reach_every_instance_in_order
    )
    test_dead_instance_users_leave_within_15_s = (
        test_cluster_presence.test_dead_instance_users_leave_within_15_s
    )
    test_workers_spread_and_share_rooms = (
        test_workers.test_connections_spread_and_events_and_presence_cross_workers
    )


@pytest.fixture(name="cluster")
async def postgres_cluster(cluster_database: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    """An empty cluster of instances on the postgres broker, no Redis: ``cluster.start(n)``."""
    c = Cluster(cluster_database, None, tmp_path, broker="postgres")
    try:
        yield c
    finally:
        await c.aclose()
        print(c.logs())


@pytest.fixture(name="supervised")
async def postgres_workers(cluster_database: str, tmp_path: Path) -> AsyncIterator[Supervised]:
    """``serve --workers 2`` on the postgres broker, no Redis."""
    s = Supervised(cluster_database, None, tmp_path)
    try:
        await s.start()
        yield s
    finally:
        await s.board.aclose()
        pids = s.pids()
        s.server.kill()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        print(s.server.log())


async def _terminate_listeners(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'liveboard listen' AND datname = current_database()"
            )
        )
    finally:
        await conn.close()


async def test_listening_connections_terminated_mid_burst_lose_nothing(cluster: Cluster) -> None:
    b1, b2 = await cluster.start(2)
    owner, alice, bob = cluster.user("owner"), cluster.user("alice"), cluster.user("bob")
    carol = cluster.user("carol")
    writers = [cluster.user(f"writer{i}") for i in range(2)]
    _, pid = await shared_board(cluster, owner, alice, bob, carol, *writers)
    room = project_room(pid)
    jobs = await new_tasks(b1, pid, writers)
    base = await head(b1, owner, pid)
    local = Watcher(await subscriber(b1, alice, room), "alice@1")
    remote = Watcher(await subscriber(b2, bob, room), "bob@2")
    for w in (local, remote):
        await join_presence(w.client, room)
    await remote.until_users(room, [alice, bob], wait=1.0)
    before = [(await cluster.metrics(b))["liveboard_broker_reconnects_total"] for b in (b1, b2)]

    burst = Writers(b1, jobs).start()
    await remote.until_offset(room, base + 10, wait=5)
    assert await _terminate_listeners(cluster.database_url) == 2  # one per instance
    killed = time.monotonic()

    async def listening_again() -> bool:
        after = [(await cluster.metrics(b))["liveboard_broker_reconnects_total"] for b in (b1, b2)]
        return all(a > b for a, b in zip(after, before, strict=True))

    deadline = time.monotonic() + timeout(5)
    while not await listening_again():
        assert time.monotonic() < deadline, "the instances did not listen again within 5 s"
        await asyncio.sleep(0.05)
    took = time.monotonic() - killed
    await cluster.wait_ready([b1, b2], degraded=False, wait=2)
    # Presence after it: nobody shown leaving, and a new join crosses within 1 s.
    joiner = Watcher(await subscriber(b1, carol, room), "carol@1")
    await join_presence(joiner.client, room)
    for w in (remote, local, joiner):
        await w.until_users(room, [alice, bob, carol], wait=1.0)
    for w in (local, remote):
        assert all(not r.message["left"] for r in w.presence_updates(room)), w.name
    mark = await head(b1, owner, pid)
    await remote.until_offset(room, mark + 10, wait=5)  # events flow again
    await burst.stop()
    assert burst.failures == []
    assert burst.errors == []
    last = await head(b1, owner, pid)
    for w in (local, remote):
        await w.until_offset(room, last, wait=5)
    await asyncio.sleep(QUIET)
    for w in (local, remote):
        assert_sequence(w.events(room), base + 1, last, w.name)
    print(f"listening again {took:.2f}s after pg_terminate_backend; {last - base} events")


async def test_instance_killed_mid_burst_loses_nothing(cluster: Cluster) -> None:
    b1, b2 = await cluster.start(2)
    owner, bob = cluster.user("owner"), cluster.user("bob")
    writers = [cluster.user(f"writer{i}") for i in range(4)]
    _, pid = await shared_board(cluster, owner, bob, *writers)
    room = project_room(pid)
    jobs = await new_tasks(b1, pid, writers)
    base = await head(b1, owner, pid)
    survivors = [
        Watcher(await subscriber(b2, bob, room), "bob@2"),
        Watcher(await subscriber(b2, owner, room), "owner@2"),
    ]
    burst = Writers(b1, jobs).start()
    await survivors[0].until_offset(room, base + 20, wait=5)
    cluster.servers[0].kill()
    killed = time.monotonic()
    await burst.stop()
    assert burst.failures == []
    committed = await head(b2, owner, pid)
    for w in survivors:
        await w.until_offset(room, committed, wait=5 - (time.monotonic() - killed))
    delivered = time.monotonic() - killed
    await asyncio.sleep(QUIET)
    for w in survivors:
        assert_sequence(w.events(room), base + 1, committed, w.name)
    print(
        f"{len(burst.acked)} acknowledged, {committed - base - len(burst.acked)} committed but "
        f"never acknowledged; survivor complete {delivered:.2f}s after SIGKILL"
    )
