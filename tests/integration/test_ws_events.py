"""Room events (CONTRACT §3, §4, §5.1, §5.2): payloads, envelope, origin, ordering, revocation.

The four task events carry exactly ``{task}`` / ``{task, changes}`` / ``{taskId, fromStatus,
toStatus, order}`` / ``{taskId}``; workspace rooms carry ``project:created``, ``member:added``
and ``member:removed``. Every event has ``room, offset, epoch, ts, userId`` (and ``origin`` when
the REST call named a connection). Offsets are the room's previous offset + 1, and every
subscriber receives them in order with no gap and no duplicate, even under concurrent writes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.support.board import ApiError, Board
from tests.support.contract import offsets, project_room, workspace_room
from tests.support.wsclient import WsClient

ENVELOPE = {"type", "room", "offset", "epoch", "ts", "userId", "data"}


def now_ms() -> int:
    return int(time.time() * 1000)


def assert_envelope(
    event: dict[str, Any],
    *,
    type: str,
    room: str,
    offset: int,
    epoch: str,
    user: str,
    window: tuple[int, int],
    origin: str | None = None,
) -> None:
    expected_keys = ENVELOPE | ({"origin"} if origin is not None else set())
    assert set(event) == expected_keys, event
    assert event["type"] == type
    assert event["room"] == room
    assert event["offset"] == offset
    assert event["epoch"] == epoch
    assert event["userId"] == user
    assert isinstance(event["ts"], int)
    low, high = window
    assert low - 1000 <= event["ts"] <= high + 1000, "ts is not the commit time in unix ms"
    if origin is not None:
        assert event["origin"] == origin


async def test_task_events_payloads(board: Board) -> None:
    owner, member = board.user("owner"), board.user("member")
    _, pid = await board.board(owner, member)
    room = project_room(pid)
    client = await board.connect(owner)
    subscribed = await client.subscribe(room)
    epoch = subscribed["epoch"]
    base = subscribed["offset"]

    # task:created {task}
    before = now_ms()
    created = await board.task(member, pid, "Write tests", description="all of them")
    event = await client.next()
    assert_envelope(
        event,
        type="task:created",
        room=room,
        offset=base + 1,
        epoch=epoch,
        user=member,
        window=(before, now_ms()),
    )
    assert event["data"] == {"task": created, "afterId": None}

    # task:updated {task, changes}
    before = now_ms()
    updated = await board.patch(
        owner, created["id"], {"title": "Write more tests", "assigneeId": member}
    )
    event = await client.next()
    assert_envelope(
        event,
        type="task:updated",
        room=room,
        offset=base + 2,
        epoch=epoch,
        user=owner,
        window=(before, now_ms()),
    )
    assert event["data"] == {
        "task": updated,
        "changes": {
            "title": {"from": "Write tests", "to": "Write more tests"},
            "assigneeId": {"from": None, "to": member},
        },
    }
    assert updated["version"] == created["version"] + 1

    # a PATCH that changes nothing emits nothing; a partial one lists only what changed
    await board.patch(owner, created["id"], {"title": "Write more tests"})
    updated2 = await board.patch(
        owner, created["id"], {"title": "Write more tests", "description": "some"}
    )
    event = await client.next()
    assert event["type"] == "task:updated"
    assert event["offset"] == base + 3
    assert event["data"] == {
        "task": updated2,
        "changes": {"description": {"from": "all of them", "to": "some"}},
    }

    # task:moved {taskId, fromStatus, toStatus, order}
    before = now_ms()
    moved = await board.move(member, created["id"], "in_progress", order=2.5)
    event = await client.next()
    assert_envelope(
        event,
        type="task:moved",
        room=room,
        offset=base + 4,
        epoch=epoch,
        user=member,
        window=(before, now_ms()),
    )
    assert event["data"] == {
        "taskId": created["id"],
        "fromStatus": "todo",
        "toStatus": "in_progress",
        "order": 2.5,
        "rank": moved["rank"],
        "afterId": None,
    }
    assert moved["status"] == "in_progress"

    # a move to the end of a column reports the order it got
    moved2 = await board.move(member, created["id"], "done")
    event = await client.next()
    assert event["type"] == "task:moved"
    assert event["offset"] == base + 5
    assert event["data"] == {
        "taskId": created["id"],
        "fromStatus": "in_progress",
        "toStatus": "done",
        "order": moved2["order"],
        "rank": moved2["rank"],
        "afterId": None,
    }

    # task:deleted {taskId}
    before = now_ms()
    await board.delete(owner, created["id"])
    event = await client.next()
    assert_envelope(
        event,
        type="task:deleted",
        room=room,
        offset=base + 6,
        epoch=epoch,
        user=owner,
        window=(before, now_ms()),
    )
    assert event["data"] == {"taskId": created["id"]}
    assert await client.barrier() == []

    # the snapshot reflects exactly the events delivered
    snapshot = await board.snapshot(owner, pid)
    assert snapshot["offset"] == base + 6
    assert snapshot["epoch"] == epoch
    assert snapshot["tasks"] == []


async def test_failed_mutations_emit_nothing(board: Board) -> None:
    owner = board.user("owner")
    _, pid = await board.board(owner)
    client = await board.connect(owner)
    sub = await client.subscribe(project_room(pid))
    task = await board.task(owner, pid)
    await board.call(
        "PATCH", f"/api/tasks/{task['id']}", owner, {"title": "x", "version": 99}, expect=409
    )
    await board.call(
        "POST", f"/api/tasks/{task['id']}/move", owner, {"toStatus": "nope"}, expect=422
    )
    await board.call("POST", f"/api/projects/{pid}/tasks", owner, {"title": ""}, expect=422)
    await board.patch(owner, task["id"], {"title": "y"})
    events = await client.events(2)
    assert [e["type"] for e in events] == ["task:created", "task:updated"]
    assert offsets(events) == [sub["offset"] + 1, sub["offset"] + 2]
    assert await client.barrier() == []


async def test_origin_connection_id(board: Board) -> None:
    owner, member = board.user("owner"), board.user("member")
    _, pid = await board.board(owner, member)
    room = project_room(pid)
    tab = await board.connect(owner)
    other_tab = await board.connect(owner)
    peer = await board.connect(member)
    for client in (tab, other_tab, peer):
        await client.subscribe(room)

    task = await board.task(owner, pid, "mine", connection_id=tab.connection_id)
    for client in (tab, other_tab, peer):
        event = await client.next("task:created")
        assert event["origin"] == tab.connection_id
        assert event["data"]["task"] == task

    await board.patch(owner, task["id"], {"title": "still mine"}, connection_id=tab.connection_id)
    for client in (tab, other_tab, peer):
        event = await client.next("task:updated")
        assert event["origin"] == tab.connection_id

    # without the header there is no origin
    await board.patch(owner, task["id"], {"title": "no origin"})
    for client in (tab, other_tab, peer):
        event = await client.next("task:updated")
        assert "origin" not in event or event["origin"] is None


async def test_a_connection_id_of_another_user_is_refused(board: Board) -> None:
    """Every member learns the others' connection ids from events' ``origin``; naming one of
    them in ``X-Connection-Id`` would make that tab take this change for its own echo."""
    owner, member = board.user("owner"), board.user("member")
    _, pid = await board.board(owner, member)
    room = project_room(pid)
    victim = await board.connect(member)
    await victim.subscribe(room)
    mine = await board.connect(owner)
    forged = "c_anyrandomchars." + victim.connection_id.rpartition(".")[2]
    for connection_id in (victim.connection_id, forged):
        with pytest.raises(ApiError) as refused:
            await board.task(owner, pid, "not yours", connection_id=connection_id)
        assert refused.value.status == 400
        assert '"bad_request"' in str(refused.value)
    # Nothing was created: the victim's tab receives the next change, not a forged echo.
    task = await board.task(member, pid, "theirs", connection_id=victim.connection_id)
    event = await victim.next("task:created")
    assert (event["data"]["task"]["id"], event["origin"]) == (task["id"], victim.connection_id)
    # The caller's own connection, and a label of the client's own, are accepted as before.
    await board.task(owner, pid, "mine", connection_id=mine.connection_id)
    assert (await victim.next("task:created"))["origin"] == mine.connection_id
    await board.task(owner, pid, "labelled", connection_id="tab-1")
    assert (await victim.next("task:created"))["origin"] == "tab-1"


async def test_workspace_room_events(board: Board) -> None:
    owner, bob = board.user("owner"), board.user("bob")
    wid = await board.workspace(owner)
    room = workspace_room(wid)
    client = await board.connect(owner)
    sub = await client.subscribe(room)
    base, epoch = sub["offset"], sub["epoch"]

    before = now_ms()
    project = await board.project(owner, wid, "Roadmap")
    event = await client.next()
    assert_envelope(
        event,
        type="project:created",
        room=room,
        offset=base + 1,
        epoch=epoch,
        user=owner,
        window=(before, now_ms()),
    )
    assert event["data"] == {"project": project}

    before = now_ms()
    await board.add_member(owner, wid, bob, "admin")
    event = await client.next()
    assert_envelope(
        event,
        type="member:added",
        room=room,
        offset=base + 2,
        epoch=epoch,
        user=owner,
        window=(before, now_ms()),
    )
    assert event["data"] == {"userId": bob, "role": "admin"}

    before = now_ms()
    await board.remove_member(owner, wid, bob)
    event = await client.next()
    assert_envelope(
        event,
        type="member:removed",
        room=room,
        offset=base + 3,
        epoch=epoch,
        user=owner,
        window=(before, now_ms()),
    )
    assert event["data"] == {"userId": bob}

    # task events go to the project room only
    await board.task(owner, str(project["id"]))
    assert await client.barrier() == []


async def test_burst_is_gap_free_for_every_subscriber(board: Board) -> None:
    owner = board.user("owner")
    writers = [board.user(f"writer{i}") for i in range(3)]
    _, pid = await board.board(owner, *writers)
    room = project_room(pid)
    seed = [await board.task(owner, pid, f"seed{i}") for i in range(5)]
    subscribers = [await board.connect(u) for u in (owner, *writers[:2])]
    subs = [await c.subscribe(room) for c in subscribers]
    base = subs[0]["offset"]
    assert all(s["offset"] == base for s in subs)

    def mutation(i: int) -> Any:
        user = writers[i % len(writers)]
        kind = i % 4
        if kind == 0:
            return board.task(user, pid, f"burst{i}")
        if kind == 1:
            return board.patch(user, seed[i % 5]["id"], {"description": f"d{i}"})
        if kind == 2:
            return board.move(user, seed[i % 5]["id"], ["todo", "in_progress", "done"][i % 3], i)
        return board.task(user, pid, f"burst{i}", status="done")

    results = await asyncio.gather(*(mutation(i) for i in range(60)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures
    head = (await board.snapshot(owner, pid))["offset"]
    count = head - base
    assert count == 60  # every mutation changes something: one event each

    streams = [await c.events(count, wait=15) for c in subscribers]
    for stream in streams:
        assert offsets(stream) == list(range(base + 1, head + 1))
        assert all(e["epoch"] == subs[0]["epoch"] for e in stream)
    assert streams[0] == streams[1] == streams[2]
    for client in subscribers:
        assert await client.barrier() == []


async def test_burst_of_60_creates_gives_60_consecutive_offsets(board: Board) -> None:
    owner = board.user("owner")
    _, pid = await board.board(owner)
    room = project_room(pid)
    subscribers = [await board.connect(owner) for _ in range(3)]
    subs = [await c.subscribe(room) for c in subscribers]
    base = subs[0]["offset"]
    created = await asyncio.gather(*(board.task(owner, pid, f"t{i}") for i in range(60)))
    streams = [await c.events(60, wait=15) for c in subscribers]
    for stream in streams:
        assert offsets(stream) == list(range(base + 1, base + 61))
        assert {e["data"]["task"]["id"] for e in stream} == {t["id"] for t in created}
        assert all(e["type"] == "task:created" for e in stream)
    for client in subscribers:
        assert await client.barrier() == []


async def test_revoked_member_is_unsubscribed(board: Board) -> None:
    owner, member = board.user("owner"), board.user("member")
    wid, pid = await board.board(owner, member)
    proom, wroom = project_room(pid), workspace_room(wid)
    watcher = await board.connect(owner)
    await watcher.subscribe(proom)
    await watcher.subscribe(wroom)
    victim = await board.connect(member)
    await victim.subscribe(proom)
    await victim.subscribe(wroom)
    other = await board.connect(member)  # a second tab, subscribed to the project only
    await other.subscribe(proom)
    await board.task(owner, pid, "before")
    for client in (watcher, victim, other):
        await client.next("task:created")

    await board.remove_member(owner, wid, member)

    ends: dict[str, dict[str, Any]] = {}
    while len(ends) < 2:
        message = await victim.next()
        if message["type"] == "unsubscribed":
            ends[message["room"]] = message
        else:
            assert message["type"] == "member:removed", message
            assert message["data"] == {"userId": member}
    assert ends[proom] == {"type": "unsubscribed", "room": proom, "reason": "forbidden"}
    assert ends[wroom] == {"type": "unsubscribed", "room": wroom, "reason": "forbidden"}
    assert await other.next() == {"type": "unsubscribed", "room": proom, "reason": "forbidden"}

    # no later events: the watcher gets them, the removed member does not
    await board.task(owner, pid, "after")
    await board.project(owner, wid, "after")
    await watcher.next("task:created")
    await watcher.next("project:created")
    assert await victim.barrier() == []
    assert await other.barrier() == []
    # the connection stays open; subscribing again is refused
    reply = await victim.subscribe(proom)
    assert reply["type"] == "error"
    assert reply["code"] == "forbidden"
    # unsubscribing a revoked room: it is no longer subscribed
    reply = await other.request({"type": "unsubscribe", "room": proom})
    assert reply["code"] == "not_subscribed"


async def test_revocation_ends_presence(board: Board) -> None:
    owner, member = board.user("owner"), board.user("member")
    wid, pid = await board.board(owner, member)
    room = project_room(pid)
    watcher = await board.connect(owner)
    await watcher.subscribe(room)
    victim = await board.connect(member)
    await victim.subscribe(room)
    await victim.send({"type": "presence", "action": "join", "room": room})
    update = await watcher.next("presence:update")
    assert update["joined"] == [member]
    await board.remove_member(owner, wid, member)
    update = await watcher.next("presence:update")
    assert update["left"] == [member]
    assert update["users"] == []


async def test_self_removal_revokes_too(board: Board) -> None:
    owner, member = board.user("owner"), board.user("member")
    wid, pid = await board.board(owner, member)
    client: WsClient = await board.connect(member)
    await client.subscribe(project_room(pid))
    await board.remove_member(member, wid, member)
    message = await client.next("unsubscribed")
    assert message == {"type": "unsubscribed", "room": project_room(pid), "reason": "forbidden"}
