"""WebSocket frames as bytes (RFC 6455 §5.2), built once and written to many sockets.

Server frames are never masked, so one encoded frame is valid on every connection; an
uncompressed frame (RSV1 clear) is valid even where permessage-deflate was negotiated.
"""

from __future__ import annotations

import struct

_OP_TEXT = 0x1
_OP_CLOSE = 0x8
_OP_PING = 0x9
_OP_PONG = 0xA
_FIN = 0x80

PING_FRAME = bytes((_FIN | _OP_PING, 0))


def _header(opcode: int, length: int) -> bytes:
    if length < 126:
        return bytes((_FIN | opcode, length))
    if length < 1 << 16:
        return struct.pack("!BBH", _FIN | opcode, 126, length)
    return struct.pack("!BBQ", _FIN | opcode, 127, length)


def text_frame(payload: bytes) -> bytes:
    """A complete text frame carrying ``payload`` (UTF-8 JSON)."""
    return _header(_OP_TEXT, len(payload)) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` and a reason (truncated to fit a control frame)."""
    # Cut to 123 bytes without splitting a character: the reason must stay valid UTF-8.
    cut = reason.encode()[:123].decode("utf-8", "ignore").encode()
    body = struct.pack("!H", code) + cut
    return _header(_OP_CLOSE, len(body)) + body


def pong_frame(payload: bytes) -> bytes:
    """The answer to a ping carrying ``payload`` (at most 125 bytes, as the ping's was)."""
    return _header(_OP_PONG, len(payload)) + payload
