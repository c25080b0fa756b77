"""Recovery with ``since`` (CONTRACT §4 ``subscribe``, §5.2, §5.3).

A subscribe with ``since: {offset, epoch}`` taken from the snapshot (``GET
/api/projects/{pid}/tasks``) gets ``subscribed`` with ``recovered: true``, then every event with
a later offset, in order, once, then live events, for at least the last 1,000 events of the room.
A wrong epoch, a position older than the history or ahead of the room gives ``recovered:
false`` (refetch the snapshot).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.board import Board
from tests.support.contract import offsets, project_room, workspace_room
from tests.support.servers import LiveboardProcess

HISTORY = 1000


def since(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {"offset": snapshot["offset"], "epoch": snapshot["epoch"]}


FIELDS = ("id", "title", "description", "status", "order", "rank", "assigneeId")


def board_state(tasks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["id"]: {f: t[f] for f in FIELDS} for t in tasks}


def apply(state: dict[str, dict[str, Any]], event: dict[str, Any]) -> None:
    """Apply one task event to a board state, as a client would."""
    data = event["data"]
    if event["type"] in ("task:created", "task:updated"):
        task = data["task"]
        state[task["id"]] = {f: task[f] for f in FIELDS}
    elif event["type"] == "task:moved":
        state[data["taskId"]].update(
            status=data["toStatus"], order=data["order"], rank=data["rank"]
        )
    elif event["type"] == "task:deleted":
        del state[data["taskId"]]
    else:
        raise AssertionError(f"unexpected event {event}")


async def test_since_replays_missed_events_then_live(board: Board) -> None:
    owner = board.user("owner")
    _, pid = await board.board(owner)
    room = project_room(pid)
    reference = await board.connect(owner)
    await reference.subscribe(room)
    for i in range(3):
        await board.task(owner, pid, f"old{i}")
    snapshot = await board.snapshot(owner, pid)
    assert snapshot["offset"] == 3
    first = await board.task(owner, pid, "missed1")
    await board.patch(owner, first["id"], {"title": "missed2"})
    await board.move(owner, first["id"], "done")
    await board.delete(owner, first["id"])
    await board.task(owner, pid, "missed5")
    expected = (await reference.events(8))[3:]
    assert offsets(expected) == [4, 5, 6, 7, 8]

    client = await board.connect(owner)
    reply = await client.subscribe(room, since(snapshot))
    assert reply["type"] == "subscribed"
    assert reply["room"] == room
    assert reply["recovered"] is True
    assert reply["offset"] == 8
    assert reply["epoch"] == snapshot["epoch"]
    assert await client.events(5) == expected
    await board.task(owner, pid, "live")
    live = await client.next()
    assert live["type"] == "task:created"
    assert live["offset"] == 9
    assert live == await reference.next("task:created")
    assert await client.barrier() == []


async def test_since_current_offset_replays_nothing(board: Board) -> None:
    owner = board.user("owner")
    _, pid = await board.board(owner)
    await board.task(owner, pid)
    snapshot = await board.snapshot(owner, pid)
    client = await board.connect(owner)
    reply = await client.subscribe(project_room(pid), since(snapshot))
    assert reply["recovered"] is True
    assert reply["offset"] == snapshot["offset"]
    assert await client.barrier() == []
    await board.task(owner, pid)
    assert (await client.next())["offset"] == snapshot["offset"] + 1


async def test_since_zero_on_a_new_room(board: Board) -> None:
    owner = board.user("owner")
    _, pid = await board.board(owner)
    snapshot = await board.snapshot(owner, pid)
    assert snapshot["offset"] == 0
    assert snapshot["tasks"] == []
    await board.task(owner, pid, "a")
    await board.task(owner, pid, "b")
    client = await board.connect(owner)
    reply = await client.subscribe(project_room(pid), since(snapshot))
    assert reply["recovered"] is True
    events = await client.events(2)
    assert offsets(events) == [1, 2]
    assert [e["data"]["task"]["title"] for e in events] == ["a", "b"]


async def test_resubscribe_with_since_on_the_same_connection(board: Board) -> None:
    owner = board.user("owner")
    _, pid = await board.board(owner)
    room = project_room(pid)
    client = await board.connect(owner)
    await client.subscribe(room)
    for i in range(4):
        await board.task(owner, pid, f"t{i}")
    seen = await client.events(4)
    epoch = seen[0]["epoch"]
    reply = await client.subscribe(room, {"offset": 2, "epoch": epoch})
    assert reply["type"] == "subscribed"
    assert reply["recovered"] is True
    assert reply["offset"] == 4
    assert await client.events(2) == seen[2:]
    await board.task(owner, pid, "live")
    assert (await client.next())["offset"] == 5
    assert await client.barrier() == []


async def test_recovery_during_a_burst_is_gap_free(board: Board) -> None:
    owner = board.user("owner")
    writers = [board.user(f"w{i}") for i in range(2)]
    _, pid = await board.board(owner, *writers)
    room = project_room(pid)
    reference = await board.connect(owner)
    await reference.subscribe(room)
    tasks = [await board.task(owner, pid, f"seed{i}") for i in range(10)]
    snapshot = await board.snapshot(owner, pid)
    # missed while "offline"
    for i in range(20):
        await board.patch(writers[i % 2], tasks[i % 10]["id"], {"description": f"offline{i}"})

    counter = itertools.count()

    async def mutate() -> None:
        i = next(counter)
        user = writers[i % 2]
        if i % 3 == 0:
            await board.task(user, pid, f"burst{i}")
        elif i % 3 == 1:
            await board.patch(user, tasks[i % 10]["id"], {"title": f"burst{i}"})
        else:
            await board.move(user, tasks[i % 10]["id"], "in_progress", order=float(i))

    burst = asyncio.gather(*(mutate() for _ in range(60)))
    # let the burst get going, then reconnect and resubscribe while it runs
    early = await reference.events(33)
    client = await board.connect(owner)
    reply = await client.subscribe(room, since(snapshot))
    await burst
    head = (await board.snapshot(owner, pid))["offset"]
    assert head == snapshot["offset"] + 80

    assert reply["type"] == "subscribed"
    assert reply["recovered"] is True
    assert snapshot["offset"] + 20 < reply["offset"] <= head
    assert reply["offset"] < head, "the burst ended before the resubscribe: nothing was tested"
    received = await client.events(head - snapshot["offset"], wait=15)
    assert offsets(received) == list(range(snapshot["offset"] + 1, head + 1))
    reference_stream = early + await reference.events(head - len(early), wait=15)
    assert offsets(reference_stream) == list(range(1, head + 1))
    assert received == reference_stream[snapshot["offset"] :]
    assert await client.barrier() == []

    # the snapshot plus the replayed events is the final board
    state = board_state(snapshot["tasks"])
    for event in received:
        apply(state, event)
    assert state == board_state((await board.snapshot(owner, pid))["tasks"])


async def test_snapshot_taken_mid_burst_plus_recovery_is_consistent(board: Board) -> None:
    owner = board.user("owner")
    writers = [board.user(f"w{i}") for i in range(2)]
    _, pid = await board.board(owner, *writers)
    tasks = [await board.task(owner, pid, f"seed{i}") for i in range(6)]

    async def mutate(i: int) -> None:
        user = writers[i % 2]
        if i % 4 == 0:
            await board.task(user, pid, f"n{i}", status="done")
        elif i % 4 == 1:
            await board.patch(user, tasks[i % 6]["id"], {"description": f"d{i}"})
        elif i % 4 == 2:
            await board.move(user, tasks[i % 6]["id"], ["todo", "done"][i % 2], order=float(i))
        else:
            await board.patch(user, tasks[i % 6]["id"], {"assigneeId": user})

    burst = asyncio.gather(*(mutate(i) for i in range(50)))
    await asyncio.sleep(0)
    snapshots = []
    for _ in range(3):  # snapshots taken while the writes land
        snapshots.append(await board.snapshot(owner, pid))
    await burst
    final = await board.snapshot(owner, pid)
    for snapshot in snapshots:
        client = await board.connect(owner)
        reply = await client.subscribe(project_room(pid), since(snapshot))
        assert reply["recovered"] is True
        state = board_state(snapshot["tasks"])
        events = await client.events(final["offset"] - snapshot["offset"])
        assert offsets(events) == list(range(snapshot["offset"] + 1, final["offset"] + 1))
        for event in events:
            apply(state, event)
        assert state == board_state(final["tasks"])
        await client.close()


async def test_wrong_epoch_is_not_recovered(board: Board) -> None:
    owner = board.user("owner")
    _, pid = await board.board(owner)
    for i in range(3):
        await board.task(owner, pid, f"t{i}")
    snapshot = await board.snapshot(owner, pid)
    client = await board.connect(owner)
    reply = await client.subscribe(
        project_room(pid), {"offset": 1, "epoch": snapshot["epoch"] + "x"}
    )
    assert reply["type"] == "subscribed"
    assert reply["recovered"] is False
    assert reply["offset"] == snapshot["offset"]
    assert reply["epoch"] == snapshot["epoch"]
    assert await client.barrier() == []  # nothing replayed from another lineage
    await board.task(owner, pid, "live")
    live = await client.next()
    assert live["offset"] == snapshot["offset"] + 1


async def test_since_ahead_of_the_room_is_not_recovered(board: Board) -> None:
    owner = board.user("owner")
    _, pid = await board.board(owner)
    await board.task(owner, pid)
    snapshot = await board.snapshot(owner, pid)
    client = await board.connect(owner)
    reply = await client.subscribe(
        project_room(pid), {"offset": snapshot["offset"] + 5, "epoch": snapshot["epoch"]}
    )
    assert reply["type"] == "subscribed"
    assert reply["recovered"] is False
    assert reply["offset"] == snapshot["offset"]
    assert await client.barrier() == []
    await board.task(owner, pid, "live")
    assert (await client.next())["offset"] == snapshot["offset"] + 1


async def test_history_covers_the_last_1000_events(board: Board) -> None:
    owner = board.user("owner")
    writers = [board.user(f"w{i}") for i in range(8)]  # REST rate limits are per user
    _, pid = await board.board(owner, *writers)
    task = await board.task(owner, pid, "hot")
    start = await board.snapshot(owner, pid)  # offset 1
    limit = asyncio.Semaphore(16)
    counter = itertools.count()

    async def edit() -> None:
        i = next(counter)
        async with limit:
            await board.patch(writers[i % len(writers)], task["id"], {"description": f"v{i}"})

    await asyncio.gather(*(edit() for _ in range(HISTORY + 1)))
    head = await board.snapshot(owner, pid)
    assert head["offset"] == start["offset"] + HISTORY + 1

    # 1,001 events back: beyond the guaranteed history → recovered false (or fully replayed)
    old = await board.connect(owner)
    reply = await old.subscribe(project_room(pid), since(start))
    assert reply["type"] == "subscribed"
    assert reply["offset"] == head["offset"]
    if reply["recovered"] is not False:
        # a server may keep more history than required; then it must replay all of it
        events = await old.events(HISTORY + 1, wait=20)
        assert offsets(events) == list(range(start["offset"] + 1, head["offset"] + 1))
    else:
        assert await old.barrier() == []

    # exactly 1,000 events back: guaranteed → recovered true with all 1,000, in order
    client = await board.connect(owner)
    position = {"offset": head["offset"] - HISTORY, "epoch": head["epoch"]}
    reply = await client.subscribe(project_room(pid), position)
    assert reply["recovered"] is True
    events = await client.events(HISTORY, wait=20)
    assert offsets(events) == list(range(position["offset"] + 1, head["offset"] + 1))
    assert (
        events[-1]["data"]["task"]["description"]
        == (await board.call("GET", f"/api/tasks/{task['id']}", owner))["description"]
    )
    assert await client.barrier() == []
    await board.patch(owner, task["id"], {"title": "live"})
    assert (await client.next())["offset"] == head["offset"] + 1


async def test_workspace_room_recovery(board: Board) -> None:
    owner = board.user("owner")
    wid = await board.workspace(owner)
    room = workspace_room(wid)
    client = await board.connect(owner)
    first = await client.subscribe(room)
    assert (await client.request({"type": "unsubscribe", "room": room}))["type"] == "unsubscribed"
    p1 = await board.project(owner, wid, "one")
    await board.add_member(owner, wid, board.user("bob"))
    p2 = await board.project(owner, wid, "two")
    reply = await client.subscribe(room, {"offset": first["offset"], "epoch": first["epoch"]})
    assert reply["recovered"] is True
    assert reply["offset"] == first["offset"] + 3
    events = await client.events(3)
    assert offsets(events) == [first["offset"] + i for i in (1, 2, 3)]
    assert [e["type"] for e in events] == ["project:created", "member:added", "project:created"]
    assert events[0]["data"] == {"project": p1}
    assert events[2]["data"] == {"project": p2}
    assert await client.barrier() == []


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
async def test_offsets_survive_a_restart(
    server_factory: Callable[..., LiveboardProcess], stop: str
) -> None:
    first = server_factory()
    async with Board(first) as board:
        owner = board.user("owner")
        _, pid = await board.board(owner)
        for i in range(3):
            await board.task(owner, pid, f"before{i}")
        snapshot = await board.snapshot(owner, pid)
        client = await board.connect(owner)
        await client.subscribe(project_room(pid))
        await board.task(owner, pid, "missed")
        await client.next("task:created")
    if stop == "sigterm":
        assert first.terminate() == 0
    else:
        first.kill()

    second = server_factory(port=first.port)  # same database file, same address
    async with Board(second) as board:
        client = await board.connect(owner)
        reply = await client.subscribe(project_room(pid), since(snapshot))
        assert reply["recovered"] is True
        assert reply["epoch"] == snapshot["epoch"]
        assert reply["offset"] == snapshot["offset"] + 1
        missed = await client.next()
        assert missed["offset"] == snapshot["offset"] + 1
        assert missed["data"]["task"]["title"] == "missed"
        await board.task(owner, pid, "after")
        live = await client.next()
        assert live["offset"] == snapshot["offset"] + 2
        assert live["epoch"] == snapshot["epoch"]
