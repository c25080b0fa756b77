"""What a client can make a real server write to its log (issue 16, item 5).

* Forged lines (CWE-117): control characters a client puts in a path (CR, LF, ESC, U+0085,
  U+2028, the bidi overrides...) are escaped in the text format, so every line of the log is a
  record that starts with the server's timestamp (or a traceback's indented line); the JSON
  format carries the same text exactly, one object per line for any line splitter.

Each test starts a real ``liveboard serve`` process, talks to it over raw sockets and reads the
log file it wrote after stopping it.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from collections.abc import Callable

from tests.servers import LiveboardProcess
from tests.support import timeout

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
