"""Retries through a network that loses answers apply each change once (CONTRACT §6.1, issue 17).

20 clients create tasks and move each once, through a proxy that drops 30 % of the responses
after the server has handled the request, and retry every lost answer with the same
``Idempotency-Key`` until one arrives. Then: exactly one task per create, exactly one event per
change, the room's offsets gap-free for a live subscriber, and every answer a retry got is the
answer that was lost (status, body, ``ETag``, ``Liveboard-Offset``/``Liveboard-Epoch``).

``make test`` runs 500 tasks (1,000 changes) on SQLite and PostgreSQL; the issue's 10,000
run with ``LIVEBOARD_RETRY_TASKS=10000`` (``make soak-retries``, part of ``make soak``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.support.lossy_http import LossyHttpProxy, RawResponse
from tests.support.postgres import module_database_url_fixture  # noqa: F401
from tests.support.rest import Board, rest_board_fixture  # noqa: F401
from tests.support.tokens import make_token

TASKS = int(os.environ.get("LIVEBOARD_RETRY_TASKS", "500"))
CLIENTS = 20
DROP_RATE = 0.3
KEPT = ("etag", "liveboard-offset", "liveboard-epoch")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120 + 0.1 * TASKS)]


@dataclass
class Change:
    key: str
    kind: str  # "create" or "move"
    answer: RawResponse
    attempts: int


async def keyed(
    http: aiohttp.ClientSession, url: str, token: str, body: dict[str, Any], kind: str
) -> Change:
    """POST ``body`` with a fresh key, re-sending the same bytes and key until answered."""
    key = str(uuid.uuid4())
    data = json.dumps(body).encode()
    headers = {
        "Authorization": f"Bearer {token}",
        "Idempotency-Key": key,
        "Content-Type": "application/json",
        "Connection": "close",
    }
    for attempt in range(1, 50):
        try:
            async with http.post(url, data=data, headers=headers) as response:
                raw = await response.read()
                kept = {k.lower(): v for k, v in response.headers.items() if k.lower() in KEPT}
                if response.status == 409:  # only an answer still in flight could be refused
                    await asyncio.sleep(0.01)
                    continue
                return Change(key, kind, RawResponse(response.status, kept, raw), attempt)
        except aiohttp.ClientConnectionError:
            continue  # the answer was lost: the same request again, with its key
    raise AssertionError(f"{kind} never answered")


async def collect(
    ws: aiohttp.ClientWebSocketResponse, room: str, last: int
) -> list[dict[str, Any]]:
    """Every event of ``room`` the subscribed socket ``ws`` receives, up to offset ``last``."""
    events: list[dict[str, Any]] = []
    async for message in ws:
        frame = json.loads(message.data)
        if frame.get("room") == room and "offset" in frame and ":" in frame["type"]:
            events.append(frame)
            if frame["offset"] >= last:
                break
    return events


async def test_lost_answers_retried_with_their_keys_apply_each_change_once(board: Board) -> None:
    users = [f"client{n}" for n in range(CLIENTS)]
    wid = await board.workspace("alice", **dict.fromkeys(users, "member"))
    project = await board.project(wid)
    pid = project["id"]
    server = board.client.server
    assert server.port is not None
    rng = random.Random(17)
    proxy = await LossyHttpProxy(
        str(server.host), server.port, lambda _n: rng.random() < DROP_RATE
    ).start()
    room = f"project:{pid}"
    ws = await board.client.ws_connect(f"/ws?token={make_token('alice')}")
    await ws.send_json({"type": "subscribe", "room": room})
    while (frame := await ws.receive_json())["type"] != "subscribed":
        pass
    assert frame["offset"] == 0
    watcher = asyncio.ensure_future(collect(ws, room, 2 * TASKS))
    changes: list[Change] = []

    async def client(user: str, count: int) -> None:
        token = make_token(user)
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:
            for n in range(count):
                created = await keyed(
                    http,
                    f"{proxy.url}/api/projects/{pid}/tasks",
                    token,
                    {"title": f"{user} {n}"},
                    "create",
                )
                assert created.answer.status == 201, created
                task_id = json.loads(created.answer.body)["id"]
                moved = await keyed(
                    http,
                    f"{proxy.url}/api/tasks/{task_id}/move",
                    token,
                    {"toStatus": "done"},
                    "move",
                )
                assert moved.answer.status == 200, moved
                changes.extend((created, moved))

    try:
        share, extra = divmod(TASKS, CLIENTS)
        await asyncio.gather(*(client(u, share + (i < extra)) for i, u in enumerate(users)))
        live = await asyncio.wait_for(watcher, 60)
    finally:
        watcher.cancel()
        await ws.close()
        await proxy.aclose()

    # Enough answers were lost for this to mean something, and every lost one was retried.
    lost = sum(len(v) for v in proxy.dropped.values())
    assert lost > DROP_RATE * 2 * TASKS * 0.8, lost
    assert sum(c.attempts - 1 for c in changes) == lost
    # Every retry was answered exactly as the lost answer(s) of its key had been.
    by_key = {c.key: c for c in changes}
    for key, dropped in proxy.dropped.items():
        got = by_key[key].answer
        for original in dropped:
            original_kept = {k.lower(): v for k, v in original.headers.items() if k.lower() in KEPT}
            assert (original.status, original_kept, original.body) == (
                got.status, got.headers, got.body,
            ), key  # fmt: skip

    # Exactly one task per create, each moved once.
    status, snapshot = await board.call("GET", f"/api/projects/{pid}/tasks")
    assert status == 200
    assert len(snapshot["tasks"]) == TASKS
    assert {t["status"] for t in snapshot["tasks"]} == {"done"}
    assert snapshot["offset"] == 2 * TASKS

    # Exactly one event per change, offsets gap-free, and each answer names its own event.
    published = board.events(room=room)
    assert [e["offset"] for e in published] == list(range(1, 2 * TASKS + 1))
    assert [e["offset"] for e in live] == list(range(1, 2 * TASKS + 1))
    per_task = Counter(
        (e["type"], e["data"]["task"]["id"] if "task" in e["data"] else e["data"]["taskId"])
        for e in published
    )
    assert set(per_task.values()) == {1}
    by_offset = {e["offset"]: e for e in published}
    for change in changes:
        event = by_offset[int(change.answer.headers["liveboard-offset"])]
        assert change.answer.headers["liveboard-epoch"] == event["epoch"]
        body = json.loads(change.answer.body)
        if change.kind == "create":
            assert (event["type"], event["data"]["task"]) == ("task:created", body)
        else:
            assert (event["type"], event["data"]["taskId"]) == ("task:moved", body["id"])
