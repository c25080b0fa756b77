"""A removed member gets nothing committed after the removal, whatever delivers it (issue 16).

CONTRACT §3: removing a member ends their subscriptions to the workspace's rooms at once. The
authz matrix checks it on one instance with Redis up. Here Carol is subscribed to a project room
through instance 1 while her membership is removed through another instance and a task is then
created; the removal reaches instance 1 late or only from the event log:

* instance 1 is cut from Redis (``tests.support.partition``: TCP proxies between it and Redis
  are cut), so its periodic audit of the event log is what delivers both the removal and the
  task;
* the removal's PUBLISH is lost (the removing instance is cut from Redis), the task's arrives;
  also while a task write waits on its room's row as the removal commits;
* the removing instance is SIGKILLed after the removal committed and before it was published
  (Redis accepts no PUBLISH meanwhile: ``CLIENT PAUSE … WRITE``), the task's arrives.

Each runs on the single Redis and on a Redis Cluster (``[redis-cluster]``, 3 masters + 3
replicas): there a partition is one proxy per node with ``LIVEBOARD_REDIS_ADDRESS_MAP`` sending
each node's announced address to its proxy, for the partitioned instance only (the test checks
it reached the cluster through the proxies and only through them); the kill pauses every node
and watches the room's sharded channel.

Instance 1 is stopped (SIGSTOP) from before the removal until the task is committed, so it can
apply neither in between: when it resumes, the task waits in its Redis socket (unless it is cut
from Redis) and its next audit finds both in the log, and the test fails if either path releases
the task before the removal. In every case
Carol must get ``unsubscribed`` (``forbidden``) and never the task, while Dave, a member
subscribed to the same room on the same instance, gets it.

On PostgreSQL's broker (``[postgres]``) the broker is the database, so a partition from the
broker is one from the instance's store too (a proxy in front of PostgreSQL in its
``LIVEBOARD_DATABASE_URL``). Instance 1 cut from it can neither deliver nor read anything until
the link is back: its variant of the first case checks that it then reads the removal and the
task from the log in that order (no audit while cut, no SIGSTOP needed). The other two have no
PostgreSQL variant, because their premise cannot happen there: the "publish" is a ``NOTIFY`` on
the same link as the commit, so an instance cut from the database cannot commit the removal at
all (its request fails), and a notification it could not send is kept and sent when the link is
back, not lost. (A process dying between its commit and its notification is left to the other
instances' audit, as a lost Redis publish is: ``brokers.postgres``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import asyncpg  # type: ignore[import-untyped]  # (no type information shipped)
import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from liveboard.realtime.brokers.redis_publisher import channel_of, cluster_channel_of
from tests.support.board import Board
from tests.support.cluster import Cluster, on_brokers
from tests.support.cluster_setup import subscriber
from tests.support.contract import Json, project_room, workspace_room
from tests.support.partition import Partition
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.timing import timeout
from tests.support.watcher import Watcher
from tests.support.wsclient import WsClient

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]


@pytest.fixture(name="partition")
async def partition_fixture(cluster: Cluster) -> AsyncIterator[Partition]:
    """A cuttable link to the test's broker, for the instance started with ``partition.env``."""
    partition = await Partition.start(cluster)
    try:
        yield partition
    finally:
        await partition.aclose()


class Scene:
    """Carol and Dave subscribed to one project room through instance ``home``."""

    def __init__(self, cluster: Cluster, home: Board) -> None:
        self.cluster = cluster
        self.home = home
        self.owner = cluster.user("owner")
        self.carol = cluster.user("carol")
        self.dave = cluster.user("dave")
        self.wid = ""
        self.pid = ""
        self.room = ""
        self.resumed_at = 0.0

    async def set_up(self) -> None:
        self.wid = await self.home.workspace(self.owner, self.carol, self.dave)
        self.pid = str((await self.home.project(self.owner, self.wid))["id"])
        self.room = project_room(self.pid)
        # Carol subscribes to the project room only: her instance watches the workspace room
        # for her, after the project room (the order the audit went by).
        self.carol_ws: WsClient = await subscriber(self.home, self.carol, self.room)
        self.dave_watch = Watcher(await subscriber(self.home, self.dave, self.room), "dave@1")

    @contextlib.contextmanager
    def home_stopped(self) -> Iterator[None]:
        """Instance 1 is frozen (SIGSTOP) inside the block: it applies nothing meanwhile."""
        os.kill(self.home.server.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.home.server.pid, signal.SIGCONT)
            self.resumed_at = time.monotonic()

    async def task(self, board: Board, title: str) -> Json:
        return await board.task(self.owner, self.pid, title)

    async def check(self, task: Json, path: str) -> list[Json]:
        """Dave gets ``task``; Carol gets ``unsubscribed forbidden`` and never ``task``."""
        await self.dave_watch.until(
            lambda: any(
                e["data"].get("task", {}).get("id") == task["id"]
                for e in self.dave_watch.events(self.room)
            ),
            wait=5,
            what=f"task {task['id']} on instance 1",
        )
        got = await self.carol_ws.barrier()
        leaked = [m for m in got if m.get("type", "").startswith("task:")]
        ended = [m for m in got if m.get("type") == "unsubscribed"]
        assert not leaked, (
            f"the removed member received what was written after the removal: {leaked}; "
            f"all she got: {[m.get('type') for m in got]}"
        )
        assert ended == [{"type": "unsubscribed", "room": self.room, "reason": "forbidden"}], got
        took = time.monotonic() - self.resumed_at
        kinds = [m.get("type") for m in got]
        print(f"{path}: Dave had the task {took:.2f}s after instance 1 resumed; Carol got {kinds}")
        return got


