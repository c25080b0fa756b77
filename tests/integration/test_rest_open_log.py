"""Other backends over REST (CONTRACT §6.3-6.4): API keys, rooms and members by key, publishing
into a room, and reading its history.

Every test runs on a fresh SQLite file and on PostgreSQL, against the real app on a real port.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard.config import Settings
from liveboard.protocol import decode_event
from liveboard.store import eventlog, migrations
from liveboard.store import idempotency as store_idempotency
from liveboard.store.database import Database
from liveboard.tasks.retention import Retention
from tests.support.app import AppClientFactory
from tests.support.contract import assert_error
from tests.support.postgres import admin, module_database_url_fixture  # noqa: F401
from tests.support.rest import Board, start_board
from tests.support.tokens import unique

KEY = "svc-" + secrets.token_urlsafe(24)
OTHER_KEY = "svc-" + secrets.token_urlsafe(24)
SERVICE = {"Authorization": f"apikey {KEY}"}
_INITIAL_SCHEMA = migrations.MIGRATIONS[0][2]


@pytest.fixture(name="board")
async def open_log_board(settings: Settings, app_client_factory: AppClientFactory) -> Board:
    keyed = dataclasses.replace(settings, api_keys=(KEY, OTHER_KEY), max_event_data_bytes=1024)
    return await start_board(app_client_factory, keyed)


async def as_service(
    board: Board, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, Any, dict[str, str]]:
    """A request with the service's key; returns (status, JSON, headers)."""
    all_headers = {**SERVICE, **headers}
    kwargs: dict[str, Any] = {"headers": all_headers}
    if body is not None:
        kwargs["json"] = body
    async with board.client.request(method, path, **kwargs) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None), dict(response.headers)


async def service_room(board: Board) -> tuple[str, str]:
    """A workspace and a project created by the service with ids of its own."""
    wid, pid = unique("ws"), unique("prj")
    status, _, _ = await as_service(board, "PUT", f"/api/workspaces/{wid}", {"name": "Team"})
    assert status == 201
    status, _, _ = await as_service(
        board, "PUT", f"/api/workspaces/{wid}/projects/{pid}", {"name": "Board"}
    )
    assert status == 201
    return wid, pid


async def test_publish_needs_an_api_key(board: Board) -> None:
    _, pid = await service_room(board)
    path = f"/api/rooms/project:{pid}/events"
    body = {"type": "comment:added", "data": {"taskId": "t1"}}
    status, error = await board.call("POST", path, None, body=body)
    assert_error(status, error, 401, "unauthorized")
    status, error = await board.call(
        "POST",
        path,
        None,
        body=body,
        headers={"Authorization": "apikey not-a-configured-key-at-all"},
    )
    assert_error(status, error, 401, "unauthorized")
    status, error = await board.call("POST", path, "alice", body=body)
    assert_error(status, error, 403, "forbidden")
    status, answer, headers = await as_service(board, "POST", path, body)
    assert status == 201, answer
    assert answer == {"room": f"project:{pid}", "offset": 1, "epoch": answer["epoch"]}
    assert headers["Liveboard-Offset"] == "1"
    assert headers["Liveboard-Epoch"] == answer["epoch"]
    (event,) = board.events("comment:added")
    assert event["userId"] is None
    assert set(event) == {"type", "room", "offset", "epoch", "ts", "userId", "data"}
    assert event["data"] == {"taskId": "t1"}
    # Another configured key works too; both are compared every time.
    status, answer, _ = await as_service(
        board, "POST", path, body, Authorization=f"apikey {OTHER_KEY}"
    )
    assert (status, answer["offset"]) == (201, 2)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"type": "Comment:added", "data": {}}, 422, "validation_error"),
        ({"type": "comment", "data": {}}, 422, "validation_error"),
        ({"type": "presence:update", "data": {}}, 422, "validation_error"),
        ({"type": "a:" + "b" * 63, "data": {}}, 422, "validation_error"),
        ({"type": "comment:added", "data": [1, 2]}, 422, "validation_error"),
        ({"type": "comment:added"}, 422, "validation_error"),
        ({"type": "comment:added", "data": {"text": "x" * 2000}}, 413, "payload_too_large"),
    ],
)
async def test_bad_events_are_refused(board: Board, body: Any, status: int, code: str) -> None:
    _, pid = await service_room(board)
    got, error, _ = await as_service(board, "POST", f"/api/rooms/project:{pid}/events", body)
    assert_error(got, error, status, code)
    assert board.events(room=f"project:{pid}") == []


