"""``--dev`` on a developer's machine: loopback hosts only, and a Content-Security-Policy.

A ``--dev`` server mints tokens for anyone who asks (``/api/dev/token``). A page on another site
that rebinds its own name to 127.0.0.1 (DNS rebinding) reaches it with that name in ``Host``:
such requests, REST and WebSocket alike, on both upgrade paths, are refused with 403 and the
contract's error body. A real ``liveboard serve --dev`` and raw sockets, so that ``Host`` is
exactly the test's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Callable

import pytest

from tests.support.servers import LiveboardProcess
from tests.support.timing import timeout
from tests.support.tokens import make_token

KEEP_ALIVE = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def _exchange(
    server: LiveboardProcess, head: bytes, before: bytes = b""
) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for request in (before, head) if before else (head,):
            writer.write(request)
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout(5))
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            length = next(
                (
                    int(line.split(":", 1)[1])
                    for line in lines
                    if line.lower().startswith("content-length:")
                ),
                0,
            )
            body = b""
            if length and status != 101:
                body = await asyncio.wait_for(reader.readexactly(length), timeout(5))
        return status, body
    finally:
        writer.transport.abort()


def _get(path: str, host: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def _upgrade(host: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws/connect?token={make_token('dev-ws')} HTTP/1.1\r\nHost: {host}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


@pytest.fixture
def dev_server(server_factory: Callable[..., LiveboardProcess]) -> LiveboardProcess:
    # No LIVEBOARD_JWT_SECRET of the tests: the development secret, as `make run` has it.
    return server_factory(dev=True, env={"LIVEBOARD_JWT_SECRET": ""})


async def test_a_dev_server_answers_only_loopback_hosts(dev_server: LiveboardProcess) -> None:
    port = dev_server.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        status, body = await _exchange(dev_server, _get("/api/dev/token?user=alice", host))
        assert status == 200, (host, body)
        assert json.loads(body)["token"]
    for host in (f"evil.example:{port}", "evil.example", f"10.1.2.3:{port}"):
        for path in ("/api/dev/token?user=alice", "/", "/healthz", "/static/board.js"):
            status, body = await _exchange(dev_server, _get(path, host))
            assert status == 403, (host, path, body)
            assert json.loads(body)["error"]["code"] == "forbidden"


@pytest.mark.parametrize("before", [b"", KEEP_ALIVE], ids=["router's path", "aiohttp's path"])
async def test_a_dev_server_refuses_upgrades_to_other_hosts(
    server_factory: Callable[..., LiveboardProcess], before: bytes
) -> None:
    server = server_factory(dev=True)
    status, body = await _exchange(server, _upgrade(f"evil.example:{server.port}"), before)
    assert status == 403, body
    assert json.loads(body)["error"]["code"] == "forbidden"
    status, _ = await _exchange(server, _upgrade(f"localhost:{server.port}"), before)
    assert status == 101


async def test_without_dev_any_host_is_served(
    server_factory: Callable[..., LiveboardProcess],
) -> None:
    """Behind a proxy a production server sees its public name: the rule is --dev's alone."""
    server = server_factory()
    status, _ = await _exchange(server, _get("/healthz", "board.example.com"))
    assert status == 200
    status, _ = await _exchange(server, _upgrade(f"board.example.com:{server.port}"))
    assert status == 101


async def test_the_demo_board_sends_a_content_security_policy(
    dev_server: LiveboardProcess,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", dev_server.port)
    try:
        for path in ("/", "/static/index.html"):
            writer.write(_get(path, f"127.0.0.1:{dev_server.port}"))
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout(5))
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (
                    line.partition(":") for line in raw.decode("latin-1").split("\r\n")[1:]
                )
            }
            policy = headers.get("content-security-policy", "")
            assert "script-src 'self'" in policy, (path, headers)
            assert "default-src 'none'" in policy
            assert "frame-ancestors 'none'" in policy
            await reader.readexactly(int(headers["content-length"]))
    finally:
        writer.transport.abort()
