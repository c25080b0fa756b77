"""CONTRACT §6.5: the token out of the URL, as a subprotocol, on both upgrade paths.

``Sec-WebSocket-Protocol: liveboard.v1, liveboard.token.<jwt>`` authenticates the upgrade; the
101 names ``liveboard.v1`` and never the token; a bad token there is a 401 like anywhere else,
two tokens are a 401, and the token is in no log line. The router's path (an upgrade as a
connection's first request) and aiohttp's (an upgrade after other requests) answer alike. Raw
sockets, so that the bytes on the wire are exactly the test's.
"""

from __future__ import annotations

import base64
import json
import os

import aiohttp
import pytest

from liveboard.protocol.subprotocols import SUBPROTOCOL, token_subprotocol
from tests.integration.test_ws_routing import (
    KEEP_ALIVE_REQUEST,
    _assert_served,
    _connection,
    _response,
)
from tests.support.servers import LiveboardProcess
from tests.support.tokens import make_token

PATHS = pytest.mark.parametrize("before", [b"", KEEP_ALIVE_REQUEST], ids=["router", "aiohttp"])


def _upgrade_head(protocols: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        "GET /ws/connect HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Protocol: {protocols}\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def _answer(
    server: LiveboardProcess, before: bytes, protocols: str
) -> tuple[int, dict[str, str], bytes]:
    async with _connection(server) as (reader, writer):
        writer.write(before + _upgrade_head(protocols))
        if before:
            assert (await _response(reader))[0] == 200
        status, headers, body = await _response(reader)
        if status == 101:
            await _assert_served(reader, writer)
        return status, headers, body


@PATHS
async def test_a_token_in_the_subprotocol_is_accepted_and_never_echoed(
    server: LiveboardProcess, before: bytes
) -> None:
    token = make_token("subprotocol-user")
    status, headers, _ = await _answer(server, before, f"{SUBPROTOCOL}, {token_subprotocol(token)}")
    assert status == 101
    assert headers["sec-websocket-protocol"] == SUBPROTOCOL
    assert token not in json.dumps(headers)


@PATHS
async def test_the_version_without_a_token_is_401_naming_where_a_token_goes(
    server: LiveboardProcess, before: bytes
) -> None:
    status, _, body = await _answer(server, before, SUBPROTOCOL)
    assert status == 401
    error = json.loads(body)["error"]
    assert error["code"] == "unauthorized"
    assert "liveboard.token" in error["message"]  # the refusal says where a token may go


@PATHS
async def test_a_bad_token_in_the_subprotocol_is_401(
    server: LiveboardProcess, before: bytes
) -> None:
    status, _, body = await _answer(server, before, f"{SUBPROTOCOL}, liveboard.token.not-a-jwt")
    assert status == 401
    assert json.loads(body)["error"]["code"] == "unauthorized"


@PATHS
async def test_two_tokens_are_401(server: LiveboardProcess, before: bytes) -> None:
    one, other = make_token("two-a"), make_token("two-b")
    offered = f"{SUBPROTOCOL}, {token_subprotocol(one)}, {token_subprotocol(other)}"
    status, _, body = await _answer(server, before, offered)
    assert status == 401
    assert "more than one" in json.loads(body)["error"]["message"]


async def test_a_client_library_gets_the_selected_protocol(server: LiveboardProcess) -> None:
    """aiohttp's client, as an SDK would use it: it checks the answer names what it offered."""
    token = make_token("client-library")
    url = server.url.replace("http", "ws", 1) + "/ws"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, protocols=(SUBPROTOCOL, token_subprotocol(token))) as ws,
    ):
        assert ws.protocol == SUBPROTOCOL
        assert (await ws.receive_json())["type"] == "connected"


async def test_the_token_reaches_no_log_line(server: LiveboardProcess) -> None:
    accepted = make_token("log-check-ok")
    refused = make_token("log-check-refused", ttl=-60)
    for token in (accepted, refused):
        await _answer(server, b"", f"{SUBPROTOCOL}, {token_subprotocol(token)}")
    logs = server.log_path.read_text(errors="replace")
    assert "/ws/connect" in logs  # the access lines were written
    assert accepted not in logs
    assert refused not in logs