async def test_unknown_and_malformed_rooms_are_not_found(board: Board) -> None:
    for room in ("project:nope", "workspace:nope", "nonsense", "project:a%20b"):
        status, error, _ = await as_service(
            board, "POST", f"/api/rooms/{room}/events", {"type": "a:b", "data": {}}
        )
        assert_error(status, error, 404, "not_found")


async def test_idempotent_publish(board: Board) -> None:
    _, pid = await service_room(board)
    path = f"/api/rooms/project:{pid}/events"
    body = {"type": "comment:added", "data": {"n": 1}}
    key = {"Idempotency-Key": unique("k")}
    first = await as_service(board, "POST", path, body, **key)
    again = await as_service(board, "POST", path, body, **key)
    assert first[0] == again[0] == 201
    assert first[1] == again[1]
    assert again[2]["Liveboard-Offset"] == first[2]["Liveboard-Offset"]
    assert len(board.events("comment:added")) == 1
    status, error, _ = await as_service(
        board, "POST", path, {"type": "comment:added", "data": {"n": 2}}, **key
    )
    assert_error(status, error, 422, "validation_error")
    # The same key of a user is a different key: keys are scoped to their holder.
    wid = await board.workspace("alice")
    status, _ = await board.call(
        "POST", f"/api/workspaces/{wid}/projects", "alice", body={"name": "x"}, headers=key
    )
    assert status == 201


async def test_put_with_own_ids(board: Board) -> None:
    wid, pid = unique("ws"), unique("prj")
    status, ws, _ = await as_service(board, "PUT", f"/api/workspaces/{wid}", {"name": "Team"})
    assert (status, ws["id"], ws["name"]) == (201, wid, "Team")
    status, again, _ = await as_service(board, "PUT", f"/api/workspaces/{wid}", {"name": "New"})
    assert (status, again) == (200, ws)
    path = f"/api/workspaces/{wid}/projects/{pid}"
    status, project, headers = await as_service(board, "PUT", path, {"name": "Board"})
    assert (status, project["id"], project["workspaceId"]) == (201, pid, wid)
    assert "Liveboard-Offset" in headers  # project:created in the workspace room
    status, same, headers = await as_service(board, "PUT", path, {"name": "Other"})
    assert (status, same) == (200, project)
    assert "Liveboard-Offset" not in headers
    assert len(board.events("project:created", f"workspace:{wid}")) == 1
    # The id of a project of another workspace is a conflict; users cannot PUT; bad ids 422.
    other = unique("ws")
    await as_service(board, "PUT", f"/api/workspaces/{other}", {"name": "Other"})
    status, error, _ = await as_service(
        board, "PUT", f"/api/workspaces/{other}/projects/{pid}", {"name": "x"}
    )
    assert_error(status, error, 409, "conflict")
    status, error = await board.call(
        "PUT", f"/api/workspaces/{unique('w')}", "alice", body={"name": "x"}
    )
    assert_error(status, error, 403, "forbidden")
    status, error, _ = await as_service(board, "PUT", "/api/workspaces/a.b", {"name": "x"})
    assert_error(status, error, 422, "validation_error")
    status, listed, _ = await as_service(board, "GET", "/api/workspaces")
    assert {wid, other} <= {w["id"] for w in listed}


async def test_members_by_key(board: Board) -> None:
    wid, pid = await service_room(board)
    members = f"/api/workspaces/{wid}/members"
    status, added, _ = await as_service(board, "POST", members, {"userId": "bob", "role": "admin"})
    assert (status, added) == (201, {"userId": "bob", "role": "admin"})
    (event,) = board.events("member:added", f"workspace:{wid}")
    assert event["userId"] is None
    # bob now sees the project; the service removes him and he no longer does.
    status, _ = await board.call("GET", f"/api/projects/{pid}/tasks", "bob")
    assert status == 200
    status, _, _ = await as_service(board, "DELETE", f"{members}/bob")
    assert status == 204
    status, error = await board.call("GET", f"/api/projects/{pid}/tasks", "bob")
    assert_error(status, error, 404, "not_found")
    status, listed, _ = await as_service(board, "GET", members)
    assert (status, listed) == (200, [])
    # Tasks name the user who made them: a service changes none.
    status, error, _ = await as_service(board, "POST", f"/api/projects/{pid}/tasks", {"title": "x"})
    assert_error(status, error, 403, "forbidden")


