"""The REST harness of the in-process app: one call, the events it published, set-up helpers.

A ``Board`` is the real app on a free port (``app_client_factory``) with a ``RecordingPublisher``,
so a test sees every event a call publishes, exactly as its wire JSON (``origin`` absent when it
was not given). The ``board`` fixture (``rest_board_fixture``) starts one on the test's
``settings``; a module uses it by importing it::

    from tests.support.rest import Board, rest_board_fixture  # noqa: F401

(Not to be confused with ``tests.support.board.Board``, bound to a ``liveboard serve`` process.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from liveboard.config import Settings
from liveboard.events import RecordingPublisher
from liveboard.protocol import encode_event
from tests.support.app import AppClientFactory
from tests.support.tokens import auth


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


@pytest.fixture(name="board")
async def rest_board_fixture(settings: Settings, app_client_factory: AppClientFactory) -> Board:
    """The app on the test's ``settings``, recording what it publishes."""
    return await start_board(app_client_factory, settings)
