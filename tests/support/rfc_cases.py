"""Frames that break RFC 6455 or CONTRACT §4, each with the close code the server must answer.

``RFC_CASES`` is checked against a live server (``tests/fuzz/test_protocol_live.py``) and against
the frame reader alone (``tests/unit/test_rfc6455.py``).
"""

from __future__ import annotations

from tests.support.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_payload,
    encode_frame,
)

PING = b'{"type":"ping","id":"p"}'

#: Frames that break RFC 6455 or CONTRACT §4, with the close code the server must answer; the
#: last two assume the default ``LIVEBOARD_MAX_MESSAGE_BYTES`` (65536). Checked against a live
#: server (``test_protocol_live``) and against the frame reader alone (``test_rfc6455``).
RFC_CASES: dict[str, tuple[list[bytes], int]] = {
    # RFC 6455 §5.1: "a server MUST close the connection upon receiving a frame that is not
    # masked" (with 1002, §7.4.1).
    "unmasked text frame": ([encode_frame(OP_TEXT, PING, mask=False)], 1002),
    "unmasked ping frame": ([encode_frame(OP_PING, b"x", mask=False)], 1002),
    "unmasked close frame": ([encode_frame(OP_CLOSE, close_payload(1000), mask=False)], 1002),
    # §5.2: RSV bits without a negotiated extension, reserved opcodes
    "RSV1 set": ([encode_frame(OP_TEXT, PING, rsv=4)], 1002),
    "RSV2 set": ([encode_frame(OP_TEXT, PING, rsv=2)], 1002),
    "RSV3 set": ([encode_frame(OP_TEXT, PING, rsv=1)], 1002),
    "opcode 0x3": ([encode_frame(0x3, b"x")], 1002),
    "opcode 0x7": ([encode_frame(0x7, b"x")], 1002),
    "opcode 0xB": ([encode_frame(0xB, b"x")], 1002),
    "opcode 0xF": ([encode_frame(0xF, b"x")], 1002),
    # §5.5: control frames are at most 125 bytes and never fragmented
    "ping of 126 bytes": ([encode_frame(OP_PING, b"x" * 126)], 1002),
    "pong of 200 bytes": ([encode_frame(OP_PONG, b"x" * 200)], 1002),
    "close of 126 bytes": ([encode_frame(OP_CLOSE, close_payload(1000, b"r" * 124))], 1002),
    "fragmented ping": ([encode_frame(OP_PING, b"a", fin=False)], 1002),
    # §5.4: fragmentation rules
    "continuation without start": ([encode_frame(OP_CONT, PING)], 1002),
    "text inside a fragmented text": (
        [encode_frame(OP_TEXT, b'{"type":', fin=False), encode_frame(OP_TEXT, PING)],
        1002,
    ),
    # §8.1: text must be UTF-8
    "invalid utf-8": ([encode_frame(OP_TEXT, b'{"id":"\xff"}')], 1007),
    "surrogate in utf-8": ([encode_frame(OP_TEXT, b'{"id":"\xed\xa0\x80"}')], 1007),
    "overlong utf-8": ([encode_frame(OP_TEXT, b'{"id":"\xc0\xaf"}')], 1007),
    "invalid utf-8 across fragments": (
        [encode_frame(OP_TEXT, b'{"id":"\xe2', fin=False), encode_frame(OP_CONT, b'\x28"}')],
        1007,
    ),
    # §7.4: close codes and bodies
    "close code 0": ([encode_frame(OP_CLOSE, close_payload(0))], 1002),
    "close code 999": ([encode_frame(OP_CLOSE, close_payload(999))], 1002),
    "close code 1004": ([encode_frame(OP_CLOSE, close_payload(1004))], 1002),
    "close code 1005": ([encode_frame(OP_CLOSE, close_payload(1005))], 1002),
    "close code 1015": ([encode_frame(OP_CLOSE, close_payload(1015))], 1002),
    "close code 2999": ([encode_frame(OP_CLOSE, close_payload(2999))], 1002),
    "close code 1006": ([encode_frame(OP_CLOSE, close_payload(1006))], 1002),
    "close code 5000": ([encode_frame(OP_CLOSE, close_payload(5000))], 1002),
    "close code 65535": ([encode_frame(OP_CLOSE, close_payload(65535))], 1002),
    "close body of 1 byte": ([encode_frame(OP_CLOSE, b"\x03")], 1002),
    "close reason not utf-8": ([encode_frame(OP_CLOSE, close_payload(1000, b"\xff"))], 1007),
    # CONTRACT §4
    "binary frame": ([encode_frame(OP_BINARY, PING)], 1003),
    "declared length 2**63": ([encode_frame(OP_TEXT, b"", length=2**63, length_form=64)], 1009),
    "fragments past the limit": (
        [
            encode_frame(OP_TEXT, b"x" * 40_000, fin=False),
            encode_frame(OP_CONT, b"x" * 40_000),
        ],
        1009,
    ),
}
