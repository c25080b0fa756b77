"""Authorisation matrix: what the existing auth tests do not already cover (CONTRACT §2-§4).

``test_rest_auth.py`` and ``test_ws_auth.py`` cover every bad token form on REST and on upgrade,
a foreign ``Origin`` with a header token and a refresh with another user's token;
``test_rest_*.py`` cover non-members per call. This module adds:

* one table of every REST call (checked against the route table, so a new route must be added)
  made by three intruders on another workspace's real ids: a stranger, the owner of a
  neighbouring workspace, a removed member. Each gets exactly what a missing id gets (404, same
  body): no existence oracle through version conflicts, validation or status names; and the
  workspace is unchanged, its subscribers see no event;
* the same for every room of that workspace and every message that names a room;
* a member removed mid-session: open sockets lose every room of the workspace at once, with
  live traffic and subscribes racing the removal, and regain nothing until re-added;
* CSWSH: a foreign or look-alike ``Origin`` is refused before the upgrade, with the token in the
  query string (what a browser page would use) or in a header;
* a token of user A never refreshes (nor re-identifies, nor extends) a connection of user B;
* tokens and query strings never reach the server's log (text and JSON formats).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
import pytest

from liveboard.tasks.api import ROUTES
from tests.support.board import ApiError, Board
from tests.support.contract import project_room, workspace_room
from tests.support.servers import LiveboardProcess
from tests.support.timing import timeout
from tests.support.tokens import TEST_SECRET, make_token
from tests.support.wsclient import WsClient

MISSING = {"wid": "ws_doesNotExist0", "pid": "prj_doesNotExist0", "tid": "tsk_doesNotExist0"}

# Every REST call with an id in its path, with bodies chosen to probe for an existence oracle:
# a valid change, a stale version (409 would say "it exists"), an unknown status or an invalid
# body (422 would say "I looked it up").
REST_MATRIX: list[tuple[str, str, Any, dict[str, str]]] = [
    ("GET", "/api/workspaces/{wid}/members", None, {}),
    ("POST", "/api/workspaces/{wid}/members", {"userId": "{me}", "role": "admin"}, {}),
    ("POST", "/api/workspaces/{wid}/members", {"userId": "{member}"}, {}),  # 409 if exists
    ("DELETE", "/api/workspaces/{wid}/members/{member}", None, {}),
    ("DELETE", "/api/workspaces/{wid}/members/{owner}", None, {}),  # 409 if exists
    ("DELETE", "/api/workspaces/{wid}/members/{me}", None, {}),
    ("POST", "/api/workspaces/{wid}/projects", {"name": "sneaky"}, {}),
    ("POST", "/api/workspaces/{wid}/projects", {"name": "dup", "statuses": ["a", "a"]}, {}),
    ("GET", "/api/workspaces/{wid}/projects", None, {}),
    ("GET", "/api/projects/{pid}", None, {}),
    ("GET", "/api/projects/{pid}/tasks", None, {}),
    ("POST", "/api/projects/{pid}/tasks", {"title": "sneaky"}, {}),
    ("POST", "/api/projects/{pid}/tasks", {"title": "sneaky", "status": "no-such-status"}, {}),
    ("POST", "/api/projects/{pid}/tasks", {"title": "sneaky", "assigneeId": "{me}"}, {}),
    ("GET", "/api/tasks/{tid}", None, {}),
    ("PATCH", "/api/tasks/{tid}", {"title": "sneaky"}, {}),
    ("PATCH", "/api/tasks/{tid}", {"title": "sneaky", "version": 999}, {}),
    ("PATCH", "/api/tasks/{tid}", {"title": "sneaky"}, {"If-Match": '"999"'}),
    ("PATCH", "/api/tasks/{tid}", {"status": "done"}, {}),
    ("POST", "/api/tasks/{tid}/move", {"toStatus": "done"}, {}),
    ("POST", "/api/tasks/{tid}/move", {"toStatus": "no-such-status"}, {}),
    ("POST", "/api/tasks/{tid}/move", {"toStatus": "done", "version": 999}, {}),
    ("DELETE", "/api/tasks/{tid}", None, {}),
    ("DELETE", "/api/tasks/{tid}", None, {"If-Match": '"999"'}),
]
# Calls without an id: checked for what they reveal (the list) and do (a workspace of one's own).
WITHOUT_IDS = {("GET", "/api/workspaces"), ("POST", "/api/workspaces")}

INTRUDERS = ("stranger", "neighbour", "removed")


def test_the_matrix_covers_every_route() -> None:
    routes = {(r.method, r.path) for r in ROUTES}
    covered = {(m, re.sub(r"\{(member|owner|me)\}", "{uid}", p)) for m, p, _, _ in REST_MATRIX}
    assert covered | WITHOUT_IDS == routes, (
        f"missing from the matrix: {routes - covered - WITHOUT_IDS}; "
        f"unknown: {(covered | WITHOUT_IDS) - routes}"
    )


async def _raw(
    board: Board, method: str, path: str, user: str, body: Any, headers: dict[str, str]
) -> tuple[int, Any]:
    all_headers = {"Authorization": f"Bearer {make_token(user)}", **headers}
    async with board.http.request(
        method, board.url + path, json=body, headers=all_headers
    ) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else None


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, real in ids.items():
            value = value.replace("{" + key + "}", real)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


def _blind(body: Any, ids: dict[str, str]) -> str:
    """The body with the ids it names replaced, to compare answers for real and missing ids."""
    text = json.dumps(body, sort_keys=True)
    for real in ids.values():
        text = text.replace(real, "<ID>")
    return text


async def _victim_workspace(board: Board) -> dict[str, Any]:
    """Workspace B: owner, a member, two projects, tasks; and a watcher on every room."""
    owner, member = board.user("b-owner"), board.user("b-member")
    wid = await board.workspace(owner, member)
    pids = [str((await board.project(owner, wid, name))["id"]) for name in ("one", "two")]
    tids = [str((await board.task(owner, pids[0], f"t{i}"))["id"]) for i in range(3)]
    watcher = await board.connect(owner)
    for room in (workspace_room(wid), *(project_room(p) for p in pids)):
        await watcher.subscribe(room)
    return {"owner": owner, "member": member, "wid": wid, "pids": pids, "tids": tids, "ws": watcher}


async def _state(board: Board, b: dict[str, Any]) -> Any:
    owner = b["owner"]
    members = await board.call("GET", f"/api/workspaces/{b['wid']}/members", owner)
    projects = await board.call("GET", f"/api/workspaces/{b['wid']}/projects", owner)
    snapshots = [await board.snapshot(owner, pid) for pid in b["pids"]]
    return members, projects, snapshots


async def _intruders(board: Board, b: dict[str, Any]) -> dict[str, str]:
    stranger, neighbour, removed = (board.user(n) for n in INTRUDERS)
    _, own_pid = await board.board(neighbour)  # a workspace of its own, with a project
    await board.task(neighbour, own_pid, "mine")
    await board.add_member(b["owner"], b["wid"], removed, role="admin")
    await board.remove_member(b["owner"], b["wid"], removed)
    return {"stranger": stranger, "neighbour": neighbour, "removed": removed}


async def test_cross_workspace_rest_matrix(board: Board) -> None:
    b = await _victim_workspace(board)
    intruders = await _intruders(board, b)
    # The set-up's member:added and member:removed: an answer does not wait for its event's
    # publish, so wait for them by name (a ping barrier alone could pass before them).
    await b["ws"].next("member:added")
    await b["ws"].next("member:removed")
    await b["ws"].barrier()
    before = await _state(board, b)
    real = {"wid": b["wid"], "pid": b["pids"][0], "tid": b["tids"][0]}
    failures: list[str] = []
    for label, intruder in intruders.items():
        people = {"member": b["member"], "owner": b["owner"], "me": intruder}
        for method, template, body, headers in REST_MATRIX:
            hidden = await _raw(
                board,
                method,
                _fill(template, {**real, **people}),
                intruder,
                _fill(body, {**real, **people}),
                headers,
            )
            missing = await _raw(
                board,
                method,
                _fill(template, {**MISSING, **people}),
                intruder,
                _fill(body, {**MISSING, **people}),
                headers,
            )
            row = f"{label}: {method} {template} {body or ''} {headers or ''}"
            if hidden[0] != missing[0] or _blind(hidden[1], real) != _blind(missing[1], MISSING):
                failures.append(f"{row}: real id → {hidden}, missing id → {missing}")
            elif hidden[0] != 404 and not (hidden[0] in (400, 422) and body is not None):
                failures.append(f"{row}: {hidden[0]} instead of 404: {hidden[1]}")
            elif hidden[0] == 404 and hidden[1]["error"]["code"] != "not_found":
                failures.append(f"{row}: 404 with {hidden[1]}")
        # the calls without ids reveal nothing of B
        listed = await board.call("GET", "/api/workspaces", intruder)
        if b["wid"] in {w["id"] for w in listed}:
            failures.append(f"{label}: GET /api/workspaces lists the foreign workspace")
    assert failures == [], "\n".join(failures)
    assert await _state(board, b) == before, "an intruder changed the workspace"
    leaked = await b["ws"].barrier()
    assert leaked == [], f"intruders caused events: {leaked}"


ROOM_MESSAGES: list[tuple[str, dict[str, Any], str]] = [
    ("subscribe", {"type": "subscribe"}, "forbidden"),
    ("subscribe since 0", {"type": "subscribe", "since": {"offset": 0, "epoch": "x"}}, "forbidden"),
    ("unsubscribe", {"type": "unsubscribe"}, "not_subscribed"),
    ("presence join", {"type": "presence", "action": "join"}, "not_subscribed"),
    ("presence leave", {"type": "presence", "action": "leave"}, "not_subscribed"),
]


async def test_cross_workspace_room_matrix(board: Board) -> None:
    b = await _victim_workspace(board)
    intruders = await _intruders(board, b)
    rooms = [workspace_room(b["wid"]), *(project_room(p) for p in b["pids"])]
    missing_for = {"workspace": "workspace:ws_doesNotExist0", "project": "project:prj_none0"}
    epoch = (await board.snapshot(b["owner"], b["pids"][0]))["epoch"]
    failures: list[str] = []
    clients: dict[str, WsClient] = {}
    for label, intruder in intruders.items():
        client = clients[label] = await board.connect(intruder, name=f"intruder {label}")
        for room in rooms:
            missing = missing_for[room.split(":")[0]]
            for name, template, code in ROOM_MESSAGES:
                message = json.loads(json.dumps(template).replace('"x"', json.dumps(epoch)))
                real = await client.request({**message, "room": room})
                fake = await client.request({**message, "room": missing})
                row = f"{label}: {name} {room}"
                if real.get("type") != "error" or real.get("code") != code:
                    failures.append(f"{row}: {real}")
                strip = {k: v for k, v in real.items() if k != "id"}
                strip_fake = {k: v for k, v in fake.items() if k != "id"}
                if json.dumps(strip).replace(room, "R") != json.dumps(strip_fake).replace(
                    missing, "R"
                ):
                    failures.append(f"{row}: differs from a missing room: {real} / {fake}")
    assert failures == [], "\n".join(failures)
    # live traffic in every room of B reaches no intruder, and none of them is present there
    watcher: WsClient = b["ws"]
    await watcher.send({"type": "presence", "action": "join", "room": rooms[1]})
    presence = await watcher.next("presence:update")
    assert [u["userId"] for u in presence["users"]] == [b["owner"]]
    await board.task(b["owner"], b["pids"][0], "secret")
    await board.task(b["owner"], b["pids"][1], "secret")
    await board.project(b["owner"], b["wid"], "secret")
    await board.add_member(b["owner"], b["wid"], board.user("newcomer"))
    for expected in ("task:created", "task:created", "project:created", "member:added"):
        await watcher.next(expected)
    for label, client in clients.items():
        assert await client.barrier() == [], f"{label} received something of B"
    assert await watcher.barrier() == []


# A member removed mid-session


async def test_member_removed_mid_session_loses_every_room_at_once(board: Board) -> None:
    owner, victim = board.user("owner"), board.user("victim")
    wid, pid = await board.board(owner, victim)
    other_pid = str((await board.project(owner, wid, "second"))["id"])
    rooms = [project_room(pid), project_room(other_pid), workspace_room(wid)]
    # the victim's own workspace, which must stay untouched
    own_wid, own_pid = await board.board(victim)
    watcher = await board.connect(owner)
    for room in rooms:
        await watcher.subscribe(room)
    await watcher.send({"type": "presence", "action": "join", "room": rooms[0]})
    await watcher.next("presence:update")
    tabs = [await board.connect(victim, name="Victim") for _ in range(3)]
    for tab in tabs:
        for room in rooms:
            assert (await tab.subscribe(room))["type"] == "subscribed"
        await tab.subscribe(project_room(own_pid))
        await tab.send({"type": "presence", "action": "join", "room": rooms[0]})
    await watcher.next("presence:update")

    # live traffic in both projects while the member is removed
    stop = asyncio.Event()

    async def traffic() -> int:
        made = 0
        while not stop.is_set():
            await board.task(owner, (pid, other_pid)[made % 2], f"live {made}")
            made += 1
        return made

    producer = asyncio.create_task(traffic())
    await asyncio.sleep(0.3)
    await board.remove_member(owner, wid, victim)
    removed_at = time.time() * 1000
    await asyncio.sleep(0.3)
    stop.set()
    await producer
    await board.task(owner, pid, "after")

    for index, tab in enumerate(tabs):
        ended: set[str] = set()
        for message in await tab.barrier():
            room = str(message.get("room"))
            if message["type"] == "unsubscribed":
                assert message == {"type": "unsubscribed", "room": room, "reason": "forbidden"}
                ended.add(room)
            elif room in rooms:
                # nothing of a room after its end, nothing committed after the removal
                assert room not in ended, f"tab {index}: {message['type']} after unsubscribed"
                if message["type"].startswith("task:"):
                    assert message["ts"] <= removed_at + 50, f"tab {index}: late {message}"
        assert ended == set(rooms), f"tab {index} kept {set(rooms) - ended}"
        # nothing comes back: subscribing again (with or without history) is refused
        for room in rooms:
            reply = await tab.subscribe(room, since={"offset": 0, "epoch": "e"})
            assert reply["type"] == "error", reply
            assert reply["code"] == "forbidden"
        # the victim's own workspace still works on the same socket
        await board.task(victim, own_pid, "mine")
        assert (await tab.next("task:created"))["room"] == project_room(own_pid)
    # presence: the victim left the room for everyone
    update = await watcher.next("presence:update")
    assert update["left"] == [victim]
    assert [u["userId"] for u in update["users"]] == [owner]
    # REST with the same, still valid, token: not found
    with pytest.raises(ApiError) as error:
        await board.snapshot(victim, pid)
    assert error.value.status == 404
    # re-added: everything works again
    await board.add_member(owner, wid, victim)
    assert (await tabs[0].subscribe(rooms[0]))["type"] == "subscribed"
    del own_wid


async def test_removal_racing_subscribes_never_leaves_a_live_subscription(board: Board) -> None:
    """Subscribes in flight while the member is removed: each must end refused or revoked.

    Eight tabs of the member subscribe a millisecond apart around the removal, most with
    ``since`` so that the room's history (~100 events) is read inside the same snapshot as the
    membership check: the window for a removal to commit and be published meanwhile. CONTRACT
    §3: the removed user's subscriptions end at once; no event committed after the removal may
    reach them. (Before the fix of 1ef6036 this failed in every attempt.)
    """
    owner, victim = board.user("owner"), board.user("racer")
    wid, pid = await board.board(owner, victim)
    room = project_room(pid)
    start = await board.snapshot(owner, pid)
    task = await board.task(owner, pid, "history", description="x" * 1000)
    for i in range(100):
        await board.patch(owner, task["id"], {"description": "yz"[i % 2] * 1000})
    watcher = await board.connect(owner)
    await watcher.subscribe(room)
    tabs = [await board.connect(victim) for _ in range(8)]
    stale: list[str] = []

    async def subscribe(tab: WsClient, index: int) -> None:
        await asyncio.sleep(index * 0.001)
        message: dict[str, Any] = {"type": "subscribe", "room": room}
        if index % 4:
            message["since"] = {"offset": start["offset"], "epoch": start["epoch"]}
        await tab.send(message)

    for attempt in range(10):
        if attempt:
            await board.add_member(owner, wid, victim)
        racing = [asyncio.create_task(subscribe(t, i)) for i, t in enumerate(tabs)]
        await asyncio.sleep(0.004)
        await board.remove_member(owner, wid, victim)
        await asyncio.gather(*racing)
        await board.task(owner, pid, f"after removal {attempt}")
        await watcher.next("task:created")
        for index, tab in enumerate(tabs):
            seen = await tab.barrier(wait=10)
            late = [
                m
                for m in seen
                if m.get("type") == "task:created"
                and m["data"]["task"]["title"] == f"after removal {attempt}"
            ]
            reply = await tab.request({"type": "unsubscribe", "room": room})
            if late or reply.get("type") != "error":
                kinds = [m.get("type") for m in seen if m.get("type") != "task:updated"]
                stale.append(
                    f"attempt {attempt}, tab {index}: got {kinds}, {len(late)} event(s) "
                    f"committed after the removal; unsubscribe → {reply}"
                )
        await asyncio.sleep(0.1)  # refused messages count towards the abuse limit (1008)
    assert stale == [], (
        f"a removed member kept a live subscription ({len(stale)} times):\n" + "\n".join(stale)
    )


# CSWSH


async def _upgrade_status(url: str, token: str, origin: str, *, query: bool) -> int:
    try:
        client = await WsClient.connect(url, token, headers={"Origin": origin}, query_token=query)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await client.close()
    return 101


async def test_cswsh_foreign_and_look_alike_origins_are_refused(board: Board) -> None:
    """A page elsewhere that holds (or was handed) a token in its URL cannot open a socket."""
    port = board.server.port
    token = make_token(board.user("victim"))
    before = await board.metrics()
    foreign = [
        "http://evil.example",
        "https://evil.example",
        f"http://127.0.0.1:{port}.evil.example",
        f"http://127.0.0.1:{port}@evil.example",
        f"http://evil.example/127.0.0.1:{port}",
        f"http://localhost.evil.example:{port}",
        f"http://127.0.0.1:{port + 1}",
        f"http://127.0.0.2:{port}",
        f"http://127.0.0.1:{port}:{port}",
        "http://127.0.0.1",
        "null",
        "file://",
        "",
    ]
    refused = {}
    for origin in foreign:
        for query in (True, False):
            status = await _upgrade_status(board.ws_url, token, origin, query=query)
            if status != 403:
                refused[f"{origin!r} (token in {'query' if query else 'header'})"] = status
    assert refused == {}, f"accepted or answered otherwise: {refused}"
    after = await board.metrics()
    assert after["liveboard_connections"] == before["liveboard_connections"]
    assert (
        after["liveboard_connections_opened_total"] == before["liveboard_connections_opened_total"]
    )
    # the page's own origin still works, with the token in the query string
    same = await _upgrade_status(board.ws_url, token, f"http://127.0.0.1:{port}", query=True)
    assert same == 101


async def test_cswsh_refusal_is_a_contract_error_body(board: Board) -> None:
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Origin": "http://evil.example",
    }
    url = board.ws_url.replace("ws://", "http://") + "?token=" + make_token(board.user("x"))
    async with board.http.get(url, headers=headers) as response:
        assert response.status == 403
        body = await response.json()
    assert body["error"]["code"] == "forbidden"
    assert isinstance(body["error"]["message"], str)


# A token of user A on a connection of user B


def _exp(token: str) -> int:
    return int(jwt.decode(token, options={"verify_signature": False})["exp"])


async def test_token_of_another_user_never_refreshes_a_connection(board: Board) -> None:
    alice, bob = board.user("alice"), board.user("bob")
    _, alice_pid = await board.board(alice)
    _, bob_pid = await board.board(bob)
    bob_token = make_token(bob, name="Bob", ttl=3)
    client = await board.connect(token=bob_token)
    assert client.connected["userId"] == bob
    offered = {
        "alice, long-lived": make_token(alice, ttl=7200),
        "alice, named Bob": make_token(alice, name="Bob", ttl=7200),
        "sub with a trailing space": make_token(bob + " ", ttl=7200),
        "sub in upper case": make_token(bob.upper(), ttl=7200),
        "sub as a list": jwt.encode(
            {"sub": [bob], "exp": int(time.time()) + 7200}, TEST_SECRET, "HS256"
        ),
    }
    for label, token in offered.items():
        reply = await client.request({"type": "refresh", "token": token})
        assert reply["type"] == "error", (label, reply)
        assert reply["code"] == "unauthorized", (label, reply)
    # still bob: bob's rooms, not alice's; bob's name in presence
    assert (await client.subscribe(project_room(bob_pid)))["type"] == "subscribed"
    denied = await client.subscribe(project_room(alice_pid))
    assert denied["code"] == "forbidden"
    await client.send({"type": "presence", "action": "join", "room": project_room(bob_pid)})
    update = await client.next("presence:update")
    assert update["users"] == [{"userId": bob, "name": "Bob"}]
    # and bob's token still expires when it says: none of the offered tokens extended it
    code = await client.expect_close(wait=_exp(bob_token) - time.time() + 3)
    assert code == 4001
    assert time.time() <= _exp(bob_token) + 1.0 + timeout(0.5)


# Logs


def _log_cases(server: LiveboardProcess) -> tuple[list[str], Callable[[], Any]]:
    """Tokens (valid, expired, forged, foreign) and the traffic that carries them everywhere."""
    now = int(time.time())
    tokens = {
        "valid": make_token("log-user"),
        "valid-2": make_token("log-user-2", name="Log User"),
        "expired": make_token("log-user", ttl=-60),
        "forged": jwt.encode(
            {"sub": "log-user", "exp": now + 600}, "wrong-secret-0123456789abcdefghijkl"
        ),
        "alg-none": jwt.encode({"sub": "log-user", "exp": now + 600}, None, algorithm="none"),  # type: ignore[arg-type]  # ("none" takes no key)
        "refresh": make_token("log-user", ttl=7200),
        "refresh-other": make_token("someone-else", ttl=7200),
        "origin": make_token("log-user", ttl=900),
    }

    async def traffic() -> None:
        url, ws_url = server.url, server.ws_url
        async with aiohttp.ClientSession() as http:
            for kind in ("valid", "expired", "forged", "alg-none"):
                token = tokens[kind]
                for path in ("/api/workspaces", "/api/projects/prj_missing", "/api/nowhere"):
                    headers = {"Authorization": f"Bearer {token}"}
                    async with http.get(url + path, headers=headers) as response:
                        await response.read()
                    async with http.get(f"{url}{path}?token={token}") as response:
                        await response.read()
                    async with http.get(f"{url}{path}?access_token={token}&x=1") as response:
                        await response.read()
                for query in (True, False):
                    try:
                        client = await WsClient.connect(ws_url, token, query_token=query)
                    except aiohttp.WSServerHandshakeError:
                        continue
                    await client.request({"type": "ping"})
                    await client.close()
            # a WebSocket that refreshes (accepted and refused) and one with a foreign origin
            client = await WsClient.connect(ws_url, tokens["valid-2"], query_token=True)
            await client.request({"type": "refresh", "token": tokens["refresh-other"]})
            await client.request({"type": "refresh", "token": make_token("log-user-2")})
            await client.send_str('{"type": "refresh", "token": "' + tokens["refresh"] + '"')
            await client.next("error")
            await client.close()
            client = await WsClient.connect(ws_url, tokens["refresh"], query_token=True)
            await client.request({"type": "refresh", "token": tokens["refresh"]})
            await client.close()
            with contextlib.suppress(aiohttp.WSServerHandshakeError):
                await WsClient.connect(
                    ws_url, tokens["origin"], query_token=True, headers={"Origin": "http://e.x"}
                )

    return list(tokens.values()), traffic


def _secret_parts(token: str) -> list[str]:
    """The token, and its claims and signature segments (the header is the same for all)."""
    parts = token.split(".")
    return [token, *(p for p in parts[1:] if len(p) >= 16)]


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_tokens_never_reach_the_logs(
    server_factory: Callable[..., LiveboardProcess], log_format: str
) -> None:
    server = server_factory(env={"LIVEBOARD_LOG_FORMAT": log_format})
    tokens, traffic = _log_cases(server)
    await traffic()
    server.terminate()
    log = server.log_path.read_text(errors="replace")
    assert "GET /ws/connect" in log or "/ws/connect" in log, "the access log is not on"
    leaked = [part[:24] + "…" for token in tokens for part in _secret_parts(token) if part in log]
    assert leaked == [], f"token material in the {log_format} log: {leaked}"


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_query_strings_never_reach_the_logs(
    server_factory: Callable[..., LiveboardProcess], log_format: str
) -> None:
    """CONTRACT §2: "Query strings are never written to logs" — not even for a request the HTTP
    parser rejects (a URL over its 8190-byte line limit is logged with its first bytes)."""
    server = server_factory(env={"LIVEBOARD_LOG_FORMAT": log_format})
    token = make_token("log-user")
    marker = "q-marker-7f3a"
    async with aiohttp.ClientSession() as http:
        for path in (
            f"/api/workspaces?token={token}&{marker}=1",
            f"/ws/connect?token={token}&{marker}=2",
            f"/nowhere?{marker}=3",
        ):
            async with http.get(server.url + path) as response:
                await response.read()
    # a URL too long for the HTTP parser, the token first: what a careless client may send
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    padding = "p" * 9000
    writer.write(
        f"GET /ws/connect?token={token}&{marker}=4&pad={padding} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\n\r\n".encode()
    )
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), timeout(5))
    writer.close()
    assert b" 400 " in status or b" 414 " in status, status
    server.terminate()
    log = server.log_path.read_text(errors="replace")
    lines = [line[:300] for line in log.splitlines() if marker in line or "token=" in line]
    assert lines == [], f"query strings in the {log_format} log:\n" + "\n".join(lines)
