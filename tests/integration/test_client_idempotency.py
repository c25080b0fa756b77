"""The Python SDK's mutations are safe to retry and say which event they caused (CONTRACT §6.1).

The SDK talks to the real app (SQLite and PostgreSQL) through a proxy that loses the answers the
test picks after the server has handled the request: each lost answer is retried by the SDK with
the same ``Idempotency-Key``, the change is applied once, and ``last_position()`` names its event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from liveboard.client import ApiError, LiveboardClient, Position
from tests.support.lossy_http import LossyHttpProxy
from tests.support.postgres import module_database_url_fixture  # noqa: F401
from tests.support.rest import Board, rest_board_fixture  # noqa: F401
from tests.support.tokens import make_token


class Losses:
    """Which connections lose their answer: those the test has asked for, in order."""

    def __init__(self) -> None:
        self.pending = 0

    def __call__(self, _number: int) -> bool:
        if self.pending:
            self.pending -= 1
            return True
        return False


@dataclass
class Proxied:
    proxy: LossyHttpProxy
    losses: Losses
    session: aiohttp.ClientSession  # one connection per request, through the proxy

    def sdk(self, user: str = "alice") -> LiveboardClient:
        return LiveboardClient(self.proxy.url, make_token(user), session=self.session)


@pytest.fixture
async def proxied(board: Board) -> AsyncIterator[Proxied]:
    losses = Losses()
    server = board.client.server
    assert server.port is not None
    proxy = await LossyHttpProxy(str(server.host), server.port, losses).start()
    session = aiohttp.ClientSession(
        headers={"Connection": "close"}, connector=aiohttp.TCPConnector(force_close=True)
    )
    yield Proxied(proxy, losses, session)
    await session.close()
    await proxy.aclose()


async def test_lost_answers_are_retried_with_the_same_key(board: Board, proxied: Proxied) -> None:
    proxy, losses = proxied.proxy, proxied.losses
    _wid, project, first = await board.setup()
    client = proxied.sdk()
    try:
        losses.pending = 2  # the first two attempts of the create lose their answer
        task = await client.create_task(project["id"], "Write docs")
        created = client.last_position()
        losses.pending = 1
        task = await client.update_task(task.id, title="Docs")
        updated = client.last_position()
        losses.pending = 1
        task = await client.move_task(task.id, "done")
        moved = client.last_position()
        losses.pending = 1
        await client.delete_task(task.id)
        deleted = client.last_position()
    finally:
        await client.aclose()
    # Each lost answer was retried with its call's one key; 5 answers lost, 4 changes.
    assert sorted(len(v) for v in proxy.dropped.values()) == [1, 1, 1, 2]
    events = board.events(room=f"project:{project['id']}")
    assert [e["type"] for e in events] == [
        "task:created",
        "task:created",
        "task:updated",
        "task:moved",
        "task:deleted",
    ]
    positions = [created, updated, moved, deleted]
    assert positions == [Position(offset=e["offset"], epoch=e["epoch"]) for e in events[1:]]
    _status, snapshot = await board.call("GET", f"/api/projects/{project['id']}/tasks")
    assert [t["id"] for t in snapshot["tasks"]] == [first["id"]]


async def test_a_mutation_that_emits_nothing_has_no_position(
    board: Board, proxied: Proxied
) -> None:
    _wid, _project, task = await board.setup()
    client = proxied.sdk()
    try:
        await client.move_task(task["id"], "done")
        assert client.last_position() is not None
        await client.update_task(task["id"], title=task["title"])  # changes nothing
        assert client.last_position() is None
        await client.update_task(task["id"], title="x")  # version 3, the title changed
        assert client.last_position() is not None
        with pytest.raises(ApiError) as refused:  # the title changed since version 2
            await client.update_task(task["id"], title="y", version=2)
        assert (refused.value.status, refused.value.code) == (409, "conflict")
        assert client.last_position() is None
    finally:
        await client.aclose()


async def test_positions_belong_to_the_task_that_made_the_call(
    board: Board, proxied: Proxied
) -> None:
    _wid, project, _task = await board.setup()
    client = proxied.sdk()

    async def create(title: str) -> tuple[str, Position | None]:
        task = await client.create_task(project["id"], title)
        return task.title, client.last_position()

    try:
        results = await asyncio.gather(*(create(f"t{n}") for n in range(10)))
    finally:
        await client.aclose()
    by_title = {e["data"]["task"]["title"]: e for e in board.events("task:created")}
    for title, position in results:
        event = by_title[title]
        assert position == Position(offset=event["offset"], epoch=event["epoch"])
