"""The client frame reader against an independent implementation: wsproto, as the oracle.

Hypothesis writes streams of client frames, mostly valid and sometimes broken in the ways RFC
6455 names (RSV bits, reserved opcodes, unmasked frames, long or fragmented control frames,
orphan or interleaved continuations, invalid UTF-8 whole or split across fragments, bad close
codes and bodies). Both readers take the same bytes, ours split at random points; both must see
the same messages, pings, pongs and close, in the same order, and fail the connection with the
same close code at the same place.

Where the two differ by design, the streams do not go:
- lengths are written in their minimal form: wsproto refuses a longer one (RFC 6455 §5.2 makes
  the minimal form a sender's duty), while liveboard, like aiohttp's reader on the other upgrade
  path, accepts it, so that both of liveboard's paths accept the same frames;
- close code 1014 (IANA's "Bad Gateway", registered after wsproto's list was written) is not
  sent: liveboard and the websockets library accept it, wsproto refuses it;
- messages stay below the reader's size limit, which wsproto does not have.
"""

from __future__ import annotations

import itertools
import os
import struct
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from liveboard.realtime.transport.rfc6455 import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
    FrameReader,
)
from tests.support.frames import OP_CONT, encode_frame

LIMIT = 1 << 20
EXAMPLES = int(os.environ.get("LIVEBOARD_PROPERTY_EXAMPLES", "300"))

# What a reader saw: ("text", str), ("binary", bytes), ("ping"|"pong", bytes),
# ("close", code, reason) or ("fail", code); nothing is compared after a close or a failure.
Seen = tuple[Any, ...]


def oracle(stream: bytes) -> list[Seen]:
    """What wsproto, as the server of an open connection, makes of `stream`."""
    connection = Connection(ConnectionType.SERVER)
    connection.receive_data(stream)
    seen: list[Seen] = []
    text: list[str] = []
    data: list[bytes] = []
    for event in connection.events():
        if isinstance(event, TextMessage):
            text.append(event.data)
            if event.message_finished:
                seen.append(("text", "".join(text)))
                text = []
        elif isinstance(event, BytesMessage):
            data.append(bytes(event.data))
            if event.message_finished:
                seen.append(("binary", b"".join(data)))
                data = []
        elif isinstance(event, Ping):
            seen.append(("ping", bytes(event.payload)))
        elif isinstance(event, Pong):
            seen.append(("pong", bytes(event.payload)))
        elif isinstance(event, CloseConnection):
            # wsproto reports its own failure as a close event carrying the code it sends.
            if connection_failed(connection, event):
                seen.append(("fail", int(event.code)))
            else:
                seen.append(("close", int(event.code), event.reason or ""))
            break
    return seen


def connection_failed(connection: Connection, event: CloseConnection) -> bool:
    """A close event wsproto made up for a protocol error, not one the peer sent.

    A close frame from the peer moves the connection to REMOTE_CLOSING before the event is
    yielded; a parse failure yields the event and leaves the connection OPEN.
    """
    return connection.state is ConnectionState.OPEN


def ours(stream: bytes, cuts: list[int]) -> list[Seen]:
    """What liveboard's FrameReader makes of `stream`, fed in pieces cut at `cuts`."""
    reader = FrameReader(LIMIT)
    seen: list[Seen] = []
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    try:
        for start, end in itertools.pairwise(bounds):
            reader.feed(stream[start:end])
            while (frame := reader.next_frame()) is not None:
                if frame.opcode == OP_TEXT:
                    seen.append(("text", frame.data))
                elif frame.opcode == OP_BINARY:
                    seen.append(("binary", frame.data))
                elif frame.opcode == OP_PING:
                    seen.append(("ping", frame.data))
                elif frame.opcode == OP_PONG:
                    seen.append(("pong", frame.data))
                else:
                    seen.append(("close", frame.code, frame.data))
                    return seen
    except FrameError as error:
        seen.append(("fail", error.code))
    return seen


