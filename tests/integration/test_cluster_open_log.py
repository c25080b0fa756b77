"""Events published over HTTP, in one room with liveboard's own task changes, across instances
(CONTRACT §6.3 with §5.1-5.2).

Real ``liveboard serve`` processes on one PostgreSQL database and one private ``redis-server``:
a service publishes through instance 1 while users change tasks of the same room through
instance 2; every subscriber on either instance receives one gap-free sequence, the same
everywhere, with each published event once (``userId`` null) and each task change once. A
member the service removes receives nothing the service publishes after the removal.
"""

from __future__ import annotations

import asyncio
import secrets

import pytest

from tests.support.board import Board
from tests.support.cluster import Cluster
from tests.support.cluster_setup import shared_board, subscriber
from tests.support.contract import project_room
from tests.support.watcher import Watcher, assert_sequence

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

KEY = "svc-" + secrets.token_urlsafe(24)
SERVICE = {"Authorization": f"apikey {KEY}"}
QUIET = 1.2


async def publish(board: Board, room: str, type_: str, data: dict[str, object]) -> int:
    answer = await board.call(
        "POST",
        f"/api/rooms/{room}/events",
        "nobody",
        {"type": type_, "data": data},
        expect=201,
        headers=SERVICE,
    )
    return int(answer["offset"])


async def test_published_events_interleave_with_task_changes(cluster: Cluster) -> None:
    b1, b2 = await cluster.start(2, env={"LIVEBOARD_API_KEYS": KEY})
    owner, alice, bob = cluster.user("owner"), cluster.user("alice"), cluster.user("bob")
    wid, pid = await shared_board(cluster, owner, alice, bob)
    room = project_room(pid)
    tasks = [str((await b2.task(owner, pid, f"t{i}"))["id"]) for i in range(3)]
    base = int((await b2.snapshot(owner, pid))["offset"])
    watchers = [
        Watcher(await subscriber(b1, alice, room), "alice@1"),
        Watcher(await subscriber(b2, bob, room), "bob@2"),
    ]

    async def comments() -> list[int]:
        return [
            await publish(b1, room, "comment:added", {"taskId": tasks[n % 3], "n": n})
            for n in range(60)
        ]

    async def edits(user: str, tid: str) -> None:
        for n in range(15):
            await b2.patch(user, tid, {"title": f"{user} {n}"})

    published, *_ = await asyncio.gather(
        comments(), edits(owner, tasks[0]), edits(alice, tasks[1]), edits(bob, tasks[2])
    )
    last = base + 60 + 45
    assert int((await b1.snapshot(owner, pid))["offset"]) == last
    for w in watchers:
        await w.until_offset(room, last, wait=5)
    await asyncio.sleep(QUIET)
    for w in watchers:
        events = w.events(room)[-(60 + 45) :]
        assert_sequence(events, base + 1, last, w.name)
        custom = [e for e in events if e["type"] == "comment:added"]
        assert [e["offset"] for e in custom] == published
        assert [e["data"]["n"] for e in custom] == list(range(60))
        assert all(e["userId"] is None and "origin" not in e for e in custom)
        assert sum(e["type"] == "task:updated" for e in events) == 45
        assert w.events(room) == watchers[0].events(room), f"{w.name} differs"

    # The service removes bob (through instance 2); what it publishes afterwards through
    # instance 1 never reaches him, and his subscription ends.
    await b2.call(
        "DELETE", f"/api/workspaces/{wid}/members/{bob}", "nobody", expect=204, headers=SERVICE
    )
    after_removal = await publish(b1, room, "comment:added", {"n": "after"})
    await watchers[0].until_offset(room, after_removal, wait=5)
    await watchers[1].until(
        lambda: any(
            m.get("type") == "unsubscribed" and m.get("room") == room
            for m in watchers[1].messages()
        ),
        wait=5,
        what="bob's subscription ending",
    )
    await asyncio.sleep(QUIET)
    assert after_removal not in watchers[1].offsets(room)
    for w in watchers:
        await w.stop()
