"""Events across instances over the broker (CONTRACT §5.1-5.5, §6.6; issues 4 and 20).

Real ``liveboard serve`` processes on one PostgreSQL database and one private broker: a
``redis-server``, and (``[redis-cluster]``) a Redis Cluster of 3 masters + 3 replicas, and
(``[postgres]``) PostgreSQL's own broker, where the outage has an equivalent:

* events made through one instance reach subscribers on every instance, in offset order, once;
* Redis stopped in the middle of a burst (every node of a cluster): mutations still succeed,
  local subscribers get their events at once, ``/readyz`` says degraded; Redis back on the same
  port(s), empty: every subscriber ends with the complete ordered sequence and ``degraded`` is
  false again;
* an instance SIGKILLed in the middle of a burst (also while Redis accepts no PUBLISH, so
  committed events are certainly unpublished): the survivor's subscribers get every committed
  event within 5 s, in order, once;
* the subscriber connections killed by the broker during a burst (``CLIENT KILL TYPE pubsub``
  on every node; on PostgreSQL ``pg_terminate_backend`` of the listening connections): the
  instances subscribe again, nothing is lost, ``/metrics`` counts it; presence shows nobody
  leaving, and a join after it crosses within 1 s.

The first test's cluster and postgres variants run in ``make soak-brokers`` only (their time;
the broker contract suite and ``test_redis_cluster.py`` carry events across instances on a
cluster in ``make test``).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.board import Board
from tests.support.cluster import Cluster, on_brokers
from tests.support.cluster_setup import join_presence, shared_board, subscriber
from tests.support.contract import project_room
from tests.support.timing import timeout
from tests.support.watcher import Watcher, assert_sequence, event_of
from tests.support.writers import Writers

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

#: After a stream looks complete, how long to keep listening for a late duplicate (a bit more
#: than the node's audit period, the last thing that could deliver one).
QUIET = 1.2


async def head(board: Board, user: str, pid: str) -> int:
    """The project room's committed offset, from the database (GET …/tasks)."""
    return int((await board.snapshot(user, pid))["offset"])


async def new_tasks(board: Board, pid: str, users: list[str]) -> list[tuple[str, str]]:
    """One task per user (created through ``board``): [(user, task id)]."""
    return [(u, str((await board.task(u, pid, f"task of {u}"))["id"])) for u in users]


@on_brokers("redis", soak=("redis-cluster", "postgres"))
async def test_events_reach_every_instance_in_order(cluster: Cluster) -> None:
    b1, b2, b3 = await cluster.start(3)
    owner, alice, bob = cluster.user("owner"), cluster.user("alice"), cluster.user("bob")
    _, pid = await shared_board(cluster, owner, alice, bob)
    room = project_room(pid)
    watchers = [
        Watcher(await subscriber(b1, owner, room), "owner@1"),
        Watcher(await subscriber(b2, alice, room), "alice@2"),
        Watcher(await subscriber(b3, bob, room), "bob@3"),
    ]

    # Every kind of change, made through instance 1 one after the other.
    done: list[str] = []
    ids = [str((await b1.task(owner, pid, f"t{i}"))["id"]) for i in range(8)]
    done += ["task:created"] * 8
    for i, tid in enumerate(ids):
        await b1.patch(owner, tid, {"title": f"renamed {i}"})
        done.append("task:updated")
    for tid in ids[:4]:
        await b1.move(owner, tid, "in_progress")
        done.append("task:moved")
    for tid in ids[4:6]:
        await b1.delete(owner, tid)
        done.append("task:deleted")
    sequential = await head(b1, owner, pid)
    assert sequential == len(done)
    for w in watchers:
        await w.until_offset(room, sequential, wait=5)
    for w in watchers:
        assert [e["type"] for e in w.events(room)] == done, w.name
        assert w.events(room) == watchers[0].events(room), f"{w.name} differs from instance 1"

    # Then concurrent changes through all three instances: one total order, the same everywhere.
    async def writes(board: Board, user: str, tid: str) -> None:
        for n in range(10):
            await board.patch(user, tid, {"title": f"{user} {n}"})

    await asyncio.gather(
        writes(b1, owner, ids[0]), writes(b2, alice, ids[1]), writes(b3, bob, ids[2])
    )
    last = await head(b2, alice, pid)
    assert last == sequential + 30
    for w in watchers:
        await w.until_offset(room, last, wait=5)
    await asyncio.sleep(QUIET)
    for w in watchers:
        assert_sequence(w.events(room), 1, last, w.name)
        assert w.events(room) == watchers[0].events(room), f"{w.name} differs from instance 1"

    for board in (b1, b2, b3):
        assert await cluster.readyz(board) == cluster.ready_body(degraded=False)
        samples = await cluster.metrics(board)
        assert samples["liveboard_broker_up"] == 1.0


