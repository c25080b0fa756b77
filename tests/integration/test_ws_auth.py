"""WebSocket upgrade: tokens (header, query), Origin policy, ``connected``; ``refresh``; expiry.

CONTRACT §2 and §4: an auth failure is HTTP 401 with no upgrade, a foreign Origin 403; the token
may come as ``Authorization: Bearer`` or ``?token=``; ``connected`` is the first message; a
``refresh`` with a token of the same user answers ``refreshed`` with ``expiresAt``; a socket
whose token expires is closed with 4001 within 1 s after ``exp`` unless refreshed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
import pytest

from tests.support.board import Board
from tests.support.servers import LiveboardProcess
from tests.support.timing import timeout
from tests.support.tokens import TEST_SECRET, make_token
from tests.support.wsclient import WsClient


def _claims(sub: str | None = "mallory", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"iat": now, "exp": now + 3600}
    if sub is not None:
        claims["sub"] = sub
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


BAD_TOKENS: dict[str, Callable[[], str]] = {
    "garbage": lambda: "not-a-jwt",
    "empty-segments": lambda: "a.b.c",
    "expired": lambda: make_token("mallory", ttl=-60),
    "wrong-key": lambda: jwt.encode(_claims(), "another-secret-0123456789abcdef!!", "HS256"),
    "alg-none": lambda: jwt.encode(_claims(), None, algorithm="none"),  # type: ignore[arg-type]  # ("none" takes no key)
    "other-alg-hs384": lambda: jwt.encode(_claims(), TEST_SECRET, algorithm="HS384"),
    "missing-sub": lambda: jwt.encode(_claims(sub=None), TEST_SECRET, "HS256"),
    "missing-exp": lambda: jwt.encode(_claims(exp=None), TEST_SECRET, "HS256"),
    "not-yet-valid": lambda: jwt.encode(_claims(nbf=int(time.time()) + 600), TEST_SECRET, "HS256"),
}


async def _refused(url: str, **kwargs: Any) -> int:
    """Attempt an upgrade that must be refused; return the HTTP status."""
    try:
        client = await WsClient.connect(url, **kwargs)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await client.close()
    raise AssertionError("the upgrade was accepted")


# Upgrade: tokens


async def test_token_in_authorization_header(board: Board) -> None:
    user = board.user("alice")
    client = await board.connect(user)
    assert client.connected["type"] == "connected"
    assert client.connected["userId"] == user
    assert isinstance(client.connected["connectionId"], str)
    assert client.connected["connectionId"]
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_token_in_query_string(board: Board) -> None:
    user = board.user("bob")
    client = await board.connect(user, query_token=True)
    assert client.connected["userId"] == user
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_ws_alias_path(board: Board) -> None:
    user = board.user("carol")
    alias = board.server.url.replace("http://", "ws://") + "/ws"
    client = await WsClient.connect(alias, make_token(user))
    board.clients.append(client)
    assert client.connected["type"] == "connected"
    assert client.connected["userId"] == user


async def test_connection_ids_are_distinct(board: Board) -> None:
    user = board.user("dave")
    first = await board.connect(user)
    second = await board.connect(user)
    assert first.connected["connectionId"] != second.connected["connectionId"]
    assert first.connected["userId"] == second.connected["userId"] == user


async def test_connected_is_the_first_message(board: Board) -> None:
    user = board.user("erin")
    client = await board.connect(user, read=False)
    assert set(client.connected) >= {"type", "connectionId", "userId"}
    assert client.connected["type"] == "connected"


async def test_no_token_is_401(board: Board) -> None:
    assert await _refused(board.ws_url) == 401


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
@pytest.mark.parametrize("where", ["header", "query"])
async def test_bad_token_is_401(board: Board, kind: str, where: str) -> None:
    token = BAD_TOKENS[kind]()
    status = await _refused(board.ws_url, token=token, query_token=where == "query")
    assert status == 401


async def test_non_bearer_authorization_is_401(board: Board) -> None:
    token = make_token(board.user("frank"))
    headers = {"Authorization": f"Basic {token}"}
    assert await _refused(board.ws_url, headers=headers) == 401


async def test_refused_upgrade_has_error_body(board: Board) -> None:
    async with board.http.get(
        board.ws_url.replace("ws://", "http://"),
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Authorization": "Bearer garbage",
        },
    ) as response:
        assert response.status == 401
        body = await response.json()
    assert body["error"]["code"] == "unauthorized"


# Upgrade: Origin (default: no Origin or same host only)


async def test_same_host_origin_allowed(board: Board) -> None:
    user = board.user("gina")
    client = await board.connect(user, headers={"Origin": board.server.url})
    assert client.connected["userId"] == user


async def test_foreign_origin_is_403(board: Board) -> None:
    token = make_token(board.user("hank"))
    for origin in ("http://evil.example.com", "http://127.0.0.1:1", "null"):
        status = await _refused(board.ws_url, token=token, headers={"Origin": origin})
        assert status == 403, origin


async def _origin_status(server: LiveboardProcess, origin: str | None) -> int:
    """101 when the upgrade with this Origin succeeds, else the refusal's HTTP status."""
    headers = {} if origin is None else {"Origin": origin}
    try:
        client = await WsClient.connect(server.ws_url, make_token("ivy"), headers=headers)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    try:
        assert client.connected["userId"] == "ivy"
    finally:
        await client.close()
    return 101


