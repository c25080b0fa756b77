"""REST: projects and the task snapshot (CONTRACT §3), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.contract import (
    DEFAULT_STATUSES,
    PROJECT_KEYS,
    assert_error,
    assert_event,
    assert_recent,
    now_ms,
)
from tests.support.postgres import module_database_url_fixture  # noqa: F401
from tests.support.rest import Board, rest_board_fixture  # noqa: F401


async def test_create_project_with_default_statuses(board: Board) -> None:
    wid = await board.workspace("alice", bob="member")
    before = now_ms()
    status, project = await board.call(
        "POST", f"/api/workspaces/{wid}/projects", "bob", body={"name": "Roadmap"}
    )
    assert status == 201
    assert set(project) == PROJECT_KEYS
    assert project["workspaceId"] == wid
    assert project["name"] == "Roadmap"
    assert project["statuses"] == DEFAULT_STATUSES
    assert isinstance(project["id"], str)
    assert project["id"]
    assert_recent(project["createdAt"])
    events = board.events("project:created")
    assert len(events) == 1
    assert_event(
        events[0],
        type_="project:created",
        room=f"workspace:{wid}",
        user="bob",
        data={"project": project},
        after_ms=before,
    )


async def test_create_project_with_custom_statuses_and_origin(board: Board) -> None:
    wid = await board.workspace("alice")
    statuses = ["backlog", "doing", "review", "shipped"]
    status, project = await board.call(
        "POST",
        f"/api/workspaces/{wid}/projects",
        body={"name": "Flow", "statuses": statuses},
        headers={"X-Connection-Id": "c-42.a:b_c"},
    )
    assert status == 201
    assert project["statuses"] == statuses
    assert_event(
        board.events("project:created")[0],
        type_="project:created",
        room=f"workspace:{wid}",
        user="alice",
        data={"project": project},
        origin="c-42.a:b_c",
    )
    # Its tasks default to the first of its statuses.
    task = await board.task(project["id"])
    assert task["status"] == "backlog"


async def test_list_and_get_projects(board: Board) -> None:
    wid = await board.workspace("alice", bob="member")
    status, listed = await board.call("GET", f"/api/workspaces/{wid}/projects", "bob")
    assert (status, listed) == (200, [])
    first = await board.project(wid, name="First")
    second = await board.project(wid, "bob", name="Second", statuses=["a", "b"])
    other_wid = await board.workspace("alice")
    await board.project(other_wid, name="Elsewhere")
    status, listed = await board.call("GET", f"/api/workspaces/{wid}/projects", "bob")
    assert status == 200
    assert sorted(listed, key=lambda p: p["name"]) == [first, second]
    for project in (first, second):
        status, got = await board.call("GET", f"/api/projects/{project['id']}", "bob")
        assert (status, got) == (200, project)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "p" * 201}, "name"),
        ({"name": 3}, "name"),
        ({"name": None}, "name"),
        ({"name": "P", "statuses": []}, "statuses"),
        ({"name": "P", "statuses": ["todo", "done", "todo"]}, "statuses"),
        ({"name": "P", "statuses": "todo"}, "statuses"),
        ({"name": "P", "statuses": [1, 2]}, "statuses"),
        ({"name": "P", "statuses": ["todo", ""]}, "statuses"),
    ],
    ids=[
        "name-missing",
        "name-empty",
        "name-too-long",
        "name-int",
        "name-null",
        "statuses-empty",
        "statuses-duplicate",
        "statuses-string",
        "statuses-ints",
        "statuses-empty-item",
    ],
)
async def test_create_project_validation(board: Board, body: dict[str, Any], field: str) -> None:
    wid = await board.workspace("alice")
    before = board.event_count()
    status, error = await board.call("POST", f"/api/workspaces/{wid}/projects", body=body)
    assert_error(status, error, 422, "validation_error")
    # Items of a list may be named with their index (``statuses[1]``): still the field.
    assert str(error["error"]["details"]["field"]).startswith(field), error
    assert board.event_count() == before
    _, listed = await board.call("GET", f"/api/workspaces/{wid}/projects")
    assert listed == []


async def test_project_name_of_200_characters_is_accepted(board: Board) -> None:
    wid = await board.workspace("alice")
    project = await board.project(wid, name="p" * 200)
    assert project["name"] == "p" * 200


async def test_project_calls_are_404_for_non_members(board: Board) -> None:
    """Project reads and task creation answer a stranger as if the project did not exist."""
    wid = await board.workspace("alice")
    project = await board.project(wid)
    before = board.event_count()
    calls: list[tuple[str, str, Any]] = [
        ("GET", "/api/projects/{pid}", None),
        ("GET", "/api/projects/{pid}/tasks", None),
        ("POST", "/api/projects/{pid}/tasks", {"title": "Sneaky"}),
    ]
    for method, template, body in calls:
        path = template.format(pid=project["id"])
        status, hidden = await board.call(method, path, "mallory", body=body)
        assert_error(status, hidden, 404, "not_found")
        path = template.format(pid="prj_doesnotexist")
        status, missing = await board.call(method, path, "mallory", body=body)
        assert_error(status, missing, 404, "not_found")
        assert hidden == missing, (method, template)
        # A member asking for a project that does not exist gets the same 404.
        status, error = await board.call(method, path, "alice", body=body)
        assert_error(status, error, 404, "not_found")
    assert board.event_count() == before
    _, snapshot = await board.call("GET", f"/api/projects/{project['id']}/tasks")
    assert snapshot["tasks"] == []


async def test_snapshot_of_a_new_project(board: Board) -> None:
    wid = await board.workspace("alice")
    project = await board.project(wid)
    status, snapshot = await board.call("GET", f"/api/projects/{project['id']}/tasks")
    assert status == 200
    assert set(snapshot) == {"tasks", "offset", "epoch"}
    assert snapshot["tasks"] == []
    # project:created goes to the workspace room; the project room starts empty.
    assert snapshot["offset"] == 0
    assert isinstance(snapshot["epoch"], str)
    assert snapshot["epoch"]


async def test_snapshot_offset_counts_the_task_events(board: Board) -> None:
    wid = await board.workspace("alice", bob="member")
    project = await board.project(wid)
    pid = project["id"]
    room = f"project:{pid}"

    async def snapshot() -> dict[str, Any]:
        status, body = await board.call("GET", f"/api/projects/{pid}/tasks", "bob")
        assert status == 200
        return dict(body)

    first = await snapshot()
    a = await board.task(pid, title="A")
    b = await board.task(pid, "bob", title="B", status="done")
    await board.call("PATCH", f"/api/tasks/{a['id']}", body={"title": "A2"})
    await board.call("PATCH", f"/api/tasks/{a['id']}", body={"title": "A2"})  # no change
    await board.call("POST", f"/api/tasks/{b['id']}/move", body={"toStatus": "todo"})
    c = await board.task(pid, title="C")
    await board.call("DELETE", f"/api/tasks/{c['id']}")
    # Events of another project and of the workspace room do not count.
    other = await board.project(wid)
    await board.task(other["id"])

    events = board.events(room=room)
    assert [e["type"] for e in events] == [
        "task:created",
        "task:created",
        "task:updated",
        "task:moved",
        "task:created",
        "task:deleted",
    ]
    assert [e["offset"] for e in events] == [1, 2, 3, 4, 5, 6]
    last = await snapshot()
    assert last["offset"] == 6
    assert last["epoch"] == first["epoch"]
    assert {e["epoch"] for e in events} == {first["epoch"]}
    by_id = {t["id"]: t for t in last["tasks"]}
    assert set(by_id) == {a["id"], b["id"]}
    assert by_id[a["id"]]["title"] == "A2"
    assert by_id[b["id"]]["status"] == "todo"
    for task in last["tasks"]:
        status, got = await board.call("GET", f"/api/tasks/{task['id']}")
        assert (status, got) == (200, task)