@on_brokers("redis", "redis-cluster")
async def test_redis_stopped_mid_stream_then_restarted(cluster: Cluster) -> None:
    b1, b2 = await cluster.start(2)
    owner, alice, bob = cluster.user("owner"), cluster.user("alice"), cluster.user("bob")
    writers = [cluster.user(f"writer{i}") for i in range(4)]
    _, pid = await shared_board(cluster, owner, alice, bob, *writers)
    room = project_room(pid)
    jobs = await new_tasks(b1, pid, writers)
    base = await head(b1, owner, pid)
    local = Watcher(await subscriber(b1, alice, room), "alice@1 (local)")
    remote = Watcher(await subscriber(b2, bob, room), "bob@2 (remote)")

    burst = Writers(b1, jobs).start()
    await remote.until_offset(room, base + 20, wait=5)  # the stream flows through Redis

    await asyncio.to_thread(cluster.redis.stop)
    stopped = time.monotonic()
    noticed = await cluster.wait_ready([b1, b2], degraded=True, wait=5)
    await asyncio.sleep(1.0)  # keep writing through the outage for a while
    await burst.stop()
    outage_end = time.monotonic()

    # Every mutation succeeded, and those made during the outage reached the local subscriber
    # at once (the event is handed to local subscribers before PUBLISH is even tried).
    assert burst.failures == []
    assert burst.errors == []
    during = burst.acked_since(stopped)
    assert len(during) >= 10, f"only {len(during)} mutations during the outage"
    await local.until(
        lambda: all(event_of(local, room, a.task_id, a.version) for a in during),
        wait=2,
        what="the outage's events on instance 1",
    )
    lags = []
    for ack in during:
        arrival = event_of(local, room, ack.task_id, ack.version)
        assert arrival is not None
        lags.append(arrival.at - ack.at)
    assert max(lags) < 0.5, f"local delivery lagged by up to {max(lags):.3f}s during the outage"
    assert (await cluster.readyz(b1))["degraded"] is True
    assert (await cluster.readyz(b2))["degraded"] is True
    assert (await cluster.metrics(b1))["liveboard_broker_up"] == 0.0
    committed = await head(b2, bob, pid)
    assert committed == base + len(burst.acked)

    # Redis back on the same port: within 5 s, nothing missing, degraded false everywhere.
    await asyncio.to_thread(cluster.redis.start)
    caught_up = await remote.until_offset(room, committed, wait=5)
    recovered = await cluster.wait_ready([b1, b2], degraded=False, wait=5)

    # Live again through Redis afterwards.
    after = Writers(b1, jobs).start()
    await asyncio.sleep(1.0)
    await after.stop()
    assert after.failures == []
    assert after.errors == []
    last = await head(b1, owner, pid)
    assert last == committed + len(after.acked)
    for w in (local, remote):
        await w.until_offset(room, last, wait=5)
    await asyncio.sleep(QUIET)
    for w in (local, remote):
        assert_sequence(w.events(room), base + 1, last, w.name)
    assert remote.events(room) == local.events(room)
    print(
        f"outage noticed by /readyz after {noticed:.2f}s, {len(during)} mutations during "
        f"{outage_end - stopped:.2f}s of outage, local lag max {max(lags) * 1000:.1f}ms; "
        f"remote complete {caught_up:.2f}s after restart, /readyz healthy after {recovered:.2f}s"
    )


