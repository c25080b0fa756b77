"""What a client can make a real server write to its log (issue 16, items 5 and 6).

* Forged lines (CWE-117): control characters a client puts in a path (CR, LF, ESC, U+0085,
  U+2028, the bidi overrides...) are escaped in the text format, so every line of the log is a
  record that starts with the server's timestamp (or a traceback's indented line); the JSON
  format carries the same text exactly, one object per line for any line splitter.
* Client errors are not server errors: a malformed request head, broken chunked framing, a
  gzip or deflate body that does not decompress and a body abandoned half-way are each at most
  one INFO line (the access log's 400), with no ``ERROR``, no traceback and no 500.

* Lines that join up (issue 21, item 3): every line of a REST request carries its request id
  (a sane ``X-Request-Id``, echoed), the access line its user and the client's address, read
  from ``Forwarded`` / ``X-Forwarded-For`` only when the peer is a trusted proxy; a WebSocket's
  line carries its connection and user; ``ts`` is ISO 8601 UTC; ``LIVEBOARD_LOG_LEVEL``.

Each test starts a real ``liveboard serve`` process, talks to it over raw sockets and reads the
log file it wrote after stopping it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import struct
import urllib.parse
from collections.abc import Callable

import pytest

from tests.support.servers import LiveboardProcess, free_port
from tests.support.timing import timeout
from tests.support.tokens import make_token
from tests.support.wsclient import WsClient

RECORD_START = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: "
)
TRACEBACK_LINE = "    "  # logs.TRACEBACK_INDENT
# Everything Python's str.splitlines() splits on, plus ESC and the bidi controls.
LINE_BREAKERS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
FORGED = "2026-01-01 00:00:00,000 ERROR liveboard.auth: FORGED"
FORGED_PATHS = [
    f"/x\r\n{FORGED}",
    f"/x\n{FORGED}",
    f"/x\r{FORGED}",
    f"/api/x\r\n{FORGED}",  # 401 without a token: the unauthenticated case
    f"/x\x1b[2K\r{FORGED}",  # ANSI erase-line, then carriage return
    f"/x\x85{FORGED}",
    f"/x\u2028{FORGED}",
    f"/x\u2029{FORGED}",
    f"/x\u202e{FORGED}",
    f"/x\x0b\x0c\x1c\x1d\x1e{FORGED}",
    f"/x\x00{FORGED}",
]


async def _exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` and read the whole answer (the server closes after it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout(10))
    finally:
        writer.close()


def _get(path: str) -> bytes:
    target = urllib.parse.quote(path.encode(), safe="/")
    return f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()


def _lines_after_start(server: LiveboardProcess) -> list[str]:
    """The log's lines between the start-up line and the shutdown line, /healthz left out."""
    lines = server.log_path.read_text(encoding="utf-8").split("\n")
    start = next(i for i, line in enumerate(lines) if "listening on" in line)
    end = next(i for i, line in enumerate(lines) if "shutting down" in line)
    return [line for line in lines[start + 1 : end] if "/healthz" not in line]


async def test_a_client_cannot_forge_a_text_log_line(
    server_factory: Callable[..., LiveboardProcess],
) -> None:
    server = server_factory(env={"LIVEBOARD_LOG_FORMAT": "text"})
    for path in FORGED_PATHS:
        answer = await _exchange(server.port, _get(path))
        assert answer.startswith((b"HTTP/1.1 404", b"HTTP/1.1 401")), answer[:200]
    assert server.terminate() == 0
    log = server.log_path.read_text(encoding="utf-8")
    assert LINE_BREAKERS.search(log) is None, "a control character reached the log"
    assert log.splitlines() == log.rstrip("\n").split("\n")
    for line in log.rstrip("\n").split("\n"):
        assert RECORD_START.match(line) or line.startswith(TRACEBACK_LINE), repr(line)
        assert not line.startswith(FORGED), repr(line)
    access = [line for line in log.split("\n") if "aiohttp.access" in line and FORGED in line]
    assert len(access) == len(FORGED_PATHS)
    assert f"GET /x\\r\\n{FORGED} 404" in log
    assert f"GET /x\\u2028{FORGED} 404" in log
    assert f"GET /x\\x1b[2K\\r{FORGED} 404" in log


