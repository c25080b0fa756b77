"""REST: tasks — create, read, edit, move, delete, versions and their events (CONTRACT §3, §4).

Every test runs on a fresh SQLite file and on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.contract import TASK_KEYS, assert_error, assert_event, now_ms, parse_utc
from tests.support.postgres import module_database_url_fixture  # noqa: F401
from tests.support.rest import Board, rest_board_fixture  # noqa: F401


async def column(board: Board, pid: str, status: str) -> list[dict[str, Any]]:
    """The tasks of one column, in ascending ``order``."""
    code, snapshot = await board.call("GET", f"/api/projects/{pid}/tasks")
    assert code == 200
    tasks = [t for t in snapshot["tasks"] if t["status"] == status]
    return sorted(tasks, key=lambda t: t["order"])


# Create and read


async def test_create_task_with_defaults(board: Board) -> None:
    wid = await board.workspace("alice", bob="member")
    project = await board.project(wid)
    before = now_ms()
    status, task = await board.call(
        "POST", f"/api/projects/{project['id']}/tasks", "bob", body={"title": "Write docs"}
    )
    assert status == 201
    assert set(task) == TASK_KEYS
    assert task["projectId"] == project["id"]
    assert task["title"] == "Write docs"
    assert task["description"] == ""
    assert task["status"] == "todo"
    assert isinstance(task["order"], int | float)
    assert task["assigneeId"] is None
    assert task["createdById"] == "bob"
    assert task["version"] == 1
    assert isinstance(task["id"], str)
    assert task["id"]
    assert parse_utc(task["createdAt"]) == parse_utc(task["updatedAt"])
    events = board.events("task:created")
    assert len(events) == 1
    assert_event(
        events[0],
        type_="task:created",
        room=f"project:{project['id']}",
        user="bob",
        data={"task": task, "afterId": None},
        after_ms=before,
    )
    assert events[0]["offset"] == 1
    status, got = await board.call("GET", f"/api/tasks/{task['id']}", "alice")
    assert (status, got) == (200, task)


async def test_create_task_with_every_field(board: Board) -> None:
    wid = await board.workspace("alice", bob="member")
    project = await board.project(wid)
    body = {
        "title": "t" * 200,
        "description": "Longer text\nwith lines",
        "status": "in_progress",
        "assigneeId": "bob",
        "order": 2.5,
    }
    status, task = await board.call(
        "POST",
        f"/api/projects/{project['id']}/tasks",
        body=body,
        headers={"X-Connection-Id": "conn-7"},
    )
    assert status == 201
    assert {k: task[k] for k in body} == body
    assert task["createdById"] == "alice"
    assert_event(
        board.events("task:created")[0],
        type_="task:created",
        room=f"project:{project['id']}",
        user="alice",
        data={"task": task, "afterId": None},
        origin="conn-7",
    )
    # The owner may be an assignee too.
    task = await board.task(project["id"], "bob", assigneeId="alice")
    assert task["assigneeId"] == "alice"


async def test_create_without_order_goes_to_the_end_of_its_column(board: Board) -> None:
    wid = await board.workspace("alice")
    project = await board.project(wid)
    pid = project["id"]
    a = await board.task(pid, title="a")
    b = await board.task(pid, title="b")
    c = await board.task(pid, title="c", order=100.5)
    d = await board.task(pid, title="d")
    assert a["order"] < b["order"] < c["order"] < d["order"]
    elsewhere = await board.task(pid, title="e", status="done")
    assert [t["id"] for t in await column(board, pid, "todo")] == [
        a["id"],
        b["id"],
        c["id"],
        d["id"],
    ]
    assert [t["id"] for t in await column(board, pid, "done")] == [elsewhere["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": 12}, "title"),
        ({"title": None}, "title"),
        ({"title": ["a"]}, "title"),
        ({"title": "ok", "status": "archived"}, "status"),
        ({"title": "ok", "status": 3}, "status"),
        ({"title": "ok", "assigneeId": "stranger"}, "assigneeId"),
        ({"title": "ok", "assigneeId": 5}, "assigneeId"),
        ({"title": "ok", "order": "first"}, "order"),
        ({"title": "ok", "order": True}, "order"),
        ({"title": "ok", "description": 1}, "description"),
    ],
    ids=[
        "title-missing",
        "title-empty",
        "title-201",
        "title-int",
        "title-null",
        "title-list",
        "status-unknown",
        "status-int",
        "assignee-not-member",
        "assignee-int",
        "order-string",
        "order-bool",
        "description-int",
    ],
)
async def test_create_task_validation(board: Board, body: dict[str, Any], field: str) -> None:
    wid = await board.workspace("alice")
    project = await board.project(wid)
    before = board.event_count()
    status, error = await board.call("POST", f"/api/projects/{project['id']}/tasks", body=body)
    assert_error(status, error, 422, "validation_error", field)
    assert board.event_count() == before
    _, snapshot = await board.call("GET", f"/api/projects/{project['id']}/tasks")
    assert snapshot["tasks"] == []
    assert snapshot["offset"] == 0


async def test_title_length_is_counted_in_characters(board: Board) -> None:
    wid = await board.workspace("alice")
    project = await board.project(wid)
    for title in ("é" * 200, "🚀" * 200, "x"):
        task = await board.task(project["id"], title=title)
        assert task["title"] == title
    status, error = await board.call(
        "POST", f"/api/projects/{project['id']}/tasks", body={"title": "🚀" * 201}
    )
    assert_error(status, error, 422, "validation_error", "title")


async def test_status_must_belong_to_the_project(board: Board) -> None:
    wid = await board.workspace("alice")
    custom = await board.project(wid, statuses=["open", "closed"])
    status, error = await board.call(
        "POST", f"/api/projects/{custom['id']}/tasks", body={"title": "x", "status": "todo"}
    )
    assert_error(status, error, 422, "validation_error", "status")
    task = await board.task(custom["id"], status="closed")
    assert task["status"] == "closed"


async def test_get_unknown_task_is_404(board: Board) -> None:
    status, error = await board.call("GET", "/api/tasks/tsk_doesnotexist")
    assert_error(status, error, 404, "not_found")


# Edit


async def test_patch_changes_fields_and_bumps_version(board: Board) -> None:
    _wid, project, task = await board.setup(bob="member")
    room = f"project:{project['id']}"
    before = now_ms()
    status, updated = await board.call(
        "PATCH",
        f"/api/tasks/{task['id']}",
        "bob",
        body={"title": "New title", "description": "details"},
        headers={"X-Connection-Id": "tab-1"},
    )
    assert status == 200
    assert set(updated) == TASK_KEYS
    assert updated["title"] == "New title"
    assert updated["description"] == "details"
    assert updated["version"] == 2
    assert updated["createdById"] == "alice"
    assert updated["createdAt"] == task["createdAt"]
    assert parse_utc(updated["updatedAt"]) >= parse_utc(task["updatedAt"])
    for key in ("id", "projectId", "status", "order", "assigneeId"):
        assert updated[key] == task[key], key
    events = board.events("task:updated")
    assert len(events) == 1
    assert_event(
        events[0],
        type_="task:updated",
        room=room,
        user="bob",
        origin="tab-1",
        after_ms=before,
        data={
            "task": updated,
            "changes": {
                "title": {"from": "A task", "to": "New title"},
                "description": {"from": "", "to": "details"},
            },
        },
    )
    assert events[0]["offset"] == 2
    status, got = await board.call("GET", f"/api/tasks/{task['id']}")
    assert (status, got) == (200, updated)


async def test_patch_assignee_set_and_cleared(board: Board) -> None:
    _wid, _project, task = await board.setup(bob="member")
    status, assigned = await board.call(
        "PATCH", f"/api/tasks/{task['id']}", body={"assigneeId": "bob"}
    )
    assert status == 200
    assert assigned["assigneeId"] == "bob"
    assert assigned["version"] == 2
    status, cleared = await board.call(
        "PATCH", f"/api/tasks/{task['id']}", body={"assigneeId": None}
    )
    assert status == 200
    assert cleared["assigneeId"] is None
    assert cleared["version"] == 3
    events = board.events("task:updated")
    assert [e["data"]["changes"] for e in events] == [
        {"assigneeId": {"from": None, "to": "bob"}},
        {"assigneeId": {"from": "bob", "to": None}},
    ]
    assert [e["data"]["task"] for e in events] == [assigned, cleared]
    assert all("origin" not in e for e in events)


async def test_patch_changes_only_what_differs(board: Board) -> None:
    _wid, _project, task = await board.setup()
    status, updated = await board.call(
        "PATCH",
        f"/api/tasks/{task['id']}",
        body={"title": task["title"], "description": "changed", "assigneeId": None},
    )
    assert status == 200
    assert updated["version"] == 2
    changes = board.events("task:updated")[0]["data"]["changes"]
    assert changes == {"description": {"from": "", "to": "changed"}}


@pytest.mark.parametrize(
    "body",
    [{}, {"title": "A task"}, {"title": "A task", "description": "", "assigneeId": None}],
    ids=["empty", "same-title", "all-same"],
)
async def test_patch_without_change_keeps_version_and_publishes_nothing(
    board: Board, body: dict[str, Any]
) -> None:
    _wid, project, task = await board.setup()
    before = board.event_count()
    status, same = await board.call("PATCH", f"/api/tasks/{task['id']}", body=body)
    assert (status, same) == (200, task)
    # With a matching version too.
    status, same = await board.call(
        "PATCH", f"/api/tasks/{task['id']}", body={**body, "version": 1}
    )
    assert (status, same) == (200, task)
    assert board.event_count() == before
    _, snapshot = await board.call("GET", f"/api/projects/{project['id']}/tasks")
    assert snapshot["offset"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "done"}, "status"),
        ({"order": 3}, "order"),
        ({"order": None}, "order"),
        ({"title": ""}, "title"),
        ({"title": "y" * 201}, "title"),
        ({"title": 1}, "title"),
        ({"title": None}, "title"),
        ({"description": False}, "description"),
        ({"assigneeId": "stranger"}, "assigneeId"),
        ({"assigneeId": 3}, "assigneeId"),
        ({"title": "ok", "version": True}, "version"),
        ({"title": "ok", "version": "1"}, "version"),
        ({"title": "ok", "version": 1.5}, "version"),
        ({"title": "ok", "version": 0}, "version"),
    ],
    ids=[
        "status",
        "order",
        "order-null",
        "title-empty",
        "title-201",
        "title-int",
        "title-null",
        "description-bool",
        "assignee-not-member",
        "assignee-int",
        "version-bool",
        "version-string",
        "version-float",
        "version-zero",
    ],
)
async def test_patch_validation(board: Board, body: dict[str, Any], field: str) -> None:
    _wid, _project, task = await board.setup()
    before = board.event_count()
    status, error = await board.call("PATCH", f"/api/tasks/{task['id']}", body=body)
    assert_error(status, error, 422, "validation_error", field)
    assert board.event_count() == before
    _, got = await board.call("GET", f"/api/tasks/{task['id']}")
    assert got == task


async def test_patch_stale_version_is_409(board: Board) -> None:
    _wid, _project, task = await board.setup()
    path = f"/api/tasks/{task['id']}"
    status, v2 = await board.call("PATCH", path, body={"title": "v2", "version": 1})
    assert status == 200
    assert v2["version"] == 2
    before = board.event_count()
    for stale in (1, 3, 99):
        status, error = await board.call("PATCH", path, body={"title": "lost", "version": stale})
        assert_error(status, error, 409, "conflict")
        status, error = await board.call(
            "PATCH", path, body={"title": "lost"}, headers={"If-Match": f'"{stale}"'}
        )
        assert_error(status, error, 409, "conflict")
    assert board.event_count() == before
    _, got = await board.call("GET", path)
    assert got == v2
    # The current version, in either form, is accepted.
    status, v3 = await board.call("PATCH", path, body={"title": "v3"}, headers={"If-Match": '"2"'})
    assert (status, v3["version"], v3["title"]) == (200, 3, "v3")
    status, v4 = await board.call("PATCH", path, body={"title": "v4"}, headers={"If-Match": "3"})
    assert (status, v4["version"]) == (200, 4)
    status, v5 = await board.call(
        "PATCH", path, body={"title": "v5"}, headers={"If-Match": 'W/"4"'}
    )
    assert (status, v5["version"]) == (200, 5)


async def test_malformed_if_match_is_400(board: Board) -> None:
    _wid, _project, task = await board.setup()
    path = f"/api/tasks/{task['id']}"
    before = board.event_count()
    for method, suffix, body in [
        ("PATCH", "", {"title": "x"}),
        ("POST", "/move", {"toStatus": "done"}),
        ("DELETE", "", None),
    ]:
        status, error = await board.call(
            method, path + suffix, body=body, headers={"If-Match": "not-a-version"}
        )
        assert_error(status, error, 400, "bad_request")
    _, got = await board.call("GET", path)
    assert got == task
    assert board.event_count() == before


# Move


async def test_move_to_another_column_goes_to_its_end(board: Board) -> None:
    _wid, project, task = await board.setup(bob="member")
    pid = project["id"]
    first = await board.task(pid, title="first done", status="done")
    second = await board.task(pid, title="second done", status="done", order=7.25)
    before = now_ms()
    status, moved = await board.call(
        "POST",
        f"/api/tasks/{task['id']}/move",
        "bob",
        body={"toStatus": "done"},
        headers={"X-Connection-Id": "tab-2"},
    )
    assert status == 200
    assert set(moved) == TASK_KEYS
    assert moved["status"] == "done"
    assert moved["order"] > second["order"]
    assert moved["version"] == 2
    assert moved["title"] == task["title"]
    assert parse_utc(moved["updatedAt"]) >= parse_utc(task["updatedAt"])
    assert [t["id"] for t in await column(board, pid, "done")] == [
        first["id"],
        second["id"],
        task["id"],
    ]
    assert await column(board, pid, "todo") == []
    events = board.events("task:moved")
    assert len(events) == 1
    assert_event(
        events[0],
        type_="task:moved",
        room=f"project:{pid}",
        user="bob",
        origin="tab-2",
        after_ms=before,
        data={
            "taskId": task["id"],
            "fromStatus": "todo",
            "toStatus": "done",
            "order": moved["order"],
            "rank": moved["rank"],
            "afterId": second["id"],
        },
    )
    status, got = await board.call("GET", f"/api/tasks/{task['id']}")
    assert (status, got) == (200, moved)


async def test_move_into_an_empty_column_and_within_a_column(board: Board) -> None:
    _wid, project, a = await board.setup()
    pid = project["id"]
    b = await board.task(pid, title="b")
    c = await board.task(pid, title="c")
    # Into an empty column.
    status, moved = await board.call(
        "POST", f"/api/tasks/{b['id']}/move", body={"toStatus": "in_progress"}
    )
    assert status == 200
    assert moved["status"] == "in_progress"
    assert isinstance(moved["order"], int | float)
    # Within its own column, without order: to the end.
    status, moved = await board.call(
        "POST", f"/api/tasks/{a['id']}/move", body={"toStatus": "todo"}
    )
    assert status == 200
    assert moved["order"] > c["order"]
    assert moved["version"] == 2
    assert [t["id"] for t in await column(board, pid, "todo")] == [c["id"], a["id"]]
    # With an explicit order: between/before others.
    status, moved = await board.call(
        "POST", f"/api/tasks/{a['id']}/move", body={"toStatus": "todo", "order": c["order"] - 0.5}
    )
    assert status == 200
    assert moved["order"] == c["order"] - 0.5
    assert moved["version"] == 3
    assert [t["id"] for t in await column(board, pid, "todo")] == [a["id"], c["id"]]
    events = board.events("task:moved")
    assert [e["data"] for e in events] == [
        {
            "taskId": b["id"],
            "fromStatus": "todo",
            "toStatus": "in_progress",
            "order": events[0]["data"]["order"],
            "rank": events[0]["data"]["rank"],
            "afterId": None,
        },
        {
            "taskId": a["id"],
            "fromStatus": "todo",
            "toStatus": "todo",
            "order": events[1]["data"]["order"],
            "rank": events[1]["data"]["rank"],
            "afterId": c["id"],
        },
        {
            "taskId": a["id"],
            "fromStatus": "todo",
            "toStatus": "todo",
            "order": c["order"] - 0.5,
            "rank": moved["rank"],
            "afterId": None,
        },
    ]
    assert [e["offset"] for e in events] == [4, 5, 6]


async def test_move_to_where_it_already_is_changes_nothing(board: Board) -> None:
    _wid, _project, task = await board.setup()
    before = board.event_count()
    # Already the last of its column: "the end of the column" is where it is.
    status, same = await board.call(
        "POST", f"/api/tasks/{task['id']}/move", body={"toStatus": "todo"}
    )
    assert (status, same) == (200, task)
    status, same = await board.call(
        "POST",
        f"/api/tasks/{task['id']}/move",
        body={"toStatus": "todo", "order": task["order"], "version": 1},
    )
    assert (status, same) == (200, task)
    assert board.event_count() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "toStatus"),
        ({"toStatus": "archived"}, "toStatus"),
        ({"toStatus": ""}, "toStatus"),
        ({"toStatus": 2}, "toStatus"),
        ({"toStatus": None}, "toStatus"),
        ({"toStatus": "done", "order": "top"}, "order"),
        ({"toStatus": "done", "order": False}, "order"),
        ({"toStatus": "done", "version": True}, "version"),
        ({"toStatus": "done", "version": "1"}, "version"),
        ({"toStatus": "done", "version": 0}, "version"),
    ],
    ids=[
        "missing",
        "unknown-status",
        "empty-status",
        "int-status",
        "null-status",
        "order-string",
        "order-bool",
        "version-bool",
        "version-string",
        "version-zero",
    ],
)
async def test_move_validation(board: Board, body: dict[str, Any], field: str) -> None:
    _wid, _project, task = await board.setup()
    before = board.event_count()
    status, error = await board.call("POST", f"/api/tasks/{task['id']}/move", body=body)
    assert_error(status, error, 422, "validation_error", field)
    assert board.event_count() == before
    _, got = await board.call("GET", f"/api/tasks/{task['id']}")
    assert got == task


async def test_move_stale_version_is_409(board: Board) -> None:
    _wid, _project, task = await board.setup()
    path = f"/api/tasks/{task['id']}/move"
    status, moved = await board.call("POST", path, body={"toStatus": "done", "version": 1})
    assert (status, moved["version"]) == (200, 2)
    before = board.event_count()
    status, error = await board.call("POST", path, body={"toStatus": "todo", "version": 1})
    assert_error(status, error, 409, "conflict")
    status, error = await board.call(
        "POST", path, body={"toStatus": "todo"}, headers={"If-Match": '"1"'}
    )
    assert_error(status, error, 409, "conflict")
    assert board.event_count() == before
    _, got = await board.call("GET", f"/api/tasks/{task['id']}")
    assert got == moved
    status, again = await board.call(
        "POST", path, body={"toStatus": "todo"}, headers={"If-Match": '"2"'}
    )
    assert (status, again["status"], again["version"]) == (200, "todo", 3)


# Delete


async def test_delete_task(board: Board) -> None:
    _wid, project, task = await board.setup(bob="member")
    before = now_ms()
    count = board.event_count()
    status, body = await board.call(
        "DELETE", f"/api/tasks/{task['id']}", "bob", headers={"X-Connection-Id": "tab-3"}
    )
    assert (status, body) == (204, None)
    events = board.events("task:deleted")
    assert len(events) == 1
    assert_event(
        events[0],
        type_="task:deleted",
        room=f"project:{project['id']}",
        user="bob",
        origin="tab-3",
        after_ms=before,
        data={"taskId": task["id"]},
    )
    assert events[0]["offset"] == 2
    status, error = await board.call("GET", f"/api/tasks/{task['id']}")
    assert_error(status, error, 404, "not_found")
    for method, suffix, body_ in [
        ("DELETE", "", None),
        ("PATCH", "", {"title": "x"}),
        ("POST", "/move", {"toStatus": "done"}),
    ]:
        status, error = await board.call(method, f"/api/tasks/{task['id']}{suffix}", body=body_)
        assert_error(status, error, 404, "not_found")
    assert board.event_count() == count + 1
    _, snapshot = await board.call("GET", f"/api/projects/{project['id']}/tasks")
    assert snapshot["tasks"] == []
    assert snapshot["offset"] == 2


async def test_delete_with_stale_if_match_is_409(board: Board) -> None:
    _wid, _project, task = await board.setup()
    path = f"/api/tasks/{task['id']}"
    await board.call("PATCH", path, body={"title": "v2"})
    before = board.event_count()
    status, error = await board.call("DELETE", path, headers={"If-Match": '"1"'})
    assert_error(status, error, 409, "conflict")
    assert board.event_count() == before
    status, got = await board.call("GET", path)
    assert (status, got["version"]) == (200, 2)
    status, body = await board.call("DELETE", path, headers={"If-Match": '"2"'})
    assert (status, body) == (204, None)
    assert board.events()[-1]["type"] == "task:deleted"


# Visibility


async def _hidden_and_missing(
    board: Board, method: str, suffix: str, body: Any, task_id: str
) -> tuple[Any, Any]:
    status, hidden = await board.call(method, f"/api/tasks/{task_id}{suffix}", "mallory", body=body)
    assert_error(status, hidden, 404, "not_found")
    status, missing = await board.call(
        method, f"/api/tasks/tsk_doesnotexist{suffix}", "mallory", body=body
    )
    assert_error(status, missing, 404, "not_found")
    return hidden, missing


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("PATCH", "", {"title": "hijacked"}),
        ("POST", "/move", {"toStatus": "done"}),
        ("DELETE", "", None),
    ],
    ids=["patch", "move", "delete"],
)
async def test_task_changes_are_404_for_non_members(
    board: Board, method: str, suffix: str, body: Any
) -> None:
    """A stranger gets exactly what a task that does not exist gives (existence not leaked)."""
    _wid, _project, task = await board.setup()
    before = board.event_count()
    hidden, missing = await _hidden_and_missing(board, method, suffix, body, task["id"])
    assert hidden == missing
    assert board.event_count() == before
    _, got = await board.call("GET", f"/api/tasks/{task['id']}")
    assert got == task


async def test_get_task_is_404_for_non_members_like_a_missing_task(board: Board) -> None:
    """The same body for a hidden task and a missing one: the message must not tell them apart."""
    _wid, _project, task = await board.setup()
    hidden, missing = await _hidden_and_missing(board, "GET", "", None, task["id"])
    assert hidden == missing


async def test_removed_member_loses_access_to_tasks(board: Board) -> None:
    wid, project, task = await board.setup(bob="member")
    status, _ = await board.call("GET", f"/api/tasks/{task['id']}", "bob")
    assert status == 200
    await board.call("DELETE", f"/api/workspaces/{wid}/members/bob", "alice")
    before = board.event_count()
    for method, suffix, body in [
        ("GET", "", None),
        ("PATCH", "", {"title": "x"}),
        ("POST", "/move", {"toStatus": "done"}),
        ("DELETE", "", None),
    ]:
        status, error = await board.call(
            method, f"/api/tasks/{task['id']}{suffix}", "bob", body=body
        )
        assert_error(status, error, 404, "not_found")
    status, error = await board.call(
        "POST", f"/api/projects/{project['id']}/tasks", "bob", body={"title": "x"}
    )
    assert_error(status, error, 404, "not_found")
    assert board.event_count() == before


# Versions over a task's life


async def test_version_grows_by_one_per_change(board: Board) -> None:
    _wid, project, task = await board.setup(bob="member")
    path = f"/api/tasks/{task['id']}"
    versions = [task["version"]]
    steps: list[tuple[str, str, dict[str, Any]]] = [
        ("PATCH", "", {"title": "one"}),
        ("POST", "/move", {"toStatus": "in_progress"}),
        ("PATCH", "", {"title": "one"}),  # no change
        ("PATCH", "", {"assigneeId": "bob", "description": "two fields"}),
        ("POST", "/move", {"toStatus": "in_progress", "order": 42.0}),
        ("POST", "/move", {"toStatus": "done", "order": 1.0}),
        ("PATCH", "", {}),  # no change
    ]
    for method, suffix, body in steps:
        status, current = await board.call(method, path + suffix, body=body)
        assert status == 200, current
        versions.append(current["version"])
    assert versions == [1, 2, 3, 3, 4, 5, 6, 6]
    events = board.events(room=f"project:{project['id']}")
    assert [e["offset"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e["data"]["task"]["version"] for e in events if "task" in e["data"]] == [1, 2, 4]
    _, snapshot = await board.call("GET", f"/api/projects/{project['id']}/tasks")
    assert snapshot["offset"] == 6
    assert snapshot["tasks"][0]["version"] == 6