async def removed_in_database(cluster: Cluster, wid: str, user: str, wait: float = 5.0) -> None:
    """Return once the removal of ``user`` is committed (read from the database)."""
    conn = await asyncpg.connect(cluster.database_url, timeout=5)
    try:
        deadline = time.monotonic() + timeout(wait)
        while await conn.fetchval(
            "SELECT count(*) FROM liveboard.members WHERE workspace_id = $1 AND user_id = $2",
            wid,
            user,
        ):
            assert time.monotonic() < deadline, "the removal never committed"
            await asyncio.sleep(0.005)
    finally:
        await conn.close()


class ChannelLog:
    """Every message Redis carries on one room's channel, from ``start`` on (on a cluster, the
    room's sharded channel, on the master of its slot)."""

    def __init__(self, cluster: Cluster, room: str) -> None:
        self.cluster = cluster
        self.sharded = cluster.kind == "redis-cluster"
        self.channel = cluster_channel_of(room) if self.sharded else channel_of(room)
        self.redis: Redis | None = None
        self.messages: list[bytes] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> ChannelLog:
        nodes = self.cluster.redis
        if isinstance(nodes, RedisClusterNodes):
            master = await asyncio.to_thread(nodes.master_of_slot, key_slot(self.channel))
            self.redis = Redis(port=master.port)
        else:
            self.redis = Redis.from_url(nodes.url)
        self.pubsub = self.redis.pubsub()
        if self.sharded:
            await self.pubsub.ssubscribe(self.channel)
        else:
            await self.pubsub.subscribe(self.channel)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] in ("message", "smessage"):
                self.messages.append(message["data"])

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]  # (redis-py leaves it untyped)
        if self.redis is not None:
            await self.redis.aclose()


@on_brokers("redis", "redis-cluster")
async def test_partitioned_instance_applies_the_removal_before_later_events(
    cluster: Cluster, partition: Partition
) -> None:
    """The issue's case: instance 1 cut from Redis, its audit delivers from the log."""
    [home] = await cluster.start(1, env=partition.env)
    [other] = await cluster.start(1)
    await partition.check_used(home.server.pid)
    scene = Scene(cluster, home)
    await scene.set_up()
    partition.cut()
    await cluster.wait_ready([home], degraded=True)
    with scene.home_stopped():
        await other.remove_member(scene.owner, scene.wid, scene.carol)
        task = await scene.task(other, "written after the removal")
    await scene.check(task, "partition")
    # the partition heals: the catch-up after it delivers nothing more to her
    partition.resume()
    await cluster.wait_ready([home], degraded=False)
    later = await scene.task(other, "after the partition")
    await scene.dave_watch.until(
        lambda: scene.dave_watch.last_offset(scene.room) >= 2, wait=5, what="the later task"
    )
    assert [m.get("type") for m in await scene.carol_ws.barrier()] == [], later
    await partition.check_used(home.server.pid)


@on_brokers("postgres")
async def test_an_instance_cut_from_postgres_applies_the_removal_before_later_events(
    cluster: Cluster, partition: Partition
) -> None:
    """PostgreSQL's broker: instance 1 cut from the database (its store and its broker) while
    the removal and the task are committed through another; it reads both from the log when the
    partition heals (its listening connection's restore), the removal first."""
    [home] = await cluster.start(1, env=partition.env)
    [other] = await cluster.start(1)
    await partition.check_used(home.server.pid)
    scene = Scene(cluster, home)
    await scene.set_up()
    partition.cut()
    await until_unready(cluster, home)  # it noticed: /readyz names the database as failed
    await other.remove_member(scene.owner, scene.wid, scene.carol)
    task = await scene.task(other, "written after the removal")
    partition.resume()
    scene.resumed_at = time.monotonic()
    await scene.check(task, "partition from postgres")
    await cluster.wait_ready([home], degraded=False)
    later = await scene.task(other, "after the partition")
    await scene.dave_watch.until(
        lambda: scene.dave_watch.last_offset(scene.room) >= 2, wait=5, what="the later task"
    )
    assert [m.get("type") for m in await scene.carol_ws.barrier()] == [], later
    await partition.check_used(home.server.pid)