async def test_json_log_lines_carry_client_text_exactly(
    server_factory: Callable[..., LiveboardProcess],
) -> None:
    server = server_factory(env={"LIVEBOARD_LOG_FORMAT": "json"})
    for path in FORGED_PATHS:
        await _exchange(server.port, _get(path))
    assert server.terminate() == 0
    log = server.log_path.read_text(encoding="utf-8")
    assert log.splitlines() == log.rstrip("\n").split("\n")
    records = [json.loads(line) for line in log.splitlines()]
    logged = [r["path"] for r in records if r["logger"] == "aiohttp.access"]
    assert [p for p in logged if FORGED in p] == FORGED_PATHS


def _post_head(length: int | None, *, chunked: bool = False) -> bytes:
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}"
    return (
        f"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {make_token('leaver')}\r\n{framing}\r\n\r\n"
    ).encode()


async def _abandon(port: int, head: bytes, part: bytes, *, reset: bool) -> None:
    """Send ``head`` and the start of a body, wait until the server reads it, then leave:
    with a TCP reset, or with a FIN."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + part)
    await writer.drain()
    await asyncio.sleep(0.3)
    if reset:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()
        await writer.wait_closed()


MALFORMED_HEADS = [
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n",
    b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\nGARBAGE / HTTP/1.1\r\n\r\n",
    b"POST /api/workspaces HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
]


def _encoded_post(encoding: str, body: bytes) -> bytes:
    head = _post_head(len(body)).replace(
        b"\r\n\r\n", f"\r\nContent-Encoding: {encoding}\r\nConnection: close\r\n\r\n".encode()
    )
    return head + body


# Bodies that do not decompress: the parser fails inside the handler's read, and again when
# aiohttp drains the rest after the answer.
UNDECODABLE_BODIES = [
    _encoded_post("gzip", b"not gzip at all"),
    _encoded_post("deflate", b"\x00\x01garbage"),
]


async def test_client_mistakes_are_one_info_line_each_with_no_traceback(
    server_factory: Callable[..., LiveboardProcess],
) -> None:
    server = server_factory(env={"LIVEBOARD_LOG_FORMAT": "text"})
    for head in MALFORMED_HEADS:
        answer = await _exchange(server.port, head)
        assert b"HTTP/1.0 400" in answer or b"HTTP/1.1 400" in answer, (head[:60], answer[:200])
    for request in UNDECODABLE_BODIES:
        answer = await _exchange(server.port, request)
        assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
        assert b'"code":"bad_request"' in answer, answer[:300]
    abandoned = [
        (_post_head(1000), b'{"name": "half', True),
        (_post_head(1000), b'{"name": "half', False),
        (_post_head(None, chunked=True), b'20\r\n{"name": "half', True),
        (_post_head(None, chunked=True), b'20\r\n{"name": "half', False),
    ]
    for head, part, reset in abandoned:
        await _abandon(server.port, head, part, reset=reset)
    assert (await _exchange(server.port, _get("/healthz"))).startswith(b"HTTP/1.1 200")
    assert server.terminate() == 0

    lines = _lines_after_start(server)
    log = "\n".join(lines)
    assert " ERROR " not in log, log[:3000]
    assert "Traceback" not in log, log[:3000]
    assert " 500 " not in log, log[:3000]
    requests = len(MALFORMED_HEADS) + len(UNDECODABLE_BODIES) + len(abandoned)
    # One line per request at most; the keep-alive case's valid first request has its own.
    assert len(lines) <= requests + 1, log[:3000]
    assert all(" INFO " in line and " 400 " in line for line in lines if "/ 404" not in line), log


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_abandoned_body_is_a_400_access_line(
    server_factory: Callable[..., LiveboardProcess], fmt: str
) -> None:
    """The tester's case, in both formats: ``ERROR liveboard.rest: unhandled error …
    ConnectionResetError`` with a traceback and an access-log 500, before."""
    server = server_factory(env={"LIVEBOARD_LOG_FORMAT": fmt})
    await _abandon(server.port, _post_head(1000), b'{"name": "half', reset=True)
    assert (await _exchange(server.port, _get("/healthz"))).startswith(b"HTTP/1.1 200")
    assert server.terminate() == 0
    lines = _lines_after_start(server)
    assert len(lines) == 1, lines
    if fmt == "json":
        record = json.loads(lines[0])
        assert (record["level"], record["path"], record["status"]) == (
            "info",
            "/api/workspaces",
            400,
        )
    else:
        assert " INFO aiohttp.access: POST /api/workspaces 400 " in lines[0], lines


# Logs that join up (issue 21, item 3): ids on each line, the client behind trusted proxies.


async def _request(
    port: int, path: str, headers: dict[str, str], *, source: str = "127.0.0.1"
) -> tuple[str, dict[str, str]]:
    """One GET from ``source`` (a loopback address); its status line and headers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{lines}\r\n".encode())
        answer = (await asyncio.wait_for(reader.read(), timeout(10))).decode("latin-1")
    finally:
        writer.close()
    head = answer.split("\r\n\r\n", 1)[0].split("\r\n")
    fields = dict(line.split(": ", 1) for line in head[1:])
    return head[0], {name.lower(): value for name, value in fields.items()}