async def test_allowed_origins_list(server_factory: Callable[..., LiveboardProcess]) -> None:
    allowed = "https://app.example.com, https://admin.example.com"
    server = server_factory(env={"LIVEBOARD_ALLOWED_ORIGINS": allowed})
    assert await _origin_status(server, "https://app.example.com") == 101
    assert await _origin_status(server, "https://admin.example.com") == 101
    assert await _origin_status(server, "https://evil.example.com") == 403
    assert await _origin_status(server, "http://app.example.com") == 403  # other scheme
    assert await _origin_status(server, "https://app.example.com:8443") == 403  # other port


async def test_allowed_origins_star(server_factory: Callable[..., LiveboardProcess]) -> None:
    server = server_factory(env={"LIVEBOARD_ALLOWED_ORIGINS": "*"})
    assert await _origin_status(server, "https://anything.example.org") == 101
    assert await _origin_status(server, "null") == 101
    assert await _origin_status(server, None) == 101
    # the Origin policy does not replace authentication
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await WsClient.connect(server.ws_url, "garbage", headers={"Origin": "https://x.org"})
    assert refused.value.status == 401


# refresh


def _exp(token: str) -> int:
    return int(jwt.decode(token, options={"verify_signature": False})["exp"])


async def test_refresh_same_user(board: Board) -> None:
    user = board.user("jack")
    client = await board.connect(user, ttl=600)
    fresh = make_token(user, ttl=7200)
    reply = await client.request({"type": "refresh", "token": fresh})
    assert reply["type"] == "refreshed"
    assert reply["expiresAt"] == _exp(fresh)
    assert isinstance(reply["expiresAt"], int)
    # integer ids are echoed as integers
    await client.send({"type": "refresh", "token": fresh, "id": 42})
    assert await client.next() == {"type": "refreshed", "expiresAt": _exp(fresh), "id": 42}


async def test_refresh_other_user_is_unauthorized(board: Board) -> None:
    user = board.user("kate")
    client = await board.connect(user)
    reply = await client.request({"type": "refresh", "token": make_token(board.user("leo"))})
    assert reply["type"] == "error"
    assert reply["code"] == "unauthorized"
    assert isinstance(reply["message"], str)
    assert reply["message"]
    assert (await client.request({"type": "ping"}))["type"] == "pong"


@pytest.mark.parametrize("kind", ["garbage", "expired", "wrong-key", "alg-none"])
async def test_refresh_bad_token_is_unauthorized(board: Board, kind: str) -> None:
    client = await board.connect(board.user("mia"))
    token = BAD_TOKENS[kind]()
    reply = await client.request({"type": "refresh", "token": token})
    assert reply["type"] == "error"
    assert reply["code"] == "unauthorized"
    assert (await client.request({"type": "ping"}))["type"] == "pong"


# expiry


async def _connect_expiring(board: Board, user: str, ttl: float) -> tuple[WsClient, int]:
    token = make_token(user, ttl=ttl)
    client = await board.connect(token=token)
    return client, _exp(token)


async def _expires_on_time(board: Board) -> None:
    client, exp = await _connect_expiring(board, board.user("nina"), ttl=2)
    code = await client.expect_close(wait=exp - time.time() + 3)
    closed_at = time.time()
    assert code == 4001
    assert closed_at >= exp - 0.05, "closed before the token expired"
    assert closed_at <= exp + 1.0 + timeout(0.2), f"closed {closed_at - exp:.2f}s after exp"


async def _refresh_postpones(board: Board) -> None:
    user = board.user("otto")
    client, exp = await _connect_expiring(board, user, ttl=2)
    reply = await client.request({"type": "refresh", "token": make_token(user, ttl=3600)})
    assert reply["type"] == "refreshed"
    await asyncio.sleep(max(0.0, exp + 1.5 - time.time()))
    assert not client.closed.is_set(), f"closed with {client.close_code} despite the refresh"
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def _refused_refresh_keeps_expiry(board: Board) -> None:
    user = board.user("pia")
    client, exp = await _connect_expiring(board, user, ttl=2)
    reply = await client.request({"type": "refresh", "token": make_token("someone-else")})
    assert reply["code"] == "unauthorized"
    assert await client.expect_close(wait=exp - time.time() + 3) == 4001


async def _short_refresh_shortens(board: Board) -> None:
    user = board.user("quinn")
    client, _ = await _connect_expiring(board, user, ttl=3600)
    token = make_token(user, ttl=2)
    reply = await client.request({"type": "refresh", "token": token})
    assert reply == {"type": "refreshed", "expiresAt": _exp(token), "id": reply["id"]}
    assert await client.expect_close(wait=_exp(token) - time.time() + 3) == 4001


async def test_token_expiry(board: Board) -> None:
    """Four expiry scenarios, run side by side (each waits for a 2 s token)."""
    await asyncio.gather(
        _expires_on_time(board),
        _refresh_postpones(board),
        _refused_refresh_keeps_expiry(board),
        _short_refresh_shortens(board),
    )


async def test_a_request_that_is_not_an_upgrade_gets_the_error_body(board: Board) -> None:
    """The WebSocket route answers its own refusals (no REST middleware wraps it)."""
    token = make_token(board.user("alice"))
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{board.server.url}/ws?token={token}") as response,
    ):
        assert response.status == 400
        body = await response.json()
        assert body["error"]["code"] == "bad_request"


async def test_another_method_on_the_websocket_route_gets_the_error_body(board: Board) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{board.server.url}/ws") as response:
        assert response.status == 405
        assert (await response.json())["error"]["code"] == "bad_request"
