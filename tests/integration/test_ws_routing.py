"""Which server answers what on one port: the connection router (``realtime.transport.router``).

A connection whose first request is a well-formed upgrade is served by liveboard's own
WebSocket layer; every other connection goes to aiohttp, including an upgrade that follows other
requests on a keep-alive connection. Both must behave the same for the client. Raw sockets here,
so that the bytes on the wire are exactly the test's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.frames import OP_TEXT, encode_frame
from tests.support.servers import LiveboardProcess
from tests.support.timing import timeout
from tests.support.tokens import make_token

KEEP_ALIVE_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def _upgrade_head(token: str, *, version: str = "13", path: str = "/ws/connect") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path}?token={token} HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: {version}\r\n\r\n"
    ).encode()


@contextlib.asynccontextmanager
async def _connection(
    server: LiveboardProcess,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    address = urlsplit(server.url)
    assert address.hostname is not None
    assert address.port is not None
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        yield reader, writer
    finally:
        writer.close()


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout(5))
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    }
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), timeout(5)) if length else b""
    return status, headers, body


async def _message(reader: asyncio.StreamReader) -> dict[str, Any]:
    first, second = await asyncio.wait_for(reader.readexactly(2), timeout(5))
    assert first == 0x81, f"expected a final text frame, got {first:#x}"
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    message: dict[str, Any] = json.loads(await reader.readexactly(length))
    return message


async def _assert_served(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """``connected`` arrives first and a ``ping`` is answered with its id."""
    assert (await _message(reader))["type"] == "connected"
    writer.write(encode_frame(OP_TEXT, b'{"type":"ping","id":"r1"}'))
    assert await _message(reader) == {"type": "pong", "id": "r1"}


async def test_an_upgrade_as_first_request_is_served(server: LiveboardProcess) -> None:
    async with _connection(server) as (reader, writer):
        writer.write(_upgrade_head(make_token("router-1")))
        status, headers, _ = await _response(reader)
        assert status == 101
        assert headers["upgrade"].lower() == "websocket"
        await _assert_served(reader, writer)


async def test_a_head_that_arrives_in_pieces_is_read_whole(server: LiveboardProcess) -> None:
    async with _connection(server) as (reader, writer):
        head = _upgrade_head(make_token("router-2"))
        for start in range(0, len(head), 7):
            writer.write(head[start : start + 7])
            await writer.drain()
            await asyncio.sleep(0.002)
        status, _, _ = await _response(reader)
        assert status == 101
        await _assert_served(reader, writer)


async def test_an_upgrade_after_other_requests_on_one_connection_is_served(
    server: LiveboardProcess,
) -> None:
    async with _connection(server) as (reader, writer):
        # Two pipelined requests first: both are answered, in order, by the HTTP server.
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        for _ in range(2):
            status, _, body = await _response(reader)
            assert (status, json.loads(body)) == (200, {"status": "ok"})
        writer.write(_upgrade_head(make_token("router-3"), path="/ws"))
        status, _, _ = await _response(reader)
        assert status == 101
        await _assert_served(reader, writer)


async def test_a_refusal_has_the_error_body_on_both_paths(server: LiveboardProcess) -> None:
    for prefix in (b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"):
        async with _connection(server) as (reader, writer):
            writer.write(prefix + _upgrade_head("not-a-jwt"))
            if prefix:
                assert (await _response(reader))[0] == 200
            status, headers, body = await _response(reader)
            assert status == 401
            assert headers["www-authenticate"] == "Bearer"
            assert json.loads(body)["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("version", ["7", "8", "12"])
async def test_a_version_other_than_13_is_refused_naming_13(
    server: LiveboardProcess, version: str
) -> None:
    """RFC 6455 §4.4. aiohttp also speaks the drafts 7 and 8; neither path accepts them now."""
    for before in (b"", KEEP_ALIVE_REQUEST):
        async with _connection(server) as (reader, writer):
            if before:
                writer.write(before)
                assert (await _response(reader))[0] == 200
            writer.write(_upgrade_head(make_token("router-4"), version=version))
            status, headers, body = await _response(reader)
            assert status == 400
            assert headers["sec-websocket-version"] == "13"
            assert json.loads(body)["error"]["code"] == "bad_request"


ERROR_ANSWERS = {
    # request line → status and code, whichever path reads it
    "GET /ws%2Fconnect HTTP/1.1": (404, "not_found"),
    "GET /static/missing.js HTTP/1.1": (404, "not_found"),
    "GET /static/ HTTP/1.1": (404, "not_found"),
    "GET /static/..%2Fapp.py HTTP/1.1": (404, "not_found"),
    "GET /static/.. HTTP/1.1": (404, "not_found"),
    "POST /healthz HTTP/1.1": (405, "bad_request"),
    "GET /ws/connect HTTP/1.0": (400, "bad_request"),
}


@pytest.mark.parametrize("line", list(ERROR_ANSWERS))
@pytest.mark.parametrize("before", [b"", KEEP_ALIVE_REQUEST], ids=["first", "keep-alive"])
async def test_every_error_answer_has_the_error_body(
    server: LiveboardProcess, line: str, before: bytes
) -> None:
    """CONTRACT §3's body outside /api too: the WebSocket paths, static files, the probes."""
    head = (
        f"{line}\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
        f"Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"
    )
    if "/ws" in line:
        head = head.replace("Content-Length: 0\r\n", "")
    async with _connection(server) as (reader, writer):
        if before:
            writer.write(before)
            assert (await _response(reader))[0] == 200
        writer.write(head.encode())
        status, headers, body = await _response(reader)
        assert headers["content-type"].startswith("application/json"), (status, headers, body)
        assert (status, json.loads(body)["error"]["code"]) == ERROR_ANSWERS[line]


