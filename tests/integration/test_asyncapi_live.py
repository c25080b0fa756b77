"""The AsyncAPI document against a real server: what it serves, and what it really sends.

``GET /asyncapi.json`` on a running ``liveboard serve`` is the generated document (the same
as docs/asyncapi.json), public like ``/openapi.json``. Then every message the server sends in a
session that touches every event type, presence, replies, errors and a revocation validates
against the document's schema for its type, checked closed (no field the document does not
declare): the schema matches what tasks/service.py and the real-time layer put on the wire.
"""

from __future__ import annotations

import json
import time
from collections.abc import Set as AbstractSet
from pathlib import Path

import aiohttp

from liveboard.asyncapi import build_document
from liveboard.protocol import EVENT_TYPES, SERVER_MESSAGE_TYPES
from tests.support.board import Board
from tests.support.contract import Json, project_room, workspace_room
from tests.support.protocol_schema import MessageSchemas
from tests.support.servers import LiveboardProcess
from tests.support.tokens import make_token
from tests.support.wsclient import WsClient

ROOT = Path(__file__).resolve().parents[2]


async def test_the_served_document_is_the_generated_one(server: LiveboardProcess) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.url + "/asyncapi.json") as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/json"
        served = await response.json()
    assert served == build_document()
    assert served == json.loads((ROOT / "docs" / "asyncapi.json").read_text(encoding="utf-8"))
    assert served["asyncapi"] == "3.0.0"
    # Each channel's address is the WebSocket endpoint: it opens with `connected`.
    ws_base = server.url.replace("http://", "ws://", 1)
    for channel in served["channels"].values():
        client = await WsClient.connect(ws_base + channel["address"], make_token("reader"))
        assert client.connected["type"] == "connected", channel["address"]
        await client.close()


async def _collect(client: WsClient, wanted: AbstractSet[str], wait: float = 10.0) -> list[Json]:
    """Everything ``client`` receives until it has had each type of ``wanted`` (read in
    rounds ended by a ping's pong, which is kept too)."""
    found: list[Json] = []
    deadline = time.monotonic() + wait
    while not wanted <= {m["type"] for m in found}:
        assert time.monotonic() < deadline, wanted - {m["type"] for m in found}
        found += [*await client.barrier(), {"type": "pong", "id": "barrier"}]
    return found


async def test_every_message_the_server_sends_validates(board: Board) -> None:
    schemas = MessageSchemas(build_document())
    owner, member = board.user("owner"), board.user("member")
    wid = await board.workspace(owner)
    watcher = await board.connect(owner, name="Owner")
    other = await board.connect(member)
    await watcher.send({"type": "subscribe", "room": workspace_room(wid), "id": 1})
    # Live before the changes below (a subscribe without since sees only later events).
    watched = await watcher.barrier()

    # Workspace events: project:created, member:added (member:removed comes last).
    pid = str((await board.project(owner, wid))["id"])
    await board.add_member(owner, wid, member, role="admin")
    for client in (watcher, other):
        await client.send({"type": "subscribe", "room": project_room(pid), "id": "s"})
    since = {"offset": 0, "epoch": "elsewhere"}
    await other.send({"type": "subscribe", "room": workspace_room(wid), "since": since})
    watched += await watcher.barrier()  # subscribed before the changes below
    early = await other.barrier()

    # Presence, then every task event, with and without an origin and an assignee.
    await watcher.send({"type": "presence", "action": "join", "room": project_room(pid)})
    await other.send({"type": "presence", "action": "join", "room": project_room(pid)})
    task = await board.task(owner, pid, "First", connection_id=watcher.connection_id)
    await board.task(owner, pid, "Second", assigneeId=member, order=5)
    await board.patch(owner, task["id"], {"title": "First!", "description": "d"})
    await board.patch(owner, task["id"], {"assigneeId": member})
    await board.patch(owner, task["id"], {"assigneeId": None})
    await board.move(owner, task["id"], "done")
    await board.move(owner, task["id"], "todo", order=0.5)
    await board.delete(owner, task["id"])
    await other.send({"type": "presence", "action": "leave", "room": project_room(pid)})

    # Replies and errors.
    await watcher.send({"type": "refresh", "token": make_token(owner), "id": 2})
    await watcher.send({"type": "subscribe", "room": "nowhere", "id": 3})
    await watcher.send({"type": "unsubscribe", "room": "project:none"})
    await watcher.send({"type": "teleport", "id": 4})
    await watcher.send_str("{not json")
    await watcher.send({"type": "refresh", "token": make_token(member), "id": 5})

    # A revocation: member:removed, and the removed user's subscriptions end with a reason.
    await board.remove_member(owner, wid, member)
    await watcher.send({"type": "unsubscribe", "room": project_room(pid), "id": 6})

    received = [watcher.connected, other.connected, *early]
    wanted = EVENT_TYPES | {"refreshed", "error", "unsubscribed"}
    received += watched
    received += await _collect(watcher, wanted - {m["type"] for m in watched})
    received += await _collect(other, {"unsubscribed", "presence:update", "task:deleted"})
    for message in received:
        schemas.check(message)
    seen = {message["type"] for message in received}
    # Everything but resync, which needs a lost history (its encoder is checked in
    # tests/unit/test_asyncapi.py).
    assert seen == SERVER_MESSAGE_TYPES - {"resync"}, SERVER_MESSAGE_TYPES - seen
    updates = [m for m in received if m["type"] == "task:updated"]
    assert {field for m in updates for field in m["data"]["changes"]} == {
        "title",
        "description",
        "assigneeId",
    }
    assert any("origin" in m for m in received if m["type"] in EVENT_TYPES)
    assert any("recovered" in m for m in received if m["type"] == "subscribed")
    assert any(m.get("reason") for m in received if m["type"] == "unsubscribed")
    assert {m["code"] for m in received if m["type"] == "error"} >= {
        "invalid_room",
        "unknown_type",
        "bad_json",
        "unauthorized",
    }
