"""The client-frame scanner and log redaction, without sockets."""

from __future__ import annotations

import os
import struct

from hypothesis import given
from hypothesis import strategies as st

from liveboard.logs import redact
from liveboard.realtime.wire import MaskScanner


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
