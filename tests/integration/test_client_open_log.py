"""The SDK and events other backends publish (CONTRACT §6.3-6.4), against ``liveboard serve``:
a custom type arrives as an ``Event`` in the room's order with the task events (no gap, no
resync), ``userId`` None; ``history`` pages the room with the same envelope, and a room the
user may not read is a 404.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from liveboard.client import ApiError, Event, LiveboardClient, Resync, Revoked
from tests.support.servers import LiveboardProcess
from tests.support.timing import timeout
from tests.support.tokens import make_token

ServerFactory = Callable[..., LiveboardProcess]
KEY = "svc-" + secrets.token_urlsafe(24)
SERVICE = {"Authorization": f"apikey {KEY}"}


async def service_call(url: str, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url + path, json=body, headers=SERVICE) as response,
    ):
        assert response.status in (200, 201, 204), await response.text()
        return await response.json() if response.status != 204 else None


async def test_custom_events_reach_the_sdk_typed_and_in_history(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"LIVEBOARD_API_KEYS": KEY})
    wid, pid = f"ws-{secrets.token_hex(4)}", f"prj-{secrets.token_hex(4)}"
    await service_call(server.url, "PUT", f"/api/workspaces/{wid}", {"name": "Team"})
    await service_call(server.url, "PUT", f"/api/workspaces/{wid}/projects/{pid}", {"name": "B"})
    await service_call(server.url, "POST", f"/api/workspaces/{wid}/members", {"userId": "alice"})
    room = f"project:{pid}"
    async with LiveboardClient(server.url, make_token("alice")) as alice:
        sub = await alice.subscribe(room)
        task = await alice.create_task(pid, "A card")
        published = await service_call(
            server.url,
            "POST",
            f"/api/rooms/{room}/events",
            {"type": "comment:added", "data": {"taskId": task.id, "text": "hi"}},
        )
        await alice.update_task(task.id, title="Renamed")
        events: list[Event] = []
        async with asyncio.timeout(timeout(10)):
            while len(events) < 3:
                item = await sub.get()
                assert not isinstance(item, Resync | Revoked), item
                if isinstance(item, Event):
                    events.append(item)
        assert [e.type for e in events] == ["task:created", "comment:added", "task:updated"]
        assert [e.offset for e in events] == [1, 2, 3]
        comment = events[1]
        assert comment.offset == published["offset"]
        assert comment.user_id is None
        assert comment.data == {"taskId": task.id, "text": "hi"}

        page = await alice.history(room, after=0, limit=2)
        assert [e.offset for e in page.events] == [1, 2]
        assert page.events[1] == comment
        assert (page.offset, page.epoch, page.truncated) == (3, comment.epoch, False)
        rest = await alice.history(room, after=page.events[-1].offset)
        assert [e.type for e in rest.events] == ["task:updated"]
        assert (await alice.history(room, after=3)).events == []
        workspace = await alice.history(f"workspace:{wid}")
        assert [e.type for e in workspace.events] == ["project:created", "member:added"]

    async with LiveboardClient(server.url, make_token("mallory")) as mallory:
        with pytest.raises(ApiError) as refused:
            await mallory.history(room)
        assert refused.value.status == 404
