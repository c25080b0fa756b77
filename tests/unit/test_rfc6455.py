"""The client frame reader (``realtime.transport.rfc6455``), fed bytes directly."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveboard.realtime.transport.rfc6455 import (
    NO_STATUS,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Frame,
    FrameError,
    FrameReader,
    unmask,
    valid_close_code,
)
from tests.support.frames import OP_CONT, close_payload, encode_frame
from tests.support.rfc_cases import RFC_CASES

LIMIT = 1000
SERVER_LIMIT = 65536  # the default LIVEBOARD_MAX_MESSAGE_BYTES, which RFC_CASES assume


def drain(reader: FrameReader) -> list[Frame]:
    frames: list[Frame] = []
    while (frame := reader.next_frame()) is not None:
        frames.append(frame)
    return frames


def read(*chunks: bytes, limit: int = LIMIT) -> list[Frame]:
    reader = FrameReader(limit)
    frames: list[Frame] = []
    for chunk in chunks:
        reader.feed(chunk)
        frames.extend(drain(reader))
    return frames


def code_of(*chunks: bytes, limit: int = LIMIT) -> int:
    with pytest.raises(FrameError) as caught:
        read(*chunks, limit=limit)
    return caught.value.code


def test_a_text_frame_is_one_message() -> None:
    assert read(encode_frame(OP_TEXT, b'{"type":"ping"}')) == [Frame(OP_TEXT, '{"type":"ping"}')]


def test_every_length_form_is_read() -> None:
    for size in (0, 1, 125, 126, 1000):
        payload = os.urandom(size)
        assert read(encode_frame(OP_BINARY, payload)) == [Frame(OP_BINARY, payload)]
    assert read(encode_frame(OP_TEXT, b"abc", length_form=64)) == [Frame(OP_TEXT, "abc")]


@given(
    messages=st.lists(st.text(max_size=300), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=10),
)
def test_any_split_of_the_stream_gives_the_same_messages(
    messages: list[str], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(OP_TEXT, m.encode()) for m in messages)
    points = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]
    assert read(*chunks, limit=10_000) == [Frame(OP_TEXT, m) for m in messages]


def test_fragments_join_and_control_frames_pass_between_them() -> None:
    frames = read(
        encode_frame(OP_TEXT, "héllo ".encode()[:2], fin=False),
        encode_frame(OP_PING, b"p"),
        encode_frame(OP_CONT, "héllo ".encode()[2:], fin=False),
        encode_frame(OP_PONG, b"q"),
        encode_frame(OP_CONT, b"world"),
    )
    assert frames == [Frame(OP_PING, b"p"), Frame(OP_PONG, b"q"), Frame(OP_TEXT, "héllo world")]


def test_a_message_of_the_limit_is_accepted_and_one_byte_more_refused_before_its_payload() -> None:
    assert read(encode_frame(OP_TEXT, b"x" * LIMIT)) == [Frame(OP_TEXT, "x" * LIMIT)]
    header_only = encode_frame(OP_TEXT, b"x" * (LIMIT + 1))[:8]
    assert code_of(header_only) == 1009


def test_fragments_count_together_against_the_limit() -> None:
    half = LIMIT // 2 + 1
    assert (
        code_of(
            encode_frame(OP_TEXT, b"x" * half, fin=False), encode_frame(OP_CONT, b"x" * half)[:8]
        )
        == 1009
    )


def test_close_frames() -> None:
    assert read(encode_frame(OP_CLOSE)) == [Frame(OP_CLOSE, "", NO_STATUS)]
    assert read(encode_frame(OP_CLOSE, close_payload(4000, "bye ✓".encode()))) == [
        Frame(OP_CLOSE, "bye ✓", 4000)
    ]


def test_nothing_after_a_close_frame_is_read() -> None:
    reader = FrameReader(LIMIT)
    reader.feed(encode_frame(OP_CLOSE, close_payload(1000)) + encode_frame(OP_TEXT, b"late"))
    assert drain(reader) == [Frame(OP_CLOSE, "", 1000)]
    reader.feed(encode_frame(OP_TEXT, b"later"))
    assert reader.next_frame() is None


def test_frames_are_taken_one_at_a_time_and_those_before_a_violation_come_first() -> None:
    reader = FrameReader(LIMIT)
    reader.feed(
        encode_frame(OP_TEXT, b"one")
        + encode_frame(OP_TEXT, b"two")
        + encode_frame(OP_TEXT, b"\xff")
    )
    assert reader.next_frame() == Frame(OP_TEXT, "one")
    assert reader.next_frame() == Frame(OP_TEXT, "two")
    with pytest.raises(FrameError) as caught:
        reader.next_frame()
    assert caught.value.code == 1007


def test_invalid_utf8_fails_at_its_fragment_not_at_the_end_of_the_message() -> None:
    """Fail fast (Autobahn 6.4): the message's last fragment may never come."""
    reader = FrameReader(LIMIT)
    reader.feed(encode_frame(OP_TEXT, b"ok \xce\xba\xe1", fin=False))
    assert reader.next_frame() is None  # a sequence cut at the fragment's end may still be valid
    reader.feed(encode_frame(OP_CONT, b"\xbd\xb9\xff", fin=False))
    with pytest.raises(FrameError) as caught:
        reader.next_frame()
    assert caught.value.code == 1007


