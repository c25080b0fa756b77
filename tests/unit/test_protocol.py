"""The WebSocket wire protocol: parsing every client message, every error code, every encoder."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveboard.protocol import (
    CLIENT_MESSAGE_TYPES,
    ERROR_CODES,
    MAX_OFFSET,
    ClientMessage,
    MessageId,
    Ping,
    Position,
    Presence,
    ProtocolError,
    Refresh,
    Subscribe,
    Unsubscribe,
    encode_client_message,
    encode_connected,
    encode_error,
    encode_pong,
    encode_presence_update,
    encode_refreshed,
    encode_resync,
    encode_subscribed,
    encode_unsubscribed,
    parse_client_message,
    parse_room,
)


def parse_error(raw: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(raw)
    return info.value


def msg(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


# ------------------------------------------------------------------------------- valid messages


def test_error_codes_are_the_contract_list() -> None:
    assert sorted(ERROR_CODES) == sorted(
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


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (msg(type="subscribe", room="project:p1"), Subscribe("project:p1")),
        (
            msg(type="subscribe", room="workspace:w_1-A", id=7),
            Subscribe("workspace:w_1-A", id=7),
        ),
        (
            msg(type="subscribe", room="project:p1", since={"offset": 42, "epoch": "ep"}, id="a"),
            Subscribe("project:p1", Position(42, "ep"), id="a"),
        ),
        (
            msg(type="subscribe", room="project:p1", since={"offset": 0, "epoch": ""}),
            Subscribe("project:p1", Position(0, "")),
        ),
        (
            msg(type="subscribe", room="project:p1", since={"offset": MAX_OFFSET, "epoch": "e"}),
            Subscribe("project:p1", Position(MAX_OFFSET, "e")),
        ),
        (msg(type="subscribe", room="project:p1", since=None), Subscribe("project:p1")),
        (msg(type="unsubscribe", room="project:p1", id=0), Unsubscribe("project:p1", id=0)),
        (
            msg(type="presence", action="join", room="project:p1", id=-3),
            Presence("join", "project:p1", id=-3),
        ),
        (
            msg(type="presence", action="leave", room="workspace:w"),
            Presence("leave", "workspace:w"),
        ),
        (msg(type="ping"), Ping()),
        (msg(type="ping", id=""), Ping(id="")),
        (msg(type="ping", id=2**70), Ping(id=2**70)),
        (msg(type="refresh", token="abc.def.ghi", id="r"), Refresh("abc.def.ghi", id="r")),
        # "id": null is read as no id.
        (msg(type="ping", id=None), Ping()),
        # Unknown keys are ignored (forward compatibility), at every level.
        (
            msg(
                type="subscribe",
                room="project:p1",
                since={"offset": 1, "epoch": "e", "extra": [1]},
                future={"a": 1},
            ),
            Subscribe("project:p1", Position(1, "e")),
        ),
        # Key order does not matter, nor whitespace.
        (b' {"room" : "project:p1",\n "type": "unsubscribe"} ', Unsubscribe("project:p1")),
    ],
)
def test_valid_messages(raw: bytes, expected: ClientMessage) -> None:
    assert parse_client_message(raw) == expected
    assert parse_client_message(raw.decode()) == expected


def test_room_id_bounds() -> None:
    longest = "project:" + "a" * 128
    assert parse_client_message(msg(type="subscribe", room=longest)) == Subscribe(longest)
    assert parse_client_message(msg(type="subscribe", room="workspace:" + "Z" * 128)).id is None


def test_non_ascii_text_is_accepted_in_strings() -> None:
    token = "tökén-✓"
    assert parse_client_message(msg(type="refresh", token=token)) == Refresh(token)
    raw = json.dumps({"type": "refresh", "token": token}, ensure_ascii=False)
    assert parse_client_message(raw) == Refresh(token)
    assert parse_client_message(raw.encode()) == Refresh(token)


# ------------------------------------------------------------------------------ invalid messages


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"{",
        b'{"type": "ping"',
        b'{"type": "ping"} trailing',
        b"{'type': 'ping'}",
        b'{"type": "ping", "id": NaN}',
        b"\xff\xfe",
        b'{"type": "refresh", "token": "\xc3"}',  # invalid UTF-8 inside a string
        b'{"type": "refresh", "token": "\\ud800"}',  # lone surrogate escape
        "\ud800",
        '{"type": "refresh", "token": "\udcff"}',
        None,
        42,
        {"type": "ping"},
    ],
)
def test_bad_json(raw: Any) -> None:
    error = parse_error(raw)
    assert (error.code, error.id) == ("bad_json", None)


@pytest.mark.parametrize(
    ("raw", "expected_id"),
    [
        (b"[]", None),
        (b'[{"type": "ping", "id": 1}]', None),
        (b"1", None),
        (b'"ping"', None),
        (b"null", None),
        (b"true", None),
        (b"{}", None),
        (msg(id=5), 5),
        (msg(type=None, id="a"), "a"),
        (msg(type=1, id="a"), "a"),
        (msg(type=["ping"], id="a"), "a"),
        (msg(type={"ping": 1}), None),
        # missing fields
        (msg(type="subscribe", id=1), 1),
        (msg(type="unsubscribe", id="u"), "u"),
        (msg(type="presence", room="project:p", id=2), 2),
        (msg(type="presence", action="join", id=2), 2),
        (msg(type="refresh", id=3), 3),
        # ill-typed fields
        (msg(type="subscribe", room=5, id=1), 1),
        (msg(type="subscribe", room=None, id=1), 1),
        (msg(type="subscribe", room=["project:p"], id=1), 1),
        (msg(type="unsubscribe", room={"id": "p"}, id=1), 1),
        (msg(type="presence", action="hop", room="project:p", id=1), 1),
        (msg(type="presence", action="JOIN", room="project:p", id=1), 1),
        (msg(type="presence", action=1, room="project:p", id=1), 1),
        (msg(type="refresh", token=None, id=1), 1),
        (msg(type="refresh", token=12, id=1), 1),
        # since
        (msg(type="subscribe", room="project:p", since=5, id=1), 1),
        (msg(type="subscribe", room="project:p", since="5:e", id=1), 1),
        (msg(type="subscribe", room="project:p", since=[5, "e"], id=1), 1),
        (msg(type="subscribe", room="project:p", since={"epoch": "e"}, id=1), 1),
        (msg(type="subscribe", room="project:p", since={"offset": 5}, id=1), 1),
        (msg(type="subscribe", room="project:p", since={"offset": -1, "epoch": "e"}, id=1), 1),
        (msg(type="subscribe", room="project:p", since={"offset": 1.0, "epoch": "e"}, id=1), 1),
        (msg(type="subscribe", room="project:p", since={"offset": 1.5, "epoch": "e"}, id=1), 1),
        (msg(type="subscribe", room="project:p", since={"offset": True, "epoch": "e"}, id=1), 1),
        (msg(type="subscribe", room="project:p", since={"offset": "5", "epoch": "e"}, id=1), 1),
        (msg(type="subscribe", room="project:p", since={"offset": None, "epoch": "e"}, id=1), 1),
        (
            msg(type="subscribe", room="project:p", since={"offset": MAX_OFFSET + 1, "epoch": "e"}),
            None,
        ),
        (msg(type="subscribe", room="project:p", since={"offset": 1, "epoch": 1}, id=1), 1),
        (msg(type="subscribe", room="project:p", since={"offset": 1, "epoch": None}, id="x"), "x"),
        # ids that are neither string nor integer: the message is invalid and no id is echoed
        (msg(type="ping", id=True), None),
        (msg(type="ping", id=False), None),
        (msg(type="ping", id=1.5), None),
        (msg(type="ping", id=1.0), None),
        (msg(type="ping", id=[1]), None),
        (msg(type="ping", id={"a": 1}), None),
        (msg(type="subscribe", room="project:p", id=True), None),
        # nested deeper than the parser goes
        (b"[" * 100_000 + b"]" * 100_000, None),
        (b'{"type": "ping", "id": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),
    ],
)
def test_invalid_message(raw: bytes, expected_id: MessageId) -> None:
    error = parse_error(raw)
    assert (error.code, error.id) == ("invalid_message", expected_id)
    assert error.message


@pytest.mark.parametrize(
    ("raw", "expected_id"),
    [
        (msg(type=""), None),
        (msg(type="Subscribe", room="project:p", id=4), 4),
        (msg(type="task:created", id="t"), "t"),
        (msg(type="subscribed", room="project:p"), None),
        (msg(type="pong", id=True), None),  # the id is invalid, so not echoed
        (msg(type="x" * 10_000, id=1), 1),
    ],
)
def test_unknown_type(raw: bytes, expected_id: MessageId) -> None:
    error = parse_error(raw)
    assert (error.code, error.id) == ("unknown_type", expected_id)
    assert len(error.message) < 200  # a huge type is not echoed back at length


BAD_ROOMS = [
    "",
    "project",
    "project:",
    "workspace:",
    ":p1",
    "projects:p1",
    "Project:p1",
    "user:u1",
    "project:p 1",
    "project:p:1",
    "project:p/1",
    "project:p.1",
    "project:é",
    "project:p1\n",
    "\nproject:p1",
    " project:p1",
    "project:p1 ",
    "project:" + "a" * 129,
    "workspace:" + "a" * 129,
    "project:" + "a" * 1_000_000,
]


@pytest.mark.parametrize("room", BAD_ROOMS, ids=lambda room: repr(room[:20]))
@pytest.mark.parametrize(
    ("fields", "expected_id"),
    [
        ({"type": "subscribe", "id": 9}, 9),
        ({"type": "subscribe", "since": {"offset": 1, "epoch": "e"}}, None),
        ({"type": "unsubscribe", "id": "u"}, "u"),
        ({"type": "presence", "action": "join", "id": 0}, 0),
    ],
)
def test_invalid_room(room: str, fields: dict[str, Any], expected_id: MessageId) -> None:
    error = parse_error(msg(**fields, room=room))
    assert (error.code, error.id) == ("invalid_room", expected_id)


@pytest.mark.parametrize("room", BAD_ROOMS, ids=lambda room: repr(room[:20]))
def test_parse_room_rejects(room: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_room(room)
    assert (info.value.code, info.value.id) == ("invalid_room", None)


@pytest.mark.parametrize(
    ("room", "expected"),
    [
        ("project:p1", ("project", "p1")),
        ("workspace:w1", ("workspace", "w1")),
        ("project:_-aZ09", ("project", "_-aZ09")),
        ("project:project", ("project", "project")),
        ("workspace:" + "9" * 128, ("workspace", "9" * 128)),
    ],
)
def test_parse_room_accepts(room: str, expected: tuple[str, str]) -> None:
    assert parse_room(room) == expected


def test_invalid_message_fields_come_before_the_room_check() -> None:
    # A message that is ill-typed elsewhere is invalid_message even if its room is also bad.
    error = parse_error(msg(type="presence", action="dance", room="nope", id=3))
    assert (error.code, error.id) == ("invalid_message", 3)


def test_error_messages_do_not_echo_garbage_at_length() -> None:
    error = parse_error(msg(type="presence", action="x" * 50_000, room="project:p"))
    assert error.code == "invalid_message"
    assert len(error.message) <= 300


def test_protocol_error_rejects_unknown_codes() -> None:
    with pytest.raises(ValueError, match="unknown protocol error code"):
        ProtocolError("nope", "m")
    error = ProtocolError("forbidden", "no", "id-1")
    assert (error.code, error.message, error.id, str(error)) == ("forbidden", "no", "id-1", "no")


# -------------------------------------------------------------------------------------- encoders


def decoded(raw: bytes) -> Any:
    assert isinstance(raw, bytes)
    return json.loads(raw.decode("utf-8"))


def test_encode_connected() -> None:
    assert decoded(encode_connected("c-1", "alice")) == {
        "type": "connected",
        "connectionId": "c-1",
        "userId": "alice",
    }


@pytest.mark.parametrize(
    ("kwargs", "expected_extra"),
    [
        ({"id": None}, {}),
        ({"id": 0}, {"id": 0}),
        ({"id": "s-1"}, {"id": "s-1"}),
        ({"id": None, "recovered": True}, {"recovered": True}),
        ({"id": 5, "recovered": False}, {"id": 5, "recovered": False}),
    ],
)
def test_encode_subscribed(kwargs: dict[str, Any], expected_extra: dict[str, Any]) -> None:
    assert decoded(encode_subscribed("project:p1", 12, "ep-1", **kwargs)) == {
        "type": "subscribed",
        "room": "project:p1",
        "offset": 12,
        "epoch": "ep-1",
        **expected_extra,
    }


def test_encode_unsubscribed() -> None:
    assert decoded(encode_unsubscribed("project:p1")) == {
        "type": "unsubscribed",
        "room": "project:p1",
    }
    assert decoded(encode_unsubscribed("project:p1", id=3)) == {
        "type": "unsubscribed",
        "room": "project:p1",
        "id": 3,
    }
    assert decoded(encode_unsubscribed("project:p1", reason="forbidden")) == {
        "type": "unsubscribed",
        "room": "project:p1",
        "reason": "forbidden",
    }


def test_encode_pong() -> None:
    assert decoded(encode_pong(None)) == {"type": "pong"}
    assert decoded(encode_pong(0)) == {"type": "pong", "id": 0}
    assert decoded(encode_pong("p")) == {"type": "pong", "id": "p"}


def test_encode_refreshed() -> None:
    assert decoded(encode_refreshed(1_764_120_000, None)) == {
        "type": "refreshed",
        "expiresAt": 1_764_120_000,
    }
    assert decoded(encode_refreshed(1_764_120_000, "r")) == {
        "type": "refreshed",
        "expiresAt": 1_764_120_000,
        "id": "r",
    }


def test_encode_error() -> None:
    assert decoded(encode_error("forbidden", "not a member")) == {
        "type": "error",
        "code": "forbidden",
        "message": "not a member",
    }
    assert decoded(encode_error("bad_json", "oops", 7)) == {
        "type": "error",
        "code": "bad_json",
        "message": "oops",
        "id": 7,
    }
    with pytest.raises(ValueError, match="unknown protocol error code"):
        encode_error("teapot", "no")


def test_encode_error_from_a_protocol_error() -> None:
    error = parse_error(msg(type="subscribe", room="nope", id="s"))
    assert decoded(encode_error(error.code, error.message, error.id)) == {
        "type": "error",
        "code": "invalid_room",
        "message": error.message,
        "id": "s",
    }


def test_encode_presence_update() -> None:
    raw = encode_presence_update(
        "project:p1", [("alice", "Alice"), ("bob", "Bób ✓")], joined=["bob"], left=["carol"]
    )
    assert decoded(raw) == {
        "type": "presence:update",
        "room": "project:p1",
        "users": [{"userId": "alice", "name": "Alice"}, {"userId": "bob", "name": "Bób ✓"}],
        "joined": ["bob"],
        "left": ["carol"],
    }
    assert "Bób ✓".encode() in raw  # UTF-8 text, not \u escapes
    assert decoded(encode_presence_update("workspace:w", (), (), ())) == {
        "type": "presence:update",
        "room": "workspace:w",
        "users": [],
        "joined": [],
        "left": [],
    }


def test_encode_resync() -> None:
    assert decoded(encode_resync("project:p1", "epoch_changed")) == {
        "type": "resync",
        "room": "project:p1",
        "reason": "epoch_changed",
    }


def test_encode_client_message() -> None:
    assert decoded(encode_client_message(Ping())) == {"type": "ping"}
    assert decoded(encode_client_message(Subscribe("project:p", Position(3, "e"), id=1))) == {
        "type": "subscribe",
        "room": "project:p",
        "since": {"offset": 3, "epoch": "e"},
        "id": 1,
    }


# ----------------------------------------------------------------------------- property tests

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)

safe_text = st.text(st.characters(codec="utf-8"), max_size=30)
room_ids = st.text(
    st.sampled_from("abcXYZ019_-"),
    min_size=1,
    max_size=128,
)
rooms = st.builds(
    lambda kind, rid: f"{kind}:{rid}", st.sampled_from(["project", "workspace"]), room_ids
)
ids: st.SearchStrategy[MessageId] = st.none() | st.integers() | safe_text
positions = st.builds(Position, offset=st.integers(0, MAX_OFFSET), epoch=safe_text)

client_messages: st.SearchStrategy[ClientMessage] = st.one_of(
    st.builds(Subscribe, room=rooms, since=st.none() | positions, id=ids),
    st.builds(Unsubscribe, room=rooms, id=ids),
    st.builds(Presence, action=st.sampled_from(["join", "leave"]), room=rooms, id=ids),
    st.builds(Ping, id=ids),
    st.builds(Refresh, token=safe_text, id=ids),
)

# Objects shaped like client messages, with each field sometimes right and sometimes garbage, so
# the generator reaches the deep validation paths and not only "not an object".
message_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(sorted(CLIENT_MESSAGE_TYPES)) | json_values,
        "id": ids | json_values,
        "room": rooms | json_values,
        "action": st.sampled_from(["join", "leave"]) | json_values,
        "token": safe_text | json_values,
        "since": st.fixed_dictionaries(
            {}, optional={"offset": st.integers() | json_values, "epoch": safe_text | json_values}
        )
        | json_values,
    },
)


def outcome(raw: Any) -> ClientMessage | ProtocolError:
    try:
        return parse_client_message(raw)
    except ProtocolError as error:
        return error


def check_outcome(raw: Any) -> None:
    result = outcome(raw)
    if isinstance(result, ProtocolError):
        assert result.code in ERROR_CODES
        assert result.id is None or isinstance(result.id, str | int)
        assert not isinstance(result.id, bool)
    else:
        assert isinstance(result, Subscribe | Unsubscribe | Presence | Ping | Refresh)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_protocol_errors(raw: bytes) -> None:
    check_outcome(raw)


@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_protocol_errors(raw: str) -> None:
    check_outcome(raw)


@given(json_values)
def test_arbitrary_json_raises_only_protocol_errors(value: Any) -> None:
    check_outcome(json.dumps(value))
    check_outcome(json.dumps(value, ensure_ascii=False))


@settings(max_examples=500)
@given(message_like)
def test_message_shaped_json_raises_only_protocol_errors(value: dict[str, Any]) -> None:
    raw = json.dumps(value).encode()
    check_outcome(raw)
    # Whatever else is wrong, a valid id is always echoed when a ProtocolError is raised.
    message_id = value.get("id")
    valid_id = isinstance(message_id, str) or (
        isinstance(message_id, int) and not isinstance(message_id, bool)
    )
    result = outcome(raw)
    if valid_id and isinstance(result, ProtocolError):
        assert result.id == message_id


@given(client_messages)
def test_encode_then_parse_round_trips(message: ClientMessage) -> None:
    raw = encode_client_message(message)
    assert parse_client_message(raw) == message
    # An independent encoder produces the same value.
    assert parse_client_message(json.dumps(json.loads(raw))) == message


@given(client_messages, st.dictionaries(st.text(max_size=8), json_values, max_size=3))
def test_unknown_keys_are_ignored(message: ClientMessage, extra: dict[str, Any]) -> None:
    fields = json.loads(encode_client_message(message))
    # Unknown keys only: an optional field the message leaves out (a ping's `id`) is known, and
    # an `id` that is an array is rightly refused.
    known = {field.encode_name for field in msgspec.structs.fields(type(message))} | {"type"}
    merged = {**{k: v for k, v in extra.items() if k not in known}, **fields}
    assert parse_client_message(json.dumps(merged)) == message


def test_connection_ids_are_bound_to_their_user() -> None:
    from liveboard.connection_ids import issued_to_another, new_connection_id

    alice = new_connection_id("alice")
    assert alice.startswith("c_")
    assert alice != new_connection_id("alice")
    assert re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", alice)  # what REST accepts
    assert not issued_to_another(alice, "alice")
    assert issued_to_another(alice, "bob")
    assert issued_to_another(alice, "alice ")
    weird = new_connection_id("\ud800é")  # any string a token's sub may hold
    assert not issued_to_another(weird, "\ud800é")
    # Strings of another form name no connection of this server: not judged.
    for label in ("tab-1", "conn-7", "c_legacyid12345678", "C_x.y"):
        assert not issued_to_another(label, "bob")
