"""The client-frame scanner, log redaction and escaping, without sockets."""

from __future__ import annotations

import json
import logging
import os
import re
import struct

from aiohttp.http_exceptions import BadHttpMessage
from hypothesis import given
from hypothesis import strategies as st

from liveboard.logs import (
    ClientErrorFilter,
    JsonFormatter,
    TextFormatter,
    escape_controls,
    redact,
)
from liveboard.realtime.transport.aiohttp_ws import MaskScanner


def frame(payload: bytes, *, masked: bool = True, opcode: int = 0x1) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, (0x80 if masked else 0) | n))
    elif n < 1 << 16:
        header = bytes((0x80 | opcode, (0x80 if masked else 0) | 126)) + struct.pack("!H", n)
    else:
        header = bytes((0x80 | opcode, (0x80 if masked else 0) | 127)) + struct.pack("!Q", n)
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_masked_frames_of_every_length_pass() -> None:
    scanner = MaskScanner()
    for size in (0, 1, 125, 126, 65535, 65536, 70000):
        assert scanner.feed(frame(b"x" * size))


def test_an_unmasked_frame_is_caught_after_masked_ones() -> None:
    scanner = MaskScanner()
    assert scanner.feed(frame(b"hello"))
    assert not scanner.feed(frame(b"ping", masked=False, opcode=0x9))


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=6),
    st.integers(min_value=1, max_value=50),
    st.booleans(),
)
def test_chunking_does_not_matter(payloads: list[bytes], chunk: int, last_unmasked: bool) -> None:
    stream = b"".join(frame(p) for p in payloads[:-1])
    stream += frame(payloads[-1], masked=not last_unmasked)
    scanner = MaskScanner()
    results = [scanner.feed(stream[i : i + chunk]) for i in range(0, len(stream), chunk)]
    assert (False in results) == last_unmasked


def test_tokens_are_redacted() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"
    assert jwt not in redact(f"GET /ws/connect?token={jwt} HTTP/1.1")
    assert "eyJhbGciOi" not in redact("line too long: b'/ws/connect?token=eyJhbGciOi")
    assert redact("GET /ws?room=p1&token=abc&x=1 HTTP/1.1") == "GET /ws[redacted] HTTP/1.1"
    assert redact("is it done? yes") == "is it done? yes"
    assert redact("alice moved a task") == "alice moved a task"


FORGED = "2026-01-01 00:00:00,000 ERROR liveboard.auth: FORGED"


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("liveboard.test", logging.INFO, __file__, 1, message, args, exc_info)


CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


@given(st.text())
def test_escaped_text_is_one_line_and_keeps_the_rest_in_order(text: str) -> None:
    escaped = escape_controls(text)
    assert len(escaped.splitlines()) <= 1
    assert CONTROLS.search(escaped) is None
    rest = iter(escaped)
    assert all(c in rest for c in text if not CONTROLS.match(c))  # a subsequence


_ESCAPE = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|(.))")
_UNNAMED = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}


def _unescape(escaped: str) -> str:
    def one(match: re.Match[str]) -> str:
        hex2, hex4, named = match.groups()
        if named is not None:
            return _UNNAMED[named]
        return chr(int(hex2 or hex4, 16))

    return _ESCAPE.sub(one, escaped)


@given(st.text())
def test_the_escaping_is_reversible(text: str) -> None:
    """So no client text can be read as another: a literal backslash-n is not a newline."""
    assert _unescape(escape_controls(text)) == text


def test_a_literal_backslash_sequence_is_not_an_escape() -> None:
    assert escape_controls("a\\nb") == "a\\\\nb"
    assert escape_controls("a\nb") == "a\\nb"
    assert escape_controls("\u200e\u200f\u061c") == "\\u200e\\u200f\\u061c"


def test_text_format_escapes_client_text_in_messages_and_tracebacks() -> None:
    formatter = TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    line = formatter.format(_record("GET %s 404", f"/x\r\n{FORGED}\u2028\x1b[2K"))
    assert line.endswith(f"GET /x\\r\\n{FORGED}\\u2028\\x1b[2K 404")
    assert len(line.splitlines()) == 1
    try:
        raise ValueError(f"bad value\n{FORGED}\r")
    except ValueError as exc:
        text = formatter.format(_record("failed", exc=exc))
    first, *rest = text.split("\n")
    assert first.endswith("INFO liveboard.test: failed")
    assert rest
    assert all(line.startswith("    ") for line in rest)
    assert f"    {FORGED}\\r" in rest


def test_json_format_keeps_client_text_on_one_line_for_any_splitter() -> None:
    text = JsonFormatter().format(_record("GET %s 404", f"/x\x85\u2028\u2029\r\n{FORGED}"))
    assert len(text.splitlines()) == 1
    assert json.loads(text)["message"] == f"GET /x\x85\u2028\u2029\r\n{FORGED} 404"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_parser_refusals_are_one_debug_line_or_nothing() -> None:
    """What aiohttp's server logger receives for a malformed head (``handle_error``)."""
    logger = logging.getLogger("liveboard.test.client_errors")
    logger.propagate = False
    captured = _Records()
    logger.handlers[:] = [captured]
    logger.addFilter(ClientErrorFilter())
    refused = BadHttpMessage("Invalid header token:\n\n  b'Bad Header'\n       ^")
    for level in (logging.INFO, logging.DEBUG):
        logger.setLevel(level)
        logger.error("Error handling request from %s", "127.0.0.1", exc_info=refused)
        logger.error("Error handling request from %s", "127.0.0.1", exc_info=KeyError("x"))
    levels = [(r.levelname, r.exc_info is not None) for r in captured.records]
    assert levels == [("ERROR", True), ("DEBUG", False), ("ERROR", True)]
    message = captured.records[1].getMessage()
    assert message == "refused a malformed request: Invalid header token:"
