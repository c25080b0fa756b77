"""A removed member gets nothing committed after the removal, whatever delivers it (issue 16).

CONTRACT §3: removing a member ends their subscriptions to the workspace's rooms at once. The
authz matrix checks it on one instance with Redis up. Here Carol is subscribed to a project room
through instance 1 while her membership is removed through another instance and a task is then
created; the removal reaches instance 1 late or only from the event log:

* instance 1 is cut from Redis (a TCP proxy between it and Redis is cut), so its periodic audit
  of the event log is what delivers both the removal and the task.

Instance 1 is stopped (SIGSTOP) from before the removal until the task is committed, so it can
apply neither in between: when it resumes, its audit is due and finds both in the log. In every case
Carol must get ``unsubscribed`` (``forbidden``) and never the task, while Dave, a member
subscribed to the same room on the same instance, gets it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.cluster import (  # noqa: F401
    Cluster,
    Watcher,
    cluster_database_fixture,
    cluster_fixture,
    subscriber,
)
from tests.redis_server import redis_server  # noqa: F401
from tests.tcp_proxy import TcpProxy
from tests.wsclient import Board, Json, WsClient, project_room

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]


@pytest.fixture(name="proxy")
async def proxy_fixture(cluster: Cluster) -> AsyncIterator[TcpProxy]:
    """A cuttable link to the test's Redis."""
    proxy = await TcpProxy(cluster.redis.port).start()
    try:
        yield proxy
    finally:
        await proxy.aclose()


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


async def test_partitioned_instance_applies_the_removal_before_later_events(
    cluster: Cluster, proxy: TcpProxy
) -> None:
    """The issue's case: instance 1 cut from Redis, its audit delivers from the log."""
    [home] = await cluster.start(1, env={"LIVEBOARD_REDIS_URL": proxy.redis_url})
    [other] = await cluster.start(1)
    scene = Scene(cluster, home)
    await scene.set_up()
    proxy.cut()
    await cluster.wait_ready([home], degraded=True)
    with scene.home_stopped():
        await other.remove_member(scene.owner, scene.wid, scene.carol)
        task = await scene.task(other, "written after the removal")
    await scene.check(task, "partition")
    # the partition heals: the catch-up after it delivers nothing more to her
    proxy.restore()
    await cluster.wait_ready([home], degraded=False)
    later = await scene.task(other, "after the partition")
    await scene.dave_watch.until(
        lambda: scene.dave_watch.last_offset(scene.room) >= 2, wait=5, what="the later task"
    )
    assert [m.get("type") for m in await scene.carol_ws.barrier()] == [], later