def test_a_character_split_across_fragments_is_whole_again() -> None:
    pieces = [b"\xf0", b"\x9f", b"\x98", b"\x80 done"]
    stream = b"".join(
        encode_frame(OP_TEXT if i == 0 else OP_CONT, piece, fin=i == len(pieces) - 1)
        for i, piece in enumerate(pieces)
    )
    assert read(stream) == [Frame(OP_TEXT, "\U0001f600 done")]


def test_a_message_cut_inside_a_character_is_invalid() -> None:
    stream = encode_frame(OP_TEXT, b"\xe2\x82", fin=False) + encode_frame(OP_CONT, b"")
    assert code_of(stream) == 1007


def test_many_empty_fragments_make_one_message() -> None:
    stream = (
        encode_frame(OP_TEXT, b"a", fin=False)
        + encode_frame(OP_CONT, b"", fin=False) * 5000
        + encode_frame(OP_CONT, b"b")
    )
    assert read(stream) == [Frame(OP_TEXT, "ab")]


def test_a_large_frame_in_small_pieces() -> None:
    payload = os.urandom(200_000)
    stream = encode_frame(OP_BINARY, payload)
    pieces = [stream[i : i + 1448] for i in range(0, len(stream), 1448)]
    assert read(*pieces, limit=1 << 20) == [Frame(OP_BINARY, payload)]


# The cases a live server is checked against, without the ones for the message loop (binary
# frames are refused there, with 1003), plus a few only the reader sees.
VIOLATIONS: dict[str, tuple[list[bytes], int]] = {
    **{case: value for case, value in RFC_CASES.items() if value[1] != 1003},
    "unmasked after a masked one": (
        [encode_frame(OP_TEXT, b"x") + encode_frame(OP_PING, b"x", mask=False)],
        1002,
    ),
    "close code 1006": ([encode_frame(OP_CLOSE, close_payload(1006))], 1002),
    "close code 5000": ([encode_frame(OP_CLOSE, close_payload(5000))], 1002),
}


@pytest.mark.parametrize("case", list(VIOLATIONS))
def test_violations_carry_their_close_code(case: str) -> None:
    chunks, code = VIOLATIONS[case]
    assert code_of(*chunks, limit=SERVER_LIMIT) == code


def test_close_codes_a_peer_may_send() -> None:
    allowed = {c for c in range(0, 6000) if valid_close_code(c)}
    assert allowed == {1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)}


@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
def test_unmask_is_the_xor_with_the_repeated_key(payload: bytes, key: bytes) -> None:
    assert unmask(payload, key) == bytes(b ^ key[i % 4] for i, b in enumerate(payload))