TEXTS = st.text(max_size=40).map(lambda s: s.encode("utf-8"))
BYTES = st.binary(max_size=60)
# Invalid UTF-8: a lone continuation byte, a truncated sequence, an overlong form, a surrogate.
BAD_UTF8 = st.sampled_from([b"\x80", b"\xe2\x82", b"\xc0\xaf", b"\xed\xa0\x80", b"\xff"])
CLOSE_CODES = st.one_of(
    st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013]),
    st.sampled_from([0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 3000, 4999, 5000, 65535]),
    st.integers(0, 65535).filter(lambda code: code != 1014),
)


@st.composite
def close_payloads(draw: st.DrawFn) -> bytes:
    shape = draw(st.sampled_from(["empty", "one byte", "code", "code and reason", "bad reason"]))
    if shape == "empty":
        return b""
    if shape == "one byte":
        return bytes([draw(st.integers(0, 255))])
    payload = struct.pack("!H", draw(CLOSE_CODES))
    if shape == "code and reason":
        payload += draw(st.text(max_size=20)).encode("utf-8")[:123]
    elif shape == "bad reason":
        payload += draw(BAD_UTF8)
    return payload


@st.composite
def messages(draw: st.DrawFn) -> list[bytes]:
    """The frames of one data message, fragmented or not, valid or not."""
    opcode = draw(st.sampled_from([OP_TEXT, OP_TEXT, OP_BINARY]))
    body = draw(TEXTS if opcode == OP_TEXT else BYTES)
    if opcode == OP_TEXT and draw(st.integers(0, 9)) == 0:
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(BAD_UTF8) + body[at:]
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=False)]
    frames = []
    for index, piece in enumerate(pieces):
        frames.append(
            encode_frame(opcode if index == 0 else OP_CONT, piece, fin=index == len(pieces) - 1)
        )
    # A control frame may come between fragments.
    if len(frames) > 1 and draw(st.booleans()):
        frames.insert(draw(st.integers(1, len(frames) - 1)), encode_frame(OP_PING, b"between"))
    return frames


@st.composite
def broken_frames(draw: st.DrawFn) -> bytes:
    """One frame that breaks a rule of RFC 6455 §5."""
    kind = draw(
        st.sampled_from(
            ["rsv", "opcode", "unmasked", "long control", "fragmented control", "continuation"]
        )
    )
    payload = draw(st.binary(max_size=20))
    if kind == "rsv":
        return encode_frame(OP_TEXT, b"x", rsv=draw(st.integers(1, 7)))
    if kind == "opcode":
        return encode_frame(draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])), payload)
    if kind == "unmasked":
        return encode_frame(OP_BINARY, payload, mask=False)
    if kind == "long control":
        return encode_frame(draw(st.sampled_from([OP_PING, OP_PONG])), bytes(126))
    if kind == "fragmented control":
        return encode_frame(OP_PING, payload, fin=False)
    return encode_frame(OP_CONT, payload, fin=draw(st.booleans()))


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    parts: list[bytes] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["message", "message", "ping", "pong", "close", "broken"]))
        if kind == "message":
            parts += draw(messages())
        elif kind in ("ping", "pong"):
            opcode = OP_PING if kind == "ping" else OP_PONG
            parts.append(encode_frame(opcode, draw(st.binary(max_size=125))))
        elif kind == "close":
            parts.append(encode_frame(OP_CLOSE, draw(close_payloads())))
        else:
            parts.append(draw(broken_frames()))
    # Sometimes a message is left open and another one started inside it.
    if draw(st.integers(0, 7)) == 0:
        parts.insert(0, encode_frame(OP_TEXT, b"open", fin=False))
    return b"".join(parts)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(stream=streams(), cuts=st.lists(st.integers(0, 1 << 16), max_size=8))
@example(stream=encode_frame(OP_CLOSE, struct.pack("!H", 1006)), cuts=[])
@example(
    stream=encode_frame(OP_TEXT, b"\xe2\x82", fin=False) + encode_frame(OP_CONT, b"\xac"), cuts=[]
)
def test_the_frame_reader_agrees_with_wsproto(stream: bytes, cuts: list[int]) -> None:
    assert ours(stream, cuts) == oracle(stream)
