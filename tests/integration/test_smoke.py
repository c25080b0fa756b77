from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.support.tokens import auth


async def test_workspace_round_trip(client: TestClient[Any, Any]) -> None:
    created = await client.post("/api/workspaces", json={"name": "Team"}, headers=auth("alice"))
    assert created.status == 201
    body = await created.json()
    listed = await client.get("/api/workspaces", headers=auth("alice"))
    assert await listed.json() == [body]