def _access_records(server: LiveboardProcess) -> list[dict[str, object]]:
    records = [json.loads(line) for line in _lines_after_start(server)]
    return [r for r in records if r["logger"] == "aiohttp.access"]


async def test_rest_lines_carry_the_request_id_and_the_client_behind_a_trusted_proxy(
    server_factory: Callable[..., LiveboardProcess],
) -> None:
    server = server_factory(
        env={"LIVEBOARD_LOG_FORMAT": "json", "LIVEBOARD_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"}
    )
    token = make_token("alice")
    calls = [
        # (peer, headers) → the access line's remote
        ("127.0.0.1", {"X-Request-Id": "r-trusted", "X-Forwarded-For": "6.6.6.6, 198.51.100.7"}),
        ("127.0.0.1", {"X-Request-Id": "r-rfc7239", "Forwarded": 'for="[2001:db8::9]:443"'}),
        ("127.0.0.1", {"X-Request-Id": "r-chain", "X-Forwarded-For": "198.51.100.8, 10.1.1.1"}),
        ("127.0.0.2", {"X-Request-Id": "r-untrusted", "X-Forwarded-For": "198.51.100.7"}),
        ("127.0.0.2", {"X-Request-Id": "r-forged", "Forwarded": "for=198.51.100.7"}),
        ("127.0.0.1", {"X-Request-Id": "r-user", "Authorization": f"Bearer {token}"}),
        ("127.0.0.1", {"X-Request-Id": "has space"}),
        ("127.0.0.1", {"X-Request-Id": "x" * 129}),
    ]
    answers = []
    for source, headers in calls:
        path = "/api/workspaces" if "Authorization" in headers else "/readyz"
        answers.append(await _request(server.port, path, headers, source=source))
    assert server.terminate() == 0

    access = _access_records(server)
    assert len(access) == len(calls), access
    by_id = {str(r["request_id"]): r for r in access}
    assert by_id["r-trusted"]["remote"] == "198.51.100.7"
    assert by_id["r-rfc7239"]["remote"] == "2001:db8::9"
    assert by_id["r-chain"]["remote"] == "198.51.100.8"
    assert by_id["r-untrusted"]["remote"] == "127.0.0.2"  # a header from anyone else: ignored
    assert by_id["r-forged"]["remote"] == "127.0.0.2"
    assert (by_id["r-user"]["status"], by_id["r-user"]["user_id"]) == (200, "alice")
    assert "user_id" not in by_id["r-trusted"]
    # Each answer echoes its line's id; an insane id is replaced by a new one.
    for (status_line, headers), record in zip(answers, access, strict=True):
        assert status_line.startswith("HTTP/1.1 200"), status_line
        assert headers["x-request-id"] == record["request_id"]
    generated = [str(r["request_id"]) for r in access[-2:]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in generated), generated
    assert generated[0] != generated[1]
    for record in access:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(record["ts"])), record