@pytest.mark.parametrize("before", [b"", KEEP_ALIVE_REQUEST], ids=["first", "keep-alive"])
@pytest.mark.parametrize("bad", ["X(y: 1", "X-Name: a\x01b", "Bad Name: 1"])
async def test_a_malformed_head_gets_the_error_body_and_is_not_echoed(
    server: LiveboardProcess, before: bytes, bad: str
) -> None:
    """aiohttp's own 400 quoted the line it could not parse, a bearer token with it."""
    token = make_token("router-echo")
    head = _upgrade_head(token)[:-2] + f"Authorization: Bearer {token}\r\n{bad}\r\n\r\n".encode()
    async with _connection(server) as (reader, writer):
        if before:
            writer.write(before)
            assert (await _response(reader))[0] == 200
        writer.write(head)
        status, headers, body = await _response(reader)
        assert status == 400
        assert headers["content-type"].startswith("application/json")
        assert json.loads(body)["error"]["code"] == "bad_request"
        assert token.encode() not in body
        assert b"X" not in body  # nothing of the request at all


async def test_a_peer_that_leaves_mid_head_costs_nothing(server: LiveboardProcess) -> None:
    for partial in (b"GET /ws/connect?token=x HTTP/1.1\r\nHost: 1", b"GE", b""):
        async with _connection(server) as (reader, writer):
            writer.write(partial)
            await writer.drain()
            writer.write_eof()
            # The connection ends (an answer, if any, is the HTTP server's 400).
            rest = await asyncio.wait_for(reader.read(), timeout(5))
            assert rest == b"" or rest.startswith(b"HTTP/1.1 400")
    async with _connection(server) as (reader, writer):
        writer.write(_upgrade_head(make_token("router-5")))
        assert (await _response(reader))[0] == 101


@pytest.mark.parametrize(
    "before", [b"", KEEP_ALIVE_REQUEST], ids=["router's path", "aiohttp's path"]
)
async def test_upgrades_of_one_user_arriving_together_respect_the_per_user_limit(
    server: LiveboardProcess, before: bytes
) -> None:
    """On aiohttp's path the race this guards against needs its handshake to wait, which it does
    not on loopback; ``test_ws_admission`` forces that wait."""
    limit = 50  # LIVEBOARD_MAX_CONNECTIONS_PER_USER's default
    token = make_token(f"router-many-{len(before)}")
    async with contextlib.AsyncExitStack() as stack:
        pairs = [await stack.enter_async_context(_connection(server)) for _ in range(limit + 10)]
        for _, writer in pairs:  # every request is on its way before any is answered
            writer.write(before + _upgrade_head(token))

        async def upgrade_status(reader: asyncio.StreamReader) -> int:
            if before:
                assert (await _response(reader))[0] == 200
            return (await _response(reader))[0]

        codes = await asyncio.gather(*(upgrade_status(reader) for reader, _ in pairs))
        assert codes.count(101) == limit
        assert codes.count(429) == 10
        # One leaves: its place is free again.
        accepted = [w for (_, w), code in zip(pairs, codes, strict=True) if code == 101]
        writer = accepted[0]
        writer.close()
        await asyncio.sleep(0.3)
        async with _connection(server) as (again_reader, again_writer):
            again_writer.write(before + _upgrade_head(token))
            assert await upgrade_status(again_reader) == 101


async def test_an_origin_that_is_not_a_url_is_refused_with_403_not_500(
    server: LiveboardProcess,
) -> None:
    async with _connection(server) as (reader, writer):
        head = _upgrade_head(make_token("router-origin"))
        writer.write(head[:-2] + b"Origin: http://[\r\n\r\n")
        status, _, body = await _response(reader)
        assert (status, json.loads(body)["error"]["code"]) == (403, "forbidden")