async def until_unready(cluster: Cluster, board: Board, wait: float = 10.0) -> None:
    """Until ``board``'s ``/readyz`` answers 503 naming the database (``wait`` s at most)."""
    deadline = time.monotonic() + timeout(wait)
    while True:
        async with cluster.http.get(board.url + "/readyz") as response:
            if response.status == 503:
                body = await response.json()
                assert body["error"]["details"]["failed"] == ["database"], body
                return
        assert time.monotonic() < deadline, "/readyz never said the database failed"
        await asyncio.sleep(0.05)


@on_brokers("redis", "redis-cluster")
async def test_a_lost_publish_of_the_removal_does_not_let_later_events_through(
    cluster: Cluster, partition: Partition
) -> None:
    """The removal is made through an instance cut from Redis: its PUBLISH is lost."""
    [home, third] = await cluster.start(2)
    [remover] = await cluster.start(1, env=partition.env)
    await partition.check_used(remover.server.pid)
    scene = Scene(cluster, home)
    await scene.set_up()
    carried = await ChannelLog(cluster, workspace_room(scene.wid)).start()
    try:
        partition.cut()
        await cluster.wait_ready([remover], degraded=True)
        with scene.home_stopped():
            await remover.remove_member(scene.owner, scene.wid, scene.carol)
            task = await scene.task(third, "written after the removal")
        await scene.check(task, "lost publish")
        # (Only the removal counts, as in the kill test below: the set-up's member:added may
        # reach the channel after the log started.)
        removals = [m for m in carried.messages if json.loads(m)["type"] == "member:removed"]
        assert removals == [], "the removal was published after all"
        await partition.check_used(remover.server.pid)
    finally:
        await carried.aclose()


@on_brokers("redis", "redis-cluster")
async def test_an_instance_killed_between_the_removal_and_its_publish(cluster: Cluster) -> None:
    """The removing instance dies after the commit, before its PUBLISH went out."""
    [home, remover, third] = await cluster.start(3)
    scene = Scene(cluster, home)
    await scene.set_up()
    carried = await ChannelLog(cluster, workspace_room(scene.wid)).start()
    try:
        with scene.home_stopped():
            await cluster.pause_writes(10_000)
            try:
                removal = asyncio.create_task(
                    remover.remove_member(scene.owner, scene.wid, scene.carol)
                )
                await removed_in_database(cluster, scene.wid, scene.carol)
                remover.server.kill()  # committed; its PUBLISH waits on the pause
                # Answered or not (an answer does not wait for the PUBLISH), the PUBLISH never
                # went out: ``carried`` below proves it.
                with contextlib.suppress(aiohttp.ClientError):
                    await removal
            finally:
                await cluster.unpause()
            task = await scene.task(third, "written after the removal")
        await scene.check(task, "killed before publish")
        # (Only the removal counts: the set-up's member:added may reach the channel after the
        # log started, since an answer does not wait for its publish.)
        removals = [m for m in carried.messages if json.loads(m)["type"] == "member:removed"]
        assert removals == [], "the removal was published after all"
    finally:
        await carried.aclose()


@on_brokers("redis", "redis-cluster")
async def test_a_write_waiting_on_its_room_while_the_removal_commits_is_held(
    cluster: Cluster, partition: Partition
) -> None:
    """A task write whose statement started before the removal committed, and commits after it.

    The write waits on its project room's row (another writer holds it) while the removal
    commits through an instance cut from Redis (its publish is lost). On PostgreSQL's READ
    COMMITTED the workspace head the write names must be read after that wait, not from the
    snapshot its statement started with; else it names the head before the removal and every
    instance releases it at once (found in review of the first fix).
    """
    [home, third] = await cluster.start(2)
    [remover] = await cluster.start(1, env=partition.env)
    await partition.check_used(remover.server.pid)
    scene = Scene(cluster, home)
    await scene.set_up()
    partition.cut()
    await cluster.wait_ready([remover], degraded=True)
    holder = await asyncpg.connect(cluster.database_url, timeout=5)
    try:
        hold = holder.transaction()
        await hold.start()
        # Another writer of the project holds its head row, as any concurrent task write does.
        await holder.execute(
            "UPDATE liveboard.rooms SET last_offset = last_offset WHERE room = $1", scene.room
        )
        writing = asyncio.create_task(scene.task(third, "committed after the removal"))
        await _until_a_statement_waits_on_a_lock(holder)
        await remover.remove_member(scene.owner, scene.wid, scene.carol)
        await hold.rollback()
        task = await writing
    finally:
        await holder.close()
    await scene.check(task, "write waiting on its room")


async def _until_a_statement_waits_on_a_lock(conn: asyncpg.Connection) -> None:
    """Polls PostgreSQL until a statement of this database waits on a lock (10 s at most)."""
    for _ in range(500):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no statement waited on the held row")
