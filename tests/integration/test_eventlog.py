"""The event log under concurrency and restarts (CONTRACT §3 snapshot, §5.1), through REST.

Concurrent task mutations on one project must commit offsets 1..n with no gap and no duplicate,
both as published and as stored; every snapshot must be exactly the replay of the events up to
its offset; offsets and epochs must survive a restart and be shared by several instances.
Each test runs on a fresh SQLite file and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import msgspec
from aiohttp.test_utils import TestClient

from liveboard.events import RecordingPublisher
from liveboard.protocol import BrokerEvent, encode_event, project_room, workspace_room
from liveboard.store.admission import admit_project, admit_workspace
from liveboard.store.database import Database
from liveboard.store.eventlog import read_events, room_position
from tests.support.app import AppClientFactory, make_settings
from tests.support.postgres import module_database_url_fixture  # noqa: F401
from tests.support.tokens import auth

Client = TestClient[Any, Any]
CHAINS = 10  # each chain makes 5 changes to its own task: 50 in all
MEMBERS = [f"member{k}" for k in range(CHAINS)]
READERS = ["reader1", "reader2", "reader3"]


async def request(client: Client, method: str, path: str, user: str, body: Any = None) -> Any:
    async with client.request(method, path, json=body, headers=auth(user)) as response:
        text = await response.text()
        assert response.status < 300, (method, path, response.status, text)
        return await response.json() if response.status != 204 else None


async def make_project(client: Client, users: list[str]) -> tuple[str, str]:
    ws = await request(client, "POST", "/api/workspaces", "alice", {"name": "Concurrency"})
    for user in users:
        await request(
            client, "POST", f"/api/workspaces/{ws['id']}/members", "alice", {"userId": user}
        )
    project = await request(
        client, "POST", f"/api/workspaces/{ws['id']}/projects", "alice", {"name": "P"}
    )
    return str(ws["id"]), str(project["id"])


async def chain(client: Client, pid: str, k: int, user: str) -> list[int]:
    """Create a task, then edit and move it; even chains end by deleting it. Returns versions."""
    task = await request(client, "POST", f"/api/projects/{pid}/tasks", user, {"title": f"task {k}"})
    path = f"/api/tasks/{task['id']}"
    versions = [task["version"]]
    current = await request(client, "PATCH", path, user, {"title": f"task {k} renamed"})
    versions.append(current["version"])
    current = await request(client, "POST", f"{path}/move", user, {"toStatus": "in_progress"})
    versions.append(current["version"])
    current = await request(client, "PATCH", path, user, {"description": f"chain {k}"})
    versions.append(current["version"])
    if k % 2 == 0:
        await request(client, "DELETE", path, user)
    else:
        current = await request(client, "POST", f"{path}/move", user, {"toStatus": "done"})
        versions.append(current["version"])
    return versions


async def stored_events(database_url: str, room: str) -> list[BrokerEvent]:
    db = Database(database_url)
    try:
        async with db.read() as conn:
            return await read_events(conn, room, after=0, limit=10_000)
    finally:
        await db.aclose()


def replay(events: list[dict[str, Any]], up_to: int) -> dict[str, dict[str, Any]]:
    """The tasks that the events with offset ≤ ``up_to`` describe (``updatedAt`` left out)."""
    tasks: dict[str, dict[str, Any]] = {}
    for event in sorted(events, key=lambda e: e["offset"]):
        if event["offset"] > up_to:
            break
        data = event["data"]
        if event["type"] in ("task:created", "task:updated"):
            tasks[data["task"]["id"]] = copy.deepcopy(data["task"])
        elif event["type"] == "task:moved":
            task = tasks[data["taskId"]]
            assert task["status"] == data["fromStatus"], event
            task.update(
                status=data["toStatus"],
                order=data["order"],
                rank=data["rank"],
                version=task["version"] + 1,
            )
        elif event["type"] == "task:deleted":
            del tasks[data["taskId"]]
        else:
            raise AssertionError(f"unexpected event in a project room: {event}")
    for task in tasks.values():
        task.pop("updatedAt")
    return tasks


def without_updated_at(tasks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["id"]: {k: v for k, v in t.items() if k != "updatedAt"} for t in tasks}


def wire(events: list[BrokerEvent]) -> list[dict[str, Any]]:
    import json

    return [json.loads(encode_event(e)) for e in events]


async def test_concurrent_mutations_get_offsets_1_to_50(
    database_url: str, app_client_factory: AppClientFactory
) -> None:
    publisher = RecordingPublisher()
    client = await app_client_factory(make_settings(database_url), publisher=publisher)
    _, pid = await make_project(client, MEMBERS + READERS)
    room = f"project:{pid}"
    done = asyncio.Event()
    snapshots: list[dict[str, Any]] = []

    async def reader(user: str) -> None:
        while not done.is_set():
            snapshots.append(await request(client, "GET", f"/api/projects/{pid}/tasks", user))
            await asyncio.sleep(0)

    async def writers() -> list[list[int]]:
        try:
            return list(
                await asyncio.gather(*(chain(client, pid, k, MEMBERS[k]) for k in range(CHAINS)))
            )
        finally:
            done.set()

    versions, *_ = await asyncio.gather(writers(), *(reader(user) for user in READERS))

    # Each task's versions grew by exactly one per change, whatever the interleaving.
    assert versions is not None
    for k, seen in enumerate(versions):
        assert seen == list(range(1, len(seen) + 1)), (k, seen)

    published = [e for e in publisher.events if e.room == room]
    assert sorted(e.offset for e in published) == list(range(1, 51))
    assert len({e.epoch for e in published}) == 1
    epoch = published[0].epoch

    stored = await stored_events(database_url, room)
    assert [e.offset for e in stored] == list(range(1, 51))
    assert {e.epoch for e in stored} == {epoch}
    # What was published is exactly what was stored, apart from the workspace room's head that
    # each published event names for the other instances (not stored: ``workspace_offset``).
    assert all(e.workspace_offset > 0 for e in published)
    unnamed = [msgspec.structs.replace(e, workspace_offset=0) for e in published]
    assert sorted(unnamed, key=lambda e: e.offset) == stored
    kinds = ("created", "updated", "moved", "deleted")
    counts = {kind: sum(e.type == f"task:{kind}" for e in stored) for kind in kinds}
    assert counts == {"created": 10, "updated": 20, "moved": 15, "deleted": 5}

    events = wire(stored)
    final = await request(client, "GET", f"/api/projects/{pid}/tasks", "alice")
    assert final["offset"] == 50
    assert final["epoch"] == epoch
    assert len(final["tasks"]) == 5
    assert without_updated_at(final["tasks"]) == replay(events, 50)

    assert snapshots, "no snapshot was taken"
    assert any(0 < s["offset"] < 50 for s in snapshots), "no snapshot was taken mid-way"
    for snapshot in snapshots:
        assert snapshot["epoch"] == epoch
        assert 0 <= snapshot["offset"] <= 50
        assert without_updated_at(snapshot["tasks"]) == replay(events, snapshot["offset"]), (
            f"snapshot at offset {snapshot['offset']} is not the replay of its events"
        )


async def test_events_are_published_in_offset_order(
    database_url: str, app_client_factory: AppClientFactory
) -> None:
    """The service hands committed events to the publisher in commit (= offset) order."""
    publisher = RecordingPublisher()
    client = await app_client_factory(make_settings(database_url), publisher=publisher)
    _, pid = await make_project(client, MEMBERS)
    await asyncio.gather(*(chain(client, pid, k, MEMBERS[k]) for k in range(CHAINS)))
    offsets = [e.offset for e in publisher.events if e.room == f"project:{pid}"]
    assert sorted(offsets) == list(range(1, 51))
    assert offsets == sorted(offsets), f"published out of offset order: {offsets}"


async def test_offsets_and_epoch_survive_a_restart(
    database_url: str, app_client_factory: AppClientFactory
) -> None:
    settings = make_settings(database_url)
    first_publisher = RecordingPublisher()
    first = await app_client_factory(settings, publisher=first_publisher)
    wid, pid = await make_project(first, ["bob"])
    a = await request(first, "POST", f"/api/projects/{pid}/tasks", "alice", {"title": "a"})
    await request(first, "POST", f"/api/projects/{pid}/tasks", "bob", {"title": "b"})
    await request(first, "PATCH", f"/api/tasks/{a['id']}", "alice", {"title": "a2"})
    before = await request(first, "GET", f"/api/projects/{pid}/tasks", "alice")
    assert before["offset"] == 3
    workspace_offsets = [e.offset for e in first_publisher.events if e.room == f"workspace:{wid}"]
    assert workspace_offsets == [1, 2]  # member:added, project:created
    await first.close()

    second_publisher = RecordingPublisher()
    second = await app_client_factory(settings, publisher=second_publisher)
    after = await request(second, "GET", f"/api/projects/{pid}/tasks", "bob")
    assert after == before
    await request(second, "POST", f"/api/tasks/{a['id']}/move", "bob", {"toStatus": "done"})
    await request(second, "POST", f"/api/workspaces/{wid}/members", "alice", {"userId": "carol"})
    task_events = [e for e in second_publisher.events if e.room == f"project:{pid}"]
    assert [(e.type, e.offset, e.epoch) for e in task_events] == [
        ("task:moved", 4, before["epoch"])
    ]
    ws_events = [e for e in second_publisher.events if e.room == f"workspace:{wid}"]
    assert [(e.type, e.offset) for e in ws_events] == [("member:added", 3)]
    assert ws_events[0].epoch == first_publisher.events[0].epoch

    stored = await stored_events(database_url, f"project:{pid}")
    assert [e.offset for e in stored] == [1, 2, 3, 4]
    assert {e.epoch for e in stored} == {before["epoch"]}
    latest = await request(second, "GET", f"/api/projects/{pid}/tasks", "alice")
    assert (latest["offset"], latest["epoch"]) == (4, before["epoch"])


async def test_two_instances_share_one_gap_free_log(
    database_url: str, app_client_factory: AppClientFactory
) -> None:
    """Two servers on one database (CONTRACT §1: several processes) interleave their offsets."""
    settings = make_settings(database_url)
    publishers = [RecordingPublisher(), RecordingPublisher()]
    clients = [await app_client_factory(settings, publisher=p) for p in publishers]
    _, pid = await make_project(clients[0], MEMBERS)
    await asyncio.gather(*(chain(clients[k % 2], pid, k, MEMBERS[k]) for k in range(CHAINS)))
    room = f"project:{pid}"
    per_instance = [[e for e in p.events if e.room == room] for p in publishers]
    assert all(per_instance), "both instances should have committed changes"
    published = sorted(per_instance[0] + per_instance[1], key=lambda e: e.offset)
    assert [e.offset for e in published] == list(range(1, 51))
    stored = await stored_events(database_url, room)
    assert stored == [msgspec.structs.replace(e, workspace_offset=0) for e in published]
    snapshots = [await request(c, "GET", f"/api/projects/{pid}/tasks", "alice") for c in clients]
    assert snapshots[0] == snapshots[1]
    assert snapshots[0]["offset"] == 50
    assert without_updated_at(snapshots[0]["tasks"]) == replay(wire(stored), 50)


async def test_admission_reads_membership_and_both_heads_in_one_query(
    database_url: str, app_client_factory: AppClientFactory
) -> None:
    client = await app_client_factory(make_settings(database_url))
    wid, pid = await make_project(client, ["bob"])
    await request(client, "POST", f"/api/projects/{pid}/tasks", "bob", {"title": "t"})
    db = Database(database_url)
    try:
        async with db.read() as conn:
            project = await admit_project(conn, pid, project_room(pid), "bob")
            workspace = await admit_workspace(conn, wid, workspace_room(wid), "bob")
            stranger = await admit_project(conn, pid, project_room(pid), "mallory")
            missing = await admit_project(conn, "p_missing", project_room("p_missing"), "bob")
            outsider = await admit_workspace(conn, wid, workspace_room(wid), "mallory")
            heads = {
                name: await room_position(conn, name)
                for name in (project_room(pid), workspace_room(wid))
            }
    finally:
        await db.aclose()
    assert project is not None
    assert workspace is not None
    assert project.workspace_id == workspace.workspace_id == wid
    assert project.position == heads[project_room(pid)]
    assert project.position.offset == 1  # the task's task:created
    assert project.workspace_head == workspace.position == heads[workspace_room(wid)]
    assert workspace.workspace_head == workspace.position
    assert (stranger, missing, outsider) == (None, None, None)