async def test_history_pages_and_membership(board: Board, settings: Settings) -> None:
    wid, pid = await service_room(board)
    await as_service(board, "POST", f"/api/workspaces/{wid}/members", {"userId": "bob"})
    room = f"project:{pid}"
    for n in range(7):
        status, _, _ = await as_service(
            board, "POST", f"/api/rooms/{room}/events", {"type": "note:added", "data": {"n": n}}
        )
        assert status == 201
    status, page = await board.call("GET", f"/api/rooms/{room}/events?limit=3", "bob")
    assert status == 200, page
    assert [e["offset"] for e in page["events"]] == [1, 2, 3]
    assert page["offset"] == 7
    assert "truncated" not in page
    # The envelope is the WebSocket's, byte for byte in its fields.
    assert page["events"][0] == json.loads(json.dumps(board.events("note:added", room)[0]))
    decode_event(json.dumps(page["events"][0]))
    seen: list[int] = []
    after = 0
    while True:
        status, page = await board.call(
            "GET", f"/api/rooms/{room}/events?after={after}&limit=2", "bob"
        )
        if not page["events"]:
            break
        seen += [e["offset"] for e in page["events"]]
        after = page["events"][-1]["offset"]
    assert seen == list(range(1, 8))
    # Non-members and unknown rooms: 404; the service reads any room; bad queries 422.
    status, error = await board.call("GET", f"/api/rooms/{room}/events", "mallory")
    assert_error(status, error, 404, "not_found")
    status, error = await board.call("GET", f"/api/rooms/workspace:{wid}/events", "mallory")
    assert_error(status, error, 404, "not_found")
    status, page, _ = await as_service(board, "GET", f"/api/rooms/workspace:{wid}/events")
    assert status == 200
    assert [e["type"] for e in page["events"]] == ["project:created", "member:added"]
    for query in ("limit=0", "limit=1001", "after=-1", "after=x", "limit=1.5"):
        status, error = await board.call("GET", f"/api/rooms/{room}/events?{query}", "bob")
        assert_error(status, error, 422, "validation_error")
    # Events pruned from the start of the log: the page says so.
    db = Database(settings.database_url)
    try:
        async with db.write() as conn:
            await eventlog.delete_through(conn, room, 3)
    finally:
        await db.aclose()
    status, page = await board.call("GET", f"/api/rooms/{room}/events?after=1", "bob")
    assert page["truncated"] is True
    assert [e["offset"] for e in page["events"]] == [4, 5, 6, 7]
    status, page = await board.call("GET", f"/api/rooms/{room}/events?after=3", "bob")
    assert "truncated" not in page


async def test_history_cursor_across_pruning(board: Board, settings: Settings) -> None:
    """A cursor returns every event once, in order, while retention prunes the room's start;
    a gap is only ever where a page says ``truncated``."""
    _, pid = await service_room(board)
    room = f"project:{pid}"
    for n in range(30):
        await as_service(
            board, "POST", f"/api/rooms/{room}/events", {"type": "note:added", "data": {"n": n}}
        )
    db = Database(settings.database_url)
    retention = Retention(db, keep=12, recovery_window=6)
    seen: list[int] = []
    gaps_flagged = 0
    after = 0
    try:
        while True:
            status, page = await board.call(
                "GET", f"/api/rooms/{room}/events?after={after}&limit=4", "alice"
            )
            if status == 404:  # alice is not a member: read as the service
                status, page, _ = await as_service(
                    board, "GET", f"/api/rooms/{room}/events?after={after}&limit=4"
                )
            assert status == 200, page
            offsets = [e["offset"] for e in page["events"]]
            if not offsets:
                break
            if offsets[0] != after + 1:
                assert page.get("truncated") is True
                gaps_flagged += 1
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
            seen += offsets
            after = offsets[-1]
            # Between the first pages the room grows; it is pruned between all of them.
            if len(seen) <= 16:
                await as_service(
                    board, "POST", f"/api/rooms/{room}/events", {"type": "note:added", "data": {}}
                )
            pruned = await retention.prune()
            assert pruned >= 0
        assert seen == sorted(set(seen))
        async with db.read() as conn:
            oldest = await eventlog.oldest_offset(conn, room)
            head = await eventlog.room_position(conn, room)
        assert head is not None
        assert oldest == head.offset - 12 + 1  # exactly `keep` kept
        assert gaps_flagged >= 1
        assert seen[-12:] == list(range(head.offset - 11, head.offset + 1))
    finally:
        await db.aclose()