async def test_websocket_lines_carry_the_connection_user_and_forwarded_client(
    server_factory: Callable[..., LiveboardProcess],
) -> None:
    server = server_factory(
        env={"LIVEBOARD_LOG_FORMAT": "json", "LIVEBOARD_TRUSTED_PROXIES": "127.0.0.1"}
    )
    forwarded = {"X-Forwarded-For": "198.51.100.9"}
    client = await WsClient.connect(server.ws_url, make_token("bob"), headers=forwarded)
    connection_id = client.connection_id
    await client.close()
    await asyncio.sleep(0.3)  # the server writes the line when the connection has ended
    assert server.terminate() == 0
    [line] = [r for r in _access_records(server) if r["path"] == "/ws/connect"]
    assert (line["status"], line["connection_id"], line["user_id"]) == (101, connection_id, "bob")
    assert line["remote"] == "198.51.100.9"
    assert "request_id" not in line


@pytest.mark.parametrize(("level", "access_lines"), [("INFO", 1), ("WARNING", 0)])
async def test_the_log_level_decides_whether_access_lines_are_written(
    server_factory: Callable[..., LiveboardProcess], level: str, access_lines: int
) -> None:
    server = server_factory(env={"LIVEBOARD_LOG_LEVEL": level})
    status_line, _ = await _request(server.port, "/api/x", {"X-Request-Id": "text-1"})
    assert status_line.startswith("HTTP/1.1 401")
    assert server.terminate() == 0
    log = server.log_path.read_text(encoding="utf-8")
    lines = [line for line in log.splitlines() if "aiohttp.access" in line and "/api/x" in line]
    assert len(lines) == access_lines, log
    if lines:
        assert lines[0].endswith(" request_id=text-1"), lines
    assert ("listening on" in log) == (level == "INFO")


def _unverifiable_rs256_token() -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    header = part({"alg": "RS256", "kid": "k1", "typ": "JWT"})
    return f"{header}.{part({'sub': 'carol', 'exp': 9_999_999_999})}.c2ln"


async def test_a_line_written_while_a_request_is_handled_carries_its_id(
    server_factory: Callable[..., LiveboardProcess],
) -> None:
    """Not only the access line: the JWKS fetch a request starts (nobody answers) warns with
    the request's id."""
    server = server_factory(
        env={
            "LIVEBOARD_LOG_FORMAT": "json",
            "LIVEBOARD_JWT_SECRET": "",
            "LIVEBOARD_JWT_JWKS_URL": f"http://127.0.0.1:{free_port()}/jwks",
        }
    )
    headers = {"X-Request-Id": "jwks-1", "Authorization": f"Bearer {_unverifiable_rs256_token()}"}
    status_line, _ = await _request(server.port, "/api/workspaces", headers)
    assert status_line.startswith("HTTP/1.1 401")
    assert server.terminate() == 0
    records = [json.loads(line) for line in _lines_after_start(server)]
    [warning] = [r for r in records if r["logger"] == "liveboard.auth"]
    assert warning["level"] == "warning"
    assert "could not fetch the JWKS signing keys" in str(warning["message"])
    assert warning["request_id"] == "jwks-1"
    [access] = _access_records(server)
    assert (access["request_id"], access["status"]) == ("jwks-1", 401)
