"""Seeded generators of hostile WebSocket input, and the oracle that says what must come back.

Messages: ``MessageGen.text`` draws one client message, valid or mutated (dropped and wrongly
typed fields, unknown types, truncated or padded JSON, non-objects, deep nesting, huge strings,
odd numbers and unicode, duplicate keys, trailing garbage...). Valid messages are drawn in any
order: unsubscribing what was never subscribed, presence before subscribing, refreshing with
another user's token, subscribing to foreign, missing and malformed rooms.

Oracle: ``ConnectionModel.expect`` gives the direct reply the server owes a message. Whether a
frame is a client message at all, and which error code it earns if not, is decided by the
product's pure parser (``parse_client_message``; its own unit tests hold it to CONTRACT §4); the
model adds what depends on the connection's state: membership of rooms, its subscriptions, the
user a refresh token belongs to. The live fuzzer checks that the server's replies are exactly
these, in order, with the ``id`` echoed.

Frames: ``wrap`` turns a message into frames that must mean the same (fragmented at random byte
positions with control frames in between, non-minimal length encodings, any mask key);
``violation`` draws one RFC 6455 violation and the close codes that may answer it.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from liveboard.protocol import (
    Ping,
    Presence,
    ProtocolError,
    Refresh,
    Subscribe,
    Unsubscribe,
    parse_client_message,
)
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

# CONTRACT §4: the close codes a server may send, and the two RFC 6455 protocol-level ones
# (1002 protocol error, 1007 invalid payload) that the WebSocket layer uses for frames that
# break the RFC itself.
CONTRACT_CLOSE_CODES = frozenset({1000, 1003, 1008, 1009, 1011, 1012, 4001, 4008})
PROTOCOL_CLOSE_CODES = frozenset({1002, 1007})
ALLOWED_CLOSE_CODES = CONTRACT_CLOSE_CODES | PROTOCOL_CLOSE_CODES

ERROR_CODES = frozenset(
    {
        "bad_json",
        "invalid_message",
        "unknown_type",
        "invalid_room",
        "forbidden",
        "not_subscribed",
        "too_many_subscriptions",
        "rate_limited",
        "unauthorized",
    }
)
DIRECT_REPLIES = frozenset({"pong", "subscribed", "unsubscribed", "refreshed", "error"})
UNSOLICITED = frozenset(
    {
        "task:created",
        "task:updated",
        "task:moved",
        "task:deleted",
        "project:created",
        "member:added",
        "member:removed",
        "presence:update",
        "<pong frame>",
    }
)

Expected = tuple[str, str | None, Any]  # (type, error code or None, id or None)


@dataclass
class FuzzWorld:
    """What exists on the server under test, and the tokens a connection may present."""

    project_room: str
    workspace_room: str
    foreign_rooms: list[str]
    epoch: str
    tokens: dict[str, str]  # label → token; "self:<user>" are the valid ones of each user
    members: list[str]
    strangers: list[str]

    @property
    def member_rooms(self) -> list[str]:
        return [self.project_room, self.workspace_room]


@dataclass
class ConnectionModel:
    """The state of one connection as far as replies depend on it."""

    user: str
    member: bool
    world: FuzzWorld
    subscriptions: set[str] = field(default_factory=set)

    def expect(self, text: str) -> Expected | None:
        """The direct reply ``text`` must get (None: no direct reply, e.g. a presence join)."""
        try:
            message = parse_client_message(text)
        except ProtocolError as exc:
            return ("error", exc.code, exc.id)
        mid = message.id
        if isinstance(message, Ping):
            return ("pong", None, mid)
        if isinstance(message, Subscribe):
            if self.member and message.room in self.world.member_rooms:
                self.subscriptions.add(message.room)
                return ("subscribed", None, mid)
            return ("error", "forbidden", mid)
        if isinstance(message, Unsubscribe):
            if message.room in self.subscriptions:
                self.subscriptions.discard(message.room)
                return ("unsubscribed", None, mid)
            return ("error", "not_subscribed", mid)
        if isinstance(message, Presence):
            if message.room not in self.subscriptions:
                return ("error", "not_subscribed", mid)
            return None
        assert isinstance(message, Refresh)
        if message.token == self.world.tokens.get(f"self:{self.user}"):
            return ("refreshed", None, mid)
        return ("error", "unauthorized", mid)


# ------------------------------------------------------------------------------------ values

_PALETTE = (
    string.ascii_letters
    + string.digits
    + " _-:./\\\"'{}[],"
    + "\t\n\r\x00\x01\x1f\x7f"
    + "éßøЖ中文한국어"
    + "\u200b\u200e\u202e\u2028\u2029\ufeff\ufffd"
    + "😀🇫🇷👩‍💻"
    + "\u0301\u0336"
)
_ROOM_ID = string.ascii_letters + string.digits + "_-"


def random_text(rng: random.Random, max_len: int = 40) -> str:
    return "".join(rng.choice(_PALETTE) for _ in range(rng.randint(0, max_len)))


def json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 7, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), 2**64])
    if kind == 3:
        return rng.choice([0.0, -0.0, 1.5, 1e308, -1e-308, 3.0])
    if kind in (4, 5, 6):
        return random_text(rng)
    if kind == 7:
        return rng.choice(["", "project:x", "subscribe", "ping", "a" * rng.randint(1, 300)])
    if kind == 8:
        return [json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {random_text(rng, 8): json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def dumps(value: Any, rng: random.Random) -> str:
    text = json.dumps(value, ensure_ascii=rng.random() < 0.5, separators=_separators(rng))
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate: only its escaped form is valid UTF-8
        text = json.dumps(value, ensure_ascii=True)
    return text


def _separators(rng: random.Random) -> tuple[str, str]:
    return rng.choice([(",", ":"), (", ", ": "), (" ,\n", " :\t")])


# ------------------------------------------------------------------------------------ messages


class MessageGen:
    """Draws client messages for one connection."""

    def __init__(self, rng: random.Random, world: FuzzWorld, user: str) -> None:
        self.rng = rng
        self.world = world
        self.user = user
        self._ids = 0

    def message_id(self) -> Any:
        rng = self.rng
        self._ids += 1
        roll = rng.random()
        if roll < 0.55:
            return f"m{self._ids}-{random_text(rng, 6)}"
        if roll < 0.8:
            return rng.choice([self._ids, -self._ids, 0, 2**63 - 1, 2**80 + self._ids])
        if roll < 0.9:
            return None
        return "x" * rng.randint(100, 3000) + str(self._ids)

    def room(self) -> str:
        rng, world = self.rng, self.world
        roll = rng.random()
        if roll < 0.55:
            return rng.choice(world.member_rooms)
        if roll < 0.75:
            return rng.choice(world.foreign_rooms)
        return rng.choice(
            [
                "",
                "project:",
                "workspace",
                "team:abc",
                "Project:abc",
                "project:a b",
                "project:a/b",
                "project:" + "a" * 129,
                "project:" + "a" * 128,
                "project:\uff41bc",  # fullwidth a
                "project:x\x00",
                "workspace:é",
                world.project_room + " ",
                " " + world.project_room,
                world.project_room.upper(),
                "project:" + "".join(rng.choice(_ROOM_ID) for _ in range(rng.randint(1, 12))),
                random_text(rng),
            ]
        )

    def valid(self) -> dict[str, Any]:
        """A well-formed message (which may still be refused: wrong room, wrong order...)."""
        rng = self.rng
        kind = rng.choices(
            ["ping", "subscribe", "unsubscribe", "presence", "refresh"], [2, 4, 2, 2, 1]
        )[0]
        message: dict[str, Any] = {"type": kind}
        if kind in ("subscribe", "unsubscribe", "presence"):
            message["room"] = self.room()
        if kind == "subscribe" and rng.random() < 0.4:
            message["since"] = {
                "offset": rng.choice([0, 1, 5, 10**6, 2**63 - 1]),
                "epoch": rng.choice([self.world.epoch, "stale-epoch", ""]),
            }
        if kind == "presence":
            message["action"] = rng.choice(["join", "join", "leave"])
        if kind == "refresh":
            label = rng.choice(sorted(self.world.tokens))
            message["token"] = self.world.tokens[label]
        message_id = self.message_id()
        if message_id is not None:
            message["id"] = message_id
        if rng.random() < 0.1:
            message[random_text(rng, 6) or "extra"] = json_value(rng)
        items = list(message.items())
        rng.shuffle(items)
        return dict(items)

    def text(self) -> tuple[str, str]:
        """One message as text, and the name of how it was made."""
        base = self.valid()
        if self.rng.random() < 0.4:
            return dumps(base, self.rng), "valid"
        name, mutate = self.rng.choice(MUTATORS)
        return mutate(self.rng, base), name


def _drop_field(rng: random.Random, base: dict[str, Any]) -> str:
    key = rng.choice(list(base))
    return dumps({k: v for k, v in base.items() if k != key}, rng)


def _wrong_type(rng: random.Random, base: dict[str, Any]) -> str:
    key = rng.choice([*base, "type", "room", "since", "action", "token", "id"])
    return dumps({**base, key: json_value(rng)}, rng)


def _weird_since(rng: random.Random, base: dict[str, Any]) -> str:
    since: object = rng.choice(
        [
            {"offset": -1, "epoch": "e"},
            {"offset": 2**63, "epoch": "e"},
            {"offset": 2**64 + 1, "epoch": "e"},
            {"offset": 1.5, "epoch": "e"},
            {"offset": 3.0, "epoch": "e"},
            {"offset": "3", "epoch": "e"},
            {"offset": True, "epoch": "e"},
            {"offset": 3},
            {"epoch": "e"},
            {"offset": 3, "epoch": 3},
            {"offset": None, "epoch": None},
            [],
            "0",
            None,
            {},
        ]
    )
    room = base.get("room", "project:x")
    return dumps({**base, "type": "subscribe", "room": room, "since": since}, rng)


def _bad_type_name(rng: random.Random, base: dict[str, Any]) -> str:
    name = rng.choice(
        [
            "Subscribe",
            "SUBSCRIBE",
            "ping ",
            " ping",
            "",
            "pong",
            "subscribed",
            "error",
            "connected",
            "task:created",
            "ping\x00",
            "p\u0131ng",
            random_text(rng),
            "x" * 5000,
        ]
    )
    return dumps({**base, "type": name}, rng)


def _truncate(rng: random.Random, base: dict[str, Any]) -> str:
    text = dumps(base, rng)
    return text[: rng.randrange(0, len(text))]


def _garbage(rng: random.Random, base: dict[str, Any]) -> str:
    text = dumps(base, rng)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(0, len(text) + 1)
        text = text[:at] + rng.choice(list('{}[]",:\\ \t0a-é\x00')) + text[at:]
    return text


def _non_object(rng: random.Random, base: dict[str, Any]) -> str:
    return rng.choice(
        [
            *("[]", "{}", '"ping"', "42", "-0", "null", "true", "false", '""', "[{}]", "1e999"),
            dumps([base], rng),
            dumps(json_value(rng), rng),
        ]
    )


def _deep(rng: random.Random, base: dict[str, Any]) -> str:
    depth = rng.choice([64, 300, 1000, 5000, 20000])
    roll = rng.randrange(3)
    if roll == 0:
        return "[" * depth + "]" * depth
    if roll == 1:
        return '{"type":"ping","id":' + "[" * depth + "]" * depth + "}"
    return '{"a":' * depth + "1" + "}" * depth


def _huge(rng: random.Random, base: dict[str, Any]) -> str:
    roll = rng.randrange(4)
    if roll == 0:
        return dumps({**base, "id": "i" * rng.randint(1000, 50000)}, rng)
    if roll == 1:
        return dumps({**base, "pad": ["x"] * rng.randint(1000, 9000)}, rng)
    if roll == 2:
        return dumps({**base, **{f"k{i}": i for i in range(rng.randint(100, 3000))}}, rng)
    return dumps({**base, "room": "project:" + "a" * rng.randint(129, 50000)}, rng)


def _odd_numbers(rng: random.Random, base: dict[str, Any]) -> str:
    number = rng.choice(
        ["1e400", "-1e400", "NaN", "Infinity", "-0", "0x10", "01", "1.", ".5", "+1", "1e2", "2e0"]
    )
    return rng.choice(
        [
            '{"type":"subscribe","room":"project:x","since":{"offset":' + number + ',"epoch":"e"}}',
            '{"type":"ping","id":' + number + "}",
        ]
    )


def _unicode(rng: random.Random, base: dict[str, Any]) -> str:
    return rng.choice(
        [
            '{"type":"ping","id":"\\ud800"}',
            '{"type":"ping","id":"\\udfff\\ud800"}',
            '{"type":"ping","id":"\\ud83d\\ude00"}',
            '{"type":"p\\u0069ng"}',
            '{"type":"ping\\u0000"}',
            '{"type":"ping","id":"\\u0000"}',
            '{"\\u0074ype":"ping"}',
            '{"type":"subscribe","room":"project:\\u0430bc"}',
            '{"type":"ping","id":"\\x41"}',
            '{"type":"ping","id":"\\u00"}',
            "\ufeff" + dumps(base, rng),
            json.dumps({"type": "ping", "id": random_text(rng, 200)}, ensure_ascii=False),
        ]
    )


def _duplicate_keys(rng: random.Random, base: dict[str, Any]) -> str:
    first, second = rng.sample(["ping", "subscribe", "refresh", "dance", "presence"], 2)
    return f'{{"type":"{first}","room":"project:x","type":"{second}","id":"dup","id":7}}'


def _trailing(rng: random.Random, base: dict[str, Any]) -> str:
    text = dumps(base, rng)
    return text + rng.choice([" x", "{}", "\n", "   ", "\x00", ",", text, "\n\n// comment"])


def _empty(rng: random.Random, base: dict[str, Any]) -> str:
    return rng.choice(["", " ", "\n", "\t\r\n "])


MUTATORS: list[tuple[str, Callable[[random.Random, dict[str, Any]], str]]] = [
    ("drop_field", _drop_field),
    ("wrong_type", _wrong_type),
    ("weird_since", _weird_since),
    ("bad_type_name", _bad_type_name),
    ("truncate", _truncate),
    ("garbage", _garbage),
    ("non_object", _non_object),
    ("deep", _deep),
    ("huge", _huge),
    ("odd_numbers", _odd_numbers),
    ("unicode", _unicode),
    ("duplicate_keys", _duplicate_keys),
    ("trailing", _trailing),
    ("empty", _empty),
]


# ------------------------------------------------------------------------------------ frames


def wrap(rng: random.Random, data: bytes) -> tuple[list[bytes], int, str]:
    """Frames that carry ``data`` as one text message: (frames, pings sent, how)."""
    roll = rng.random()
    if roll < 0.65 or not data:
        key = b"\x00\x00\x00\x00" if rng.random() < 0.05 else None
        return [encode_frame(OP_TEXT, data, mask_key=key)], 0, "single"
    if roll < 0.8:
        form = 16 if len(data) < 1 << 16 and rng.random() < 0.6 else 64
        return [encode_frame(OP_TEXT, data, length_form=form)], 0, f"length{form}"
    # fragmented at random byte positions (UTF-8 sequences may be split: that is legal)
    cuts = sorted(rng.sample(range(0, len(data) + 1), min(len(data) + 1, rng.randint(1, 5))))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    frames: list[bytes] = []
    pings = 0
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        frames.append(encode_frame(OP_TEXT if index == 0 else OP_CONT, piece, fin=last))
        if not last and rng.random() < 0.4:
            if rng.random() < 0.7:
                frames.append(encode_frame(OP_PING, rng.randbytes(rng.randint(0, 125))))
                pings += 1
            else:
                frames.append(encode_frame(OP_PONG, rng.randbytes(rng.randint(0, 125))))
    return frames, pings, f"fragments{len(pieces)}"


INVALID_UTF8 = [
    b"\xff",
    b"\xfe\xff",
    b"\x80",
    b"\xbf",
    b"\xc0\x80",  # overlong NUL
    b"\xc1\xbf",
    b"\xe0\x80\xaf",  # overlong '/'
    b"\xed\xa0\x80",  # UTF-16 surrogate
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xe2\x82",  # truncated sequence
    b"\xce",
]

# 1006 and 1015 are reserved for reporting (§7.4.1); 5000 and up are not defined (§7.4.2).
_BAD_CLOSE = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
_GOOD_CLOSE = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]


@dataclass(frozen=True)
class Violation:
    name: str
    frames: list[bytes]
    expect: frozenset[int]  # acceptable close codes
    kind: str = ""


def violation(rng: random.Random) -> Violation:
    """One frame-level violation of RFC 6455 (or of the contract: binary, oversized)."""
    make = rng.choice(VIOLATION_KINDS)
    found = make(rng)
    return Violation(found.name, found.frames, found.expect, make.__name__.removeprefix("_v_"))


def _v_unmasked(rng: random.Random) -> Violation:
    op = rng.choice([OP_TEXT, OP_TEXT, OP_PING, OP_BINARY, OP_CLOSE])
    payload = b'{"type":"ping","id":"unmasked"}' if op == OP_TEXT else b""
    if op == OP_CLOSE:
        payload = close_payload(1000)
    return Violation(f"unmasked opcode {op}", [encode_frame(op, payload, mask=False)], _P)


def _v_rsv(rng: random.Random) -> Violation:
    rsv = rng.randint(1, 7)
    op = rng.choice([OP_TEXT, OP_BINARY, OP_CONT, OP_PING])
    frames = [encode_frame(op, b'{"type":"ping"}', rsv=rsv)]
    return Violation(f"rsv {rsv} on opcode {op}", frames, _P)


def _v_opcode(rng: random.Random) -> Violation:
    op = rng.choice([0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
    return Violation(f"reserved opcode {op:#x}", [encode_frame(op, rng.randbytes(8))], _P)


def _v_big_control(rng: random.Random) -> Violation:
    op = rng.choice([OP_PING, OP_PONG, OP_CLOSE])
    size = rng.choice([126, 127, 200, 1000, 65535])
    payload = rng.randbytes(size)
    if op == OP_CLOSE:
        payload = close_payload(1000, b"r" * (size - 2))
    return Violation(f"control {op:#x} with {size} bytes", [encode_frame(op, payload)], _P)


def _v_fragmented_control(rng: random.Random) -> Violation:
    op = rng.choice([OP_PING, OP_PONG, OP_CLOSE])
    payload = close_payload(1000) if op == OP_CLOSE else b"ab"
    frames = [encode_frame(op, payload, fin=False), encode_frame(OP_CONT, b"cd")]
    return Violation(f"fragmented control {op:#x}", frames, _P)


def _v_orphan_continuation(rng: random.Random) -> Violation:
    return Violation(
        "continuation without a start",
        [encode_frame(OP_CONT, b'{"type":"ping"}', fin=rng.random() < 0.5)],
        _P,
    )


def _v_interrupted(rng: random.Random) -> Violation:
    op = rng.choice([OP_TEXT, OP_BINARY])
    frames = [
        encode_frame(OP_TEXT, b'{"type":', fin=False),
        encode_frame(op, b'{"type":"ping"}', fin=rng.random() < 0.5),
    ]
    return Violation(f"new opcode {op} inside a fragmented message", frames, _P)


def _v_invalid_utf8(rng: random.Random) -> Violation:
    bad = rng.choice(INVALID_UTF8)
    data = b'{"type":"ping","id":"' + bad + b'"}'
    if rng.random() < 0.5:
        return Violation(f"invalid utf-8 {bad!r}", [encode_frame(OP_TEXT, data)], _I)
    cut = rng.randint(1, len(data) - 1)
    frames = [encode_frame(OP_TEXT, data[:cut], fin=False), encode_frame(OP_CONT, data[cut:])]
    return Violation(f"invalid utf-8 {bad!r} across fragments", frames, _I)


def _v_close_code(rng: random.Random) -> Violation:
    roll = rng.random()
    if roll < 0.5:
        code = rng.choice(_BAD_CLOSE)
        return Violation(f"close code {code}", [encode_frame(OP_CLOSE, close_payload(code))], _P)
    if roll < 0.75:
        return Violation("close with 1 byte", [encode_frame(OP_CLOSE, b"\x03")], _P)
    bad = rng.choice(INVALID_UTF8)
    return Violation(
        f"close reason {bad!r}", [encode_frame(OP_CLOSE, close_payload(1000, bad))], _I
    )


def _v_binary(rng: random.Random) -> Violation:
    frame = encode_frame(OP_BINARY, rng.randbytes(16))
    return Violation("binary frame", [frame], frozenset({1003}))


def _v_oversized(rng: random.Random) -> Violation:
    roll = rng.randrange(4)
    limit = 65536
    if roll == 0:
        size = rng.choice([limit + 1, limit + 1000, 200_000])
        return Violation(f"text of {size} bytes", [encode_frame(OP_TEXT, b"x" * size)], _B)
    if roll == 1:
        declared = rng.choice([limit + 1, 2**32, 2**62, 2**63 - 1, 2**63, 2**64 - 1])
        frame = encode_frame(OP_TEXT, b"", length=declared, length_form=64)
        return Violation(f"declared length {declared}", [frame], _B)
    if roll == 2:
        half = limit // 2 + 1
        frames = [
            encode_frame(OP_TEXT, b"x" * half, fin=False),
            encode_frame(OP_CONT, b"x" * half),
        ]
        return Violation("fragments adding up past the limit", frames, _B)
    frames = [encode_frame(OP_TEXT, b"[", fin=False)] + [
        encode_frame(OP_CONT, b"1," * 2000, fin=False) for _ in range(20)
    ]
    return Violation("many fragments past the limit", frames, _B)


_P = frozenset({1002})
_I = frozenset({1007})
_B = frozenset({1009})

VIOLATION_KINDS: list[Callable[[random.Random], Violation]] = [
    _v_unmasked,
    _v_rsv,
    _v_opcode,
    _v_big_control,
    _v_fragmented_control,
    _v_orphan_continuation,
    _v_interrupted,
    _v_invalid_utf8,
    _v_close_code,
    _v_binary,
    _v_oversized,
]


def good_close(rng: random.Random) -> bytes:
    code = rng.choice(_GOOD_CLOSE)
    reason = rng.choice([b"", b"bye", "au revoir é".encode(), b"r" * 123])
    return encode_frame(OP_CLOSE, close_payload(code, reason))


def chaos(rng: random.Random) -> tuple[str, bytes]:
    """Bytes whose effect cannot be predicted: only the general invariants hold."""
    roll = rng.randrange(4)
    if roll == 0:
        body = b'{"type":"ping","id":"chaos"}'
        short = rng.randint(0, len(body) - 1)
        return "length says less than sent", encode_frame(OP_TEXT, body, length=short)
    if roll == 1:
        return "random bytes", rng.randbytes(rng.randint(1, 300))
    if roll == 2:
        frame = encode_frame(OP_TEXT, b'{"type":"ping"}')
        at = rng.randrange(len(frame))
        flipped = bytes([frame[at] ^ (1 << rng.randrange(8))])
        return f"bit flip at byte {at}", frame[:at] + flipped + frame[at + 1 :]
    return "http request inside the socket", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