async def test_retention_with_an_age_keeps_the_recovery_window(
    board: Board, settings: Settings
) -> None:
    _, pid = await service_room(board)
    room = f"project:{pid}"
    for n in range(20):
        await as_service(
            board, "POST", f"/api/rooms/{room}/events", {"type": "note:added", "data": {"n": n}}
        )
    db = Database(settings.database_url)
    try:
        # Every event is older than the age a clock an hour ahead sees: only the window stays.
        later = time.time() + 3600
        aged = Retention(db, keep=15, recovery_window=4, max_age=60.0, clock=lambda: later)
        await aged.prune_room(room, 20)
        async with db.read() as conn:
            assert await eventlog.oldest_offset(conn, room) == 17
    finally:
        await db.aclose()


async def test_migrations_after_3_on_a_database_made_before_them(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database migrated by an earlier release (``events.type`` of 32 characters on
    PostgreSQL, no service keys) takes 64-character types and service keys after the later
    migrations (5 widens the column, 6 adds the service keys)."""
    name = unique("old").replace("-", "_")
    if settings.database_url.startswith("sqlite"):
        url = settings.database_url.replace("liveboard.db", f"{name}.db")
    else:
        await admin(f'CREATE DATABASE "{name}"')
        url = f"{settings.database_url.rsplit('/', 1)[0]}/{name}"
    db = Database(url)
    try:
        with monkeypatch.context() as patched:
            earlier = [
                (v, n, _initial_with_short_types if v == 1 else apply)
                for v, n, apply in migrations.MIGRATIONS[:3]
            ]
            patched.setattr(migrations, "MIGRATIONS", earlier)
            assert await migrations.migrate(db) == [1, 2, 3]
        later = [v for v, _, _ in migrations.MIGRATIONS[3:]]
        assert {5, 6} <= set(later)  # 5 widens events.type on PostgreSQL, 6 adds service keys
        assert await migrations.migrate(db) == later
        assert await migrations.migrate(db) == []
        long_type = "n" * 31 + ":" + "m" * 32
        async with db.write() as conn:
            await eventlog.create_room(conn, "project:p")
            await eventlog.append_event(
                conn, room="project:p", type=long_type, user_id=None, data={}, ts=1
            )
            claim = store_idempotency.Claim("0123456789abcdef", "k", "f" * 64, service=True)
            assert await store_idempotency.record(
                conn, claim, status=201, body=b"{}", headers={}, now_ms=1
            )
        async with db.read() as conn:
            (event,) = await eventlog.read_events(conn, "project:p", after=0, limit=5)
            assert await store_idempotency.recall(conn, "0123456789abcdef", "k") is None
            stored = await store_idempotency.recall(conn, "0123456789abcdef", "k", service=True)
        assert (event.type, event.user_id) == (long_type, None)
        assert stored is not None
    finally:
        await db.aclose()
        if not url.startswith("sqlite"):
            await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _initial_with_short_types(conn: AsyncConnection) -> None:
    """Migration 1 as an earlier release ran it: ``events.type`` of 32 characters (and, as
    today, none of the tables later migrations add)."""
    await _INITIAL_SCHEMA(conn)
    if conn.dialect.name == "postgresql":
        events = migrations._table(conn, "events")
        await conn.execute(text(f"ALTER TABLE {events} ALTER COLUMN type TYPE VARCHAR(32)"))
