"""WebSocket frames for tests (RFC 6455 §5.2), encoded exactly as told, violations included.

``aiohttp`` (and every other client library) refuses to send what hostile tests need: unmasked
client frames, reserved opcodes, RSV bits, control frames over 125 bytes, fragmented control
frames, length fields that lie, invalid UTF-8 in text frames. ``encode_frame`` builds any of
them; ``text`` a masked text frame holding a message; ``close_payload`` a close frame's body.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    mask_key: bytes | None = None,
    length: int | None = None,
    length_form: int | None = None,
) -> bytes:
    """One frame, exactly as told.

    ``rsv``: the three RSV bits (0-7). ``mask=False``: an unmasked client frame (a protocol
    violation). ``length``: the length field to write when it must lie about ``payload``.
    ``length_form``: 7, 16 or 64 to force an encoding of the length (non-minimal ones included).
    """
    declared = len(payload) if length is None else length
    first = (0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0xF)
    mask_bit = 0x80 if mask else 0
    form = length_form or (7 if declared < 126 else 16 if declared < 1 << 16 else 64)
    if form == 7:
        header = bytes((first, mask_bit | declared))
    elif form == 16:
        header = struct.pack("!BBH", first, mask_bit | 126, declared)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, declared)
    if not mask:
        return header + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return header + key + apply_mask(key, payload)


def apply_mask(key: bytes, payload: bytes) -> bytes:
    if not payload:
        return b""
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def text(message: Any, **kwargs: Any) -> bytes:
    """A masked text frame holding ``message`` (JSON-encoded unless str/bytes)."""
    if isinstance(message, bytes):
        data = message
    elif isinstance(message, str):
        data = message.encode()
    else:
        data = json.dumps(message).encode()
    return encode_frame(OP_TEXT, data, **kwargs)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason
