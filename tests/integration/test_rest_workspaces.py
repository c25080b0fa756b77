"""REST: workspaces, members, request plumbing (bodies, limits, errors) and service endpoints.

CONTRACT §3. Every test runs on a fresh SQLite file and on PostgreSQL (``settings`` fixture).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from tests.support.contract import WORKSPACE_KEYS, assert_error, assert_event, assert_recent, now_ms
from tests.support.postgres import module_database_url_fixture  # noqa: F401
from tests.support.rest import Board, rest_board_fixture  # noqa: F401
from tests.support.tokens import auth, unique

# Workspaces


async def test_create_workspace_makes_caller_owner(board: Board) -> None:
    status, ws = await board.call("POST", "/api/workspaces", "alice", body={"name": "Team A"})
    assert status == 201
    assert set(ws) == WORKSPACE_KEYS
    assert ws["name"] == "Team A"
    assert isinstance(ws["id"], str)
    assert ws["id"]
    assert_recent(ws["createdAt"])
    status, members = await board.call("GET", f"/api/workspaces/{ws['id']}/members", "alice")
    assert status == 200
    assert members == [{"userId": "alice", "role": "owner"}]
    # Creating a workspace publishes nothing (CONTRACT §3 lists no event for it).
    assert board.events() == []


async def test_list_workspaces_returns_only_the_callers(board: Board) -> None:
    alice, bob = unique("alice"), unique("bob")
    status, listed = await board.call("GET", "/api/workspaces", alice)
    assert (status, listed) == (200, [])
    _, first = await board.call("POST", "/api/workspaces", alice, body={"name": "One"})
    _, second = await board.call("POST", "/api/workspaces", alice, body={"name": "Two"})
    _, other = await board.call("POST", "/api/workspaces", bob, body={"name": "Bob's"})
    status, listed = await board.call("GET", "/api/workspaces", alice)
    assert status == 200
    assert sorted(listed, key=lambda w: w["name"]) == [first, second]
    status, listed = await board.call("GET", "/api/workspaces", bob)
    assert (status, listed) == (200, [other])
    # Once added, the workspace shows up for the new member.
    await board.call("POST", f"/api/workspaces/{other['id']}/members", bob, body={"userId": alice})
    _, listed = await board.call("GET", "/api/workspaces", alice)
    assert {w["id"] for w in listed} == {first["id"], second["id"], other["id"]}


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": "x" * 201}, {"name": 5}, {"name": None}, {"name": ["a"]}],
    ids=["missing", "empty", "too-long", "int", "null", "list"],
)
async def test_create_workspace_rejects_invalid_name(board: Board, body: dict[str, Any]) -> None:
    alice = unique("alice")
    status, error = await board.call("POST", "/api/workspaces", alice, body=body)
    assert_error(status, error, 422, "validation_error", "name")
    _, listed = await board.call("GET", "/api/workspaces", alice)
    assert listed == []


async def test_workspace_name_of_200_characters_is_accepted(board: Board) -> None:
    status, ws = await board.call("POST", "/api/workspaces", "alice", body={"name": "x" * 200})
    assert status == 201
    assert ws["name"] == "x" * 200


# Bodies and plumbing


@pytest.mark.parametrize(
    "raw",
    ["{not json", '{"name": "a"', "[]", '"name"', "42", "null", ""],
    ids=["malformed", "truncated", "array", "string", "number", "null", "empty"],
)
async def test_bad_bodies_are_400(board: Board, raw: str) -> None:
    wid = await board.workspace("alice")
    project = await board.project(wid)
    task = await board.task(project["id"])
    before = board.event_count()
    for method, path in [
        ("POST", "/api/workspaces"),
        ("POST", f"/api/workspaces/{wid}/members"),
        ("POST", f"/api/workspaces/{wid}/projects"),
        ("POST", f"/api/projects/{project['id']}/tasks"),
        ("PATCH", f"/api/tasks/{task['id']}"),
        ("POST", f"/api/tasks/{task['id']}/move"),
    ]:
        status, error = await board.call(method, path, "alice", raw=raw)
        assert_error(status, error, 400, "bad_request")
    assert board.event_count() == before


async def test_body_over_one_mebibyte_is_413(board: Board) -> None:
    wid = await board.workspace("alice")
    project = await board.project(wid)
    huge = '{"title": "t", "description": "' + "x" * (1024 * 1024 + 10) + '"}'
    status, error = await board.call("POST", f"/api/projects/{project['id']}/tasks", raw=huge)
    assert_error(status, error, 413, "payload_too_large")
    status, snapshot = await board.call("GET", f"/api/projects/{project['id']}/tasks")
    assert status == 200
    assert snapshot["tasks"] == []
    # The server is still fine afterwards.
    status, _ = await board.call("GET", "/api/workspaces")
    assert status == 200


async def test_unknown_routes_are_404_json(board: Board) -> None:
    status, error = await board.call("GET", "/api/no-such-thing", "alice")
    assert_error(status, error, 404, "not_found")
    status, error = await board.call("GET", "/no/such/page", None)
    assert_error(status, error, 404, "not_found")
    status, error = await board.call("POST", "/api/workspaces/x/y/z", "alice", body={})
    assert_error(status, error, 404, "not_found")


async def test_invalid_connection_id_is_400(board: Board) -> None:
    alice = unique("alice")
    status, error = await board.call(
        "POST",
        "/api/workspaces",
        alice,
        body={"name": "Team"},
        headers={"X-Connection-Id": "not a valid id!"},
    )
    assert_error(status, error, 400, "bad_request")
    _, listed = await board.call("GET", "/api/workspaces", alice)
    assert listed == []


async def test_rate_limit_answers_429(board: Board) -> None:
    headers = auth("hasty")

    async def hit() -> tuple[int, Any]:
        async with board.client.get("/api/no-such-thing", headers=headers) as response:
            return response.status, await response.json()

    results = await asyncio.gather(*(hit() for _ in range(500)))
    limited = [body for status, body in results if status == 429]
    assert limited, "500 requests at once from one user were never rate limited"
    assert_error(429, limited[0], 429, "rate_limited")
    assert {status for status, _ in results} <= {404, 429}
    # Another user is not limited by hasty's burst.
    status, _ = await board.call("GET", "/api/workspaces", "patient")
    assert status == 200


# Members


async def test_owner_adds_members_and_events_follow(board: Board) -> None:
    wid = await board.workspace("alice")
    room = f"workspace:{wid}"
    before = now_ms()
    status, member = await board.call(
        "POST", f"/api/workspaces/{wid}/members", "alice", body={"userId": "bob"}
    )
    assert (status, member) == (201, {"userId": "bob", "role": "member"})
    status, admin = await board.call(
        "POST",
        f"/api/workspaces/{wid}/members",
        "alice",
        body={"userId": "carol", "role": "admin"},
        headers={"X-Connection-Id": "conn-1"},
    )
    assert (status, admin) == (201, {"userId": "carol", "role": "admin"})
    status, explicit = await board.call(
        "POST", f"/api/workspaces/{wid}/members", "alice", body={"userId": "dan", "role": "member"}
    )
    assert (status, explicit) == (201, {"userId": "dan", "role": "member"})

    events = board.events()
    assert len(events) == 3
    assert_event(
        events[0],
        type_="member:added",
        room=room,
        user="alice",
        data={"userId": "bob", "role": "member"},
        after_ms=before,
    )
    assert_event(
        events[1],
        type_="member:added",
        room=room,
        user="alice",
        data={"userId": "carol", "role": "admin"},
        origin="conn-1",
        after_ms=before,
    )
    assert_event(
        events[2],
        type_="member:added",
        room=room,
        user="alice",
        data={"userId": "dan", "role": "member"},
    )
    assert [e["offset"] for e in events] == [1, 2, 3]
    assert len({e["epoch"] for e in events}) == 1

    status, members = await board.call("GET", f"/api/workspaces/{wid}/members", "bob")
    assert status == 200
    assert sorted(members, key=lambda m: m["userId"]) == [
        {"userId": "alice", "role": "owner"},
        {"userId": "bob", "role": "member"},
        {"userId": "carol", "role": "admin"},
        {"userId": "dan", "role": "member"},
    ]


async def test_admin_may_add_and_remove_members(board: Board) -> None:
    wid = await board.workspace("alice", carol="admin")
    status, added = await board.call(
        "POST", f"/api/workspaces/{wid}/members", "carol", body={"userId": "erin", "role": "admin"}
    )
    assert (status, added) == (201, {"userId": "erin", "role": "admin"})
    assert board.events("member:added")[-1]["userId"] == "carol"
    status, body = await board.call("DELETE", f"/api/workspaces/{wid}/members/erin", "carol")
    assert (status, body) == (204, None)
    removed = board.events("member:removed")
    assert len(removed) == 1
    assert_event(
        removed[0],
        type_="member:removed",
        room=f"workspace:{wid}",
        user="carol",
        data={"userId": "erin"},
    )


async def test_plain_member_cannot_add_or_remove_others(board: Board) -> None:
    wid = await board.workspace("alice", bob="member", carol="member")
    before = board.event_count()
    status, error = await board.call(
        "POST", f"/api/workspaces/{wid}/members", "bob", body={"userId": "mallory"}
    )
    assert_error(status, error, 403, "forbidden")
    status, error = await board.call("DELETE", f"/api/workspaces/{wid}/members/carol", "bob")
    assert_error(status, error, 403, "forbidden")
    status, error = await board.call("DELETE", f"/api/workspaces/{wid}/members/alice", "bob")
    assert_error(status, error, 403, "forbidden")
    assert board.event_count() == before
    _, members = await board.call("GET", f"/api/workspaces/{wid}/members", "alice")
    assert {m["userId"] for m in members} == {"alice", "bob", "carol"}


async def test_adding_an_existing_member_is_409(board: Board) -> None:
    wid = await board.workspace("alice", bob="member")
    before = board.event_count()
    for user, role in [("bob", "member"), ("bob", "admin"), ("alice", "member")]:
        status, error = await board.call(
            "POST", f"/api/workspaces/{wid}/members", "alice", body={"userId": user, "role": role}
        )
        assert_error(status, error, 409, "conflict")
    assert board.event_count() == before
    _, members = await board.call("GET", f"/api/workspaces/{wid}/members", "alice")
    assert sorted(members, key=lambda m: m["userId"]) == [
        {"userId": "alice", "role": "owner"},
        {"userId": "bob", "role": "member"},
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"userId": "bob", "role": "owner"}, "role"),
        ({"userId": "bob", "role": "boss"}, "role"),
        ({"userId": "bob", "role": 1}, "role"),
        ({"role": "member"}, "userId"),
        ({"userId": ""}, "userId"),
        ({"userId": 7}, "userId"),
        ({"userId": None}, "userId"),
    ],
    ids=[
        "role-owner",
        "role-unknown",
        "role-int",
        "no-user",
        "empty-user",
        "int-user",
        "null-user",
    ],
)
async def test_add_member_validation(board: Board, body: dict[str, Any], field: str) -> None:
    wid = await board.workspace("alice")
    status, error = await board.call("POST", f"/api/workspaces/{wid}/members", body=body)
    assert_error(status, error, 422, "validation_error", field)
    _, members = await board.call("GET", f"/api/workspaces/{wid}/members", "alice")
    assert members == [{"userId": "alice", "role": "owner"}]
    assert board.events() == []


async def test_owner_removes_a_member_who_then_loses_access(board: Board) -> None:
    wid = await board.workspace("alice", bob="member")
    project = await board.project(wid)
    before = now_ms()
    status, body = await board.call(
        "DELETE",
        f"/api/workspaces/{wid}/members/bob",
        "alice",
        headers={"X-Connection-Id": "tab-9"},
    )
    assert (status, body) == (204, None)
    removed = board.events("member:removed")
    assert len(removed) == 1
    assert_event(
        removed[0],
        type_="member:removed",
        room=f"workspace:{wid}",
        user="alice",
        data={"userId": "bob"},
        origin="tab-9",
        after_ms=before,
    )
    status, error = await board.call("GET", f"/api/workspaces/{wid}/members", "bob")
    assert_error(status, error, 404, "not_found")
    status, error = await board.call("GET", f"/api/projects/{project['id']}", "bob")
    assert_error(status, error, 404, "not_found")
    _, listed = await board.call("GET", "/api/workspaces", "bob")
    assert wid not in {w["id"] for w in listed}
    # Removing again: bob is not a member any more.
    status, error = await board.call("DELETE", f"/api/workspaces/{wid}/members/bob", "alice")
    assert_error(status, error, 404, "not_found")
    # And bob can be added back.
    status, added = await board.call(
        "POST", f"/api/workspaces/{wid}/members", "alice", body={"userId": "bob", "role": "admin"}
    )
    assert (status, added) == (201, {"userId": "bob", "role": "admin"})
    status, _ = await board.call("GET", f"/api/projects/{project['id']}", "bob")
    assert status == 200


async def test_member_may_remove_themself(board: Board) -> None:
    wid = await board.workspace("alice", bob="member")
    status, body = await board.call("DELETE", f"/api/workspaces/{wid}/members/bob", "bob")
    assert (status, body) == (204, None)
    assert_event(
        board.events("member:removed")[0],
        type_="member:removed",
        room=f"workspace:{wid}",
        user="bob",
        data={"userId": "bob"},
    )
    _, members = await board.call("GET", f"/api/workspaces/{wid}/members", "alice")
    assert members == [{"userId": "alice", "role": "owner"}]


async def test_owner_cannot_be_removed(board: Board) -> None:
    wid = await board.workspace("alice", carol="admin")
    before = board.event_count()
    status, error = await board.call("DELETE", f"/api/workspaces/{wid}/members/alice", "alice")
    assert_error(status, error, 409, "conflict")
    status, error = await board.call("DELETE", f"/api/workspaces/{wid}/members/alice", "carol")
    assert_error(status, error, 409, "conflict")
    assert board.event_count() == before
    _, members = await board.call("GET", f"/api/workspaces/{wid}/members", "alice")
    assert {"userId": "alice", "role": "owner"} in members


async def test_removing_a_non_member_is_404(board: Board) -> None:
    wid = await board.workspace("alice")
    status, error = await board.call("DELETE", f"/api/workspaces/{wid}/members/nobody", "alice")
    assert_error(status, error, 404, "not_found")
    assert board.events() == []


async def test_workspace_calls_are_404_for_non_members(board: Board) -> None:
    """Every workspace call answers a stranger exactly as if the workspace did not exist."""
    wid = await board.workspace("alice", bob="member")
    await board.project(wid)
    before = board.event_count()
    calls: list[tuple[str, str, Any]] = [
        ("GET", "/api/workspaces/{wid}/members", None),
        ("POST", "/api/workspaces/{wid}/members", {"userId": "mallory"}),
        ("DELETE", "/api/workspaces/{wid}/members/bob", None),
        ("DELETE", "/api/workspaces/{wid}/members/mallory", None),
        ("POST", "/api/workspaces/{wid}/projects", {"name": "Sneaky"}),
        ("GET", "/api/workspaces/{wid}/projects", None),
    ]
    for method, template, body in calls:
        status, hidden = await board.call(method, template.format(wid=wid), "mallory", body=body)
        assert_error(status, hidden, 404, "not_found")
        status, missing = await board.call(
            method, template.format(wid="ws_doesnotexist"), "mallory", body=body
        )
        assert_error(status, missing, 404, "not_found")
        assert hidden == missing, (method, template)
    assert board.event_count() == before
    _, members = await board.call("GET", f"/api/workspaces/{wid}/members", "alice")
    assert {m["userId"] for m in members} == {"alice", "bob"}
    _, projects = await board.call("GET", f"/api/workspaces/{wid}/projects", "alice")
    assert [p["name"] for p in projects] == ["Board"]


async def test_workspace_room_offsets_are_consecutive(board: Board) -> None:
    wid = await board.workspace("alice", bob="member")
    await board.project(wid, "bob")
    await board.call("DELETE", f"/api/workspaces/{wid}/members/bob", "bob")
    await board.call("POST", f"/api/workspaces/{wid}/members", "alice", body={"userId": "carol"})
    events = board.events(room=f"workspace:{wid}")
    assert [e["type"] for e in events] == [
        "member:added",
        "project:created",
        "member:removed",
        "member:added",
    ]
    assert [e["offset"] for e in events] == [1, 2, 3, 4]
    assert len({e["epoch"] for e in events}) == 1


# Service endpoints


async def test_healthz_and_readyz(board: Board) -> None:
    status, body = await board.call("GET", "/healthz", None)
    assert (status, body) == (200, {"status": "ok"})
    status, body = await board.call("GET", "/readyz", None)
    assert (status, body) == (200, {"status": "ready", "broker": "memory", "degraded": False})


CONTRACT_OPERATIONS = {
    ("post", "/api/workspaces"),
    ("get", "/api/workspaces"),
    ("post", "/api/workspaces/{wid}/members"),
    ("get", "/api/workspaces/{wid}/members"),
    ("delete", "/api/workspaces/{wid}/members/{uid}"),
    ("post", "/api/workspaces/{wid}/projects"),
    ("get", "/api/workspaces/{wid}/projects"),
    ("get", "/api/projects/{pid}"),
    ("get", "/api/projects/{pid}/tasks"),
    ("post", "/api/projects/{pid}/tasks"),
    ("get", "/api/tasks/{tid}"),
    ("patch", "/api/tasks/{tid}"),
    ("post", "/api/tasks/{tid}/move"),
    ("delete", "/api/tasks/{tid}"),
}


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        for item in value.values():
            found += _refs(item)
        return found
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []


async def test_openapi_document_covers_the_contract(board: Board) -> None:
    status, doc = await board.call("GET", "/openapi.json", None)
    assert status == 200
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"]), doc["openapi"]
    assert doc["info"]["title"]
    assert doc["info"]["version"]
    operations = {
        (method, path)
        for path, item in doc["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    assert operations >= CONTRACT_OPERATIONS, CONTRACT_OPERATIONS - operations
    # Not in --dev mode: the dev token route is not advertised.
    assert "/api/dev/token" not in doc["paths"]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (method, path)
            params = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert params == set(re.findall(r"\{(\w+)\}", path)), (method, path)
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    # The task answer describes every field of a Task.
    task_ref = doc["paths"]["/api/tasks/{tid}"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]["$ref"]
    task_schema = schemas[task_ref.rsplit("/", 1)[1]]
    assert set(task_schema["properties"]) == {
        "id",
        "projectId",
        "title",
        "description",
        "status",
        "order",
        "rank",
        "assigneeId",
        "createdById",
        "version",
        "createdAt",
        "updatedAt",
    }