@pytest.mark.parametrize(
    ("cluster", "publish"),
    [
        ("redis", "flowing"),
        ("redis", "paused"),
        ("redis-cluster", "flowing"),
        ("redis-cluster", "paused"),
        ("postgres", "flowing"),
    ],
    indirect=["cluster"],
)
async def test_instance_killed_mid_burst_loses_nothing(cluster: Cluster, publish: str) -> None:
    """``paused``: Redis accepts no PUBLISH (``CLIENT PAUSE … WRITE``, on every node of a
    cluster) when the instance dies, so its last commits are certainly unpublished, and they can
    only reach the survivor's subscribers from the event log (they must, before the pause ends).
    PostgreSQL's broker has no such pause (its notification is sent by the commit itself)."""
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
    catch_ups_before = (await cluster.metrics(b2))["liveboard_catch_ups_total"]

    burst = Writers(b1, jobs).start()
    await survivors[0].until_offset(room, base + 20, wait=5)
    pause_ms = 5000
    try:
        if publish == "paused":
            await cluster.pause_writes(pause_ms)
            paused = time.monotonic()
            # Commits from here on are answered, but their PUBLISH waits for the pause.
            at_pause = await head(b2, owner, pid)
            await asyncio.sleep(0.3)
        cluster.servers[0].kill()
        killed = time.monotonic()
        await burst.stop()
        assert burst.failures == []  # requests in flight at the kill fail to connect: errors

        committed = await head(b2, owner, pid)
        unacknowledged = committed - base - len(burst.acked)
        assert unacknowledged >= 0
        if publish == "paused":
            assert committed - at_pause >= 1, "no commit was left unpublished by the crash"
        for w in survivors:
            await w.until_offset(room, committed, wait=5 - (time.monotonic() - killed))
        delivered = time.monotonic() - killed
        if publish == "paused":
            assert time.monotonic() < paused + pause_ms / 1000, (
                "delivered only after Redis accepted PUBLISH again"
            )
            samples = await cluster.metrics(b2)
            assert samples["liveboard_catch_ups_total"] > catch_ups_before
    finally:
        if publish == "paused":
            await cluster.unpause()
    await asyncio.sleep(QUIET)  # anything the dead instance left in Redis arrives now
    # A COMMIT the dead instance had sent may still be applied by its database backend after
    # ``committed`` was read (seen on a loaded machine): it must reach the survivors too, once.
    final = await head(b2, owner, pid)
    for w in survivors:
        await w.until_offset(room, final, wait=5)
    for w in survivors:
        assert_sequence(w.events(room), base + 1, final, w.name)
    print(
        f"{publish}: {len(burst.acked)} acknowledged, {unacknowledged} committed but never "
        f"acknowledged ({final - committed} more after the head was read); survivor complete "
        f"{delivered:.2f}s after SIGKILL"
    )


@on_brokers("redis", "redis-cluster", "postgres")
async def test_subscriber_connections_killed_mid_burst_lose_nothing(cluster: Cluster) -> None:
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
    # One subscriber connection per instance on the room's channel (None: PostgreSQL's LISTEN).
    assert await cluster.channel_subscribers(room) in (2, None)
    before = [(await cluster.metrics(b))["liveboard_broker_reconnects_total"] for b in (b1, b2)]

    burst = Writers(b1, jobs).start()
    await remote.until_offset(room, base + 10, wait=5)
    killed = await cluster.kill_subscriber_connections()
    # One per instance; on a cluster, one per instance and shard it has a channel on.
    assert killed == 2 if cluster.kind != "redis-cluster" else killed >= 2, killed
    kill_at = time.monotonic()

    async def recovered() -> bool:
        reconnects = [
            (await cluster.metrics(b))["liveboard_broker_reconnects_total"] for b in (b1, b2)
        ]
        subscribed = await cluster.channel_subscribers(room) in (2, None)
        return subscribed and all(a > b for a, b in zip(reconnects, before, strict=True))

    deadline = time.monotonic() + timeout(5)
    while not await recovered():
        assert time.monotonic() < deadline, "the instances did not subscribe again within 5 s"
        await asyncio.sleep(0.05)
    took = time.monotonic() - kill_at
    await cluster.wait_ready([b1, b2], degraded=False, wait=2)
    # Presence after it: nobody shown leaving, and a new join crosses within 1 s.
    joiner = Watcher(await subscriber(b1, carol, room), "carol@1")
    await join_presence(joiner.client, room)
    for w in (remote, local, joiner):
        await w.until_users(room, [alice, bob, carol], wait=1.0)
    for w in (local, remote):
        assert all(not r.message["left"] for r in w.presence_updates(room)), w.name

    # Events keep flowing to instance 2 through the new subscription.
    mark = await head(b1, owner, pid)
    await remote.until_offset(room, mark + 10, wait=5)
    await burst.stop()
    assert burst.failures == []
    assert burst.errors == []
    last = await head(b1, owner, pid)
    for w in (local, remote):
        await w.until_offset(room, last, wait=5)
    await asyncio.sleep(QUIET)
    for w in (local, remote):
        assert_sequence(w.events(room), base + 1, last, w.name)
    for board in (b1, b2):
        samples = await cluster.metrics(board)
        assert samples["liveboard_broker_up"] == 1.0
    print(
        f"{killed} subscriber connections killed; all back {took:.2f}s later; {last - base} events"
    )
