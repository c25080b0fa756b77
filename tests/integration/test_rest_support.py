"""Helpers shared by the REST integration tests (``test_rest_*.py``). Holds no test itself.

A ``Board`` is the real app on a free port with a ``RecordingPublisher``, so a test sees every
event a call publishes, exactly as its wire JSON (``origin`` absent when it was not given).

``fresh_postgres_database`` gives a module its own PostgreSQL database (on the server of the
session's ``postgres_server_url``), so the users and workspaces these tests create do not show up
in other modules' tests that share the session database, and the other way round.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from liveboard.config import Settings
from liveboard.events import RecordingPublisher
from liveboard.protocol import encode_event
from tests.conftest import POSTGRES_ADMIN_URL, AppClientFactory, auth

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$")
DEFAULT_STATUSES = ["todo", "in_progress", "done"]
WORKSPACE_KEYS = {"id", "name", "createdAt"}
PROJECT_KEYS = {"id", "workspaceId", "name", "statuses", "createdAt"}
TASK_KEYS = {
    "id",
    "projectId",
    "title",
    "description",
    "status",
    "order",
    "assigneeId",
    "createdById",
    "version",
    "createdAt",
    "updatedAt",
}
EVENT_KEYS = {"type", "room", "offset", "epoch", "ts", "userId", "data"}


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database next to ``server_url``'s; dropped on exit."""
    name = f"liveboard_test_{secrets.token_hex(4)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{server_url.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def database_url_for(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """For a module's ``database_url`` override: a new SQLite file, or the module's PostgreSQL
    database (its ``module_postgres_url`` fixture)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'liveboard.db'}"
    url: str = request.getfixturevalue("module_postgres_url")
    return url


DATABASE_PARAMS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@dataclass
class Board:
    """A running app, its test client and everything it published."""

    client: TestClient[Any, Any]
    publisher: RecordingPublisher

    async def call(
        self,
        method: str,
        path: str,
        user: str | None = "alice",
        *,
        body: Any = None,
        raw: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One request; returns (status, decoded JSON body or None when empty)."""
        all_headers = dict(auth(user)) if user is not None else {}
        all_headers.update(headers or {})
        kwargs: dict[str, Any] = {"headers": all_headers}
        if raw is not None:
            kwargs["data"] = raw
            all_headers.setdefault("Content-Type", "application/json")
        elif body is not None:
            kwargs["json"] = body
        async with self.client.request(method, path, **kwargs) as response:
            text = await response.text()
            if response.status != 204 and text:
                assert response.content_type == "application/json", (response.status, text)
            return response.status, (json.loads(text) if text else None)

    def events(self, type_: str | None = None, room: str | None = None) -> list[dict[str, Any]]:
        """Published events as wire JSON, optionally filtered by type and room."""
        found = [json.loads(encode_event(e)) for e in self.publisher.events]
        return [
            e
            for e in found
            if (type_ is None or e["type"] == type_) and (room is None or e["room"] == room)
        ]

    def event_count(self) -> int:
        return len(self.publisher.events)

    async def workspace(self, owner: str = "alice", **members: str) -> str:
        """A new workspace of ``owner`` with ``members`` (user → role); returns its id."""
        status, ws = await self.call("POST", "/api/workspaces", owner, body={"name": "Team"})
        assert status == 201, ws
        for user, role in members.items():
            status, added = await self.call(
                "POST",
                f"/api/workspaces/{ws['id']}/members",
                owner,
                body={"userId": user, "role": role},
            )
            assert status == 201, added
        return str(ws["id"])

    async def project(self, wid: str, user: str = "alice", **fields: Any) -> dict[str, Any]:
        body = {"name": "Board", **fields}
        status, project = await self.call(
            "POST", f"/api/workspaces/{wid}/projects", user, body=body
        )
        assert status == 201, project
        return dict(project)

    async def task(self, pid: str, user: str = "alice", **fields: Any) -> dict[str, Any]:
        body = {"title": "A task", **fields}
        status, task = await self.call("POST", f"/api/projects/{pid}/tasks", user, body=body)
        assert status == 201, task
        return dict(task)

    async def setup(self, **members: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """Workspace (alice owner + members), a default project and one task in it."""
        wid = await self.workspace("alice", **members)
        project = await self.project(wid)
        task = await self.task(project["id"])
        return wid, project, task


async def start_board(factory: AppClientFactory, settings: Settings) -> Board:
    publisher = RecordingPublisher()
    client = await factory(settings, publisher=publisher)
    return Board(client, publisher)


def assert_error(
    status: int, body: Any, expected_status: int, code: str, field: str | None = None
) -> None:
    """The contract's error shape: ``{"error": {"code", "message"[, "details"]}}``."""
    assert status == expected_status, (status, body)
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) <= {"code", "message", "details"}, error
    assert {"code", "message"} <= set(error), error
    assert error["code"] == code, error
    assert isinstance(error["message"], str), error
    assert error["message"], error
    if "details" in error:
        assert isinstance(error["details"], dict), error
    if field is not None:
        assert error.get("details", {}).get("field") == field, error


def parse_utc(value: Any) -> datetime:
    """An ISO 8601 UTC timestamp from the API, checked and parsed."""
    assert isinstance(value, str), value
    assert ISO_UTC.match(value), value
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert moment.utcoffset() == timedelta(0), value
    return moment


def assert_recent(value: Any, *, seconds: float = 60.0) -> None:
    moment = parse_utc(value)
    now = datetime.now(UTC)
    assert now - timedelta(seconds=seconds) <= moment <= now + timedelta(seconds=5), value


def unique(name: str) -> str:
    """A user id of its own: the PostgreSQL database is shared by the whole test run."""
    return f"{name}-{secrets.token_hex(4)}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def assert_event(
    event: dict[str, Any],
    *,
    type_: str,
    room: str,
    user: str,
    data: dict[str, Any],
    origin: str | None = None,
    after_ms: int | None = None,
) -> None:
    """One event envelope exactly as CONTRACT §4 describes it."""
    expected_keys = EVENT_KEYS | ({"origin"} if origin is not None else set())
    assert set(event) == expected_keys, event
    assert event["type"] == type_, event
    assert event["room"] == room, event
    assert event["userId"] == user, event
    assert event["data"] == data, event
    assert isinstance(event["offset"], int), event
    assert event["offset"] >= 1, event
    assert isinstance(event["epoch"], str), event
    assert event["epoch"], event
    assert isinstance(event["ts"], int), event
    if after_ms is not None:
        assert after_ms - 5 <= event["ts"] <= now_ms() + 5, event
    if origin is not None:
        assert event["origin"] == origin, event
