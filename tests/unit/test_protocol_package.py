"""liveboard.protocol as a package: the close policy, positions, room names, and every server
message surviving encode → decode. (What it may import: tests/unit/test_house_rules.py.)"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveboard import protocol
from liveboard.protocol import (
    MAX_OFFSET,
    SERVER_MESSAGE_TYPES,
    BrokerEvent,
    CloseAction,
    CloseCode,
    Connected,
    ErrorReply,
    Event,
    Pong,
    Position,
    PresenceUpdate,
    PresenceUser,
    ProtocolError,
    Refreshed,
    ResyncNotice,
    RoomKind,
    RoomName,
    ServerMessage,
    Subscribe,
    Subscribed,
    Unsubscribed,
    close_action,
    decode_broker_event,
    decode_event,
    decode_server_message,
    encode_broker_event,
    encode_client_message,
    encode_connected,
    encode_error,
    encode_event,
    encode_pong,
    encode_presence_update,
    encode_refreshed,
    encode_resync,
    encode_subscribed,
    encode_unsubscribed,
    parse_client_message,
    parse_room,
    project_room,
    workspace_room,
)

# ------------------------------------------------------------------------- close codes, policy


def test_close_codes_are_the_contracts() -> None:
    contract = {1000, 1002, 1003, 1008, 1009, 1011, 1012, 4001, 4008}
    assert contract <= {int(code) for code in CloseCode}
    assert int(CloseCode.TOKEN_EXPIRED) == 4001
    assert int(CloseCode.SLOW_CONSUMER) == 4008
    assert int(CloseCode.RESTARTING) == 1012
    assert f"{CloseCode.POLICY_VIOLATION}" == "1008"  # formats as the number, e.g. in logs


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (None, CloseAction.RECONNECT),
        (1000, CloseAction.RECONNECT),
        (1001, CloseAction.RECONNECT),
        (1002, CloseAction.FATAL),
        (1003, CloseAction.FATAL),
        (1006, CloseAction.RECONNECT),
        (1007, CloseAction.FATAL),
        (1008, CloseAction.FATAL),
        (1009, CloseAction.FATAL),
        (1010, CloseAction.FATAL),
        (1011, CloseAction.RECONNECT),
        (1012, CloseAction.RECONNECT_LATER),
        (1013, CloseAction.RECONNECT_LATER),
        (4001, CloseAction.NEW_TOKEN),
        (4008, CloseAction.RECONNECT),
        (4999, CloseAction.RECONNECT),
        (3000, CloseAction.RECONNECT),
    ],
)
def test_close_policy_table(code: int | None, action: CloseAction) -> None:
    assert close_action(code) is action
    if code is not None and code in set(CloseCode):
        assert close_action(CloseCode(code)) is action


# ------------------------------------------------------------------------------------- position


def test_position_round_trips_and_compares_by_value() -> None:
    position = Position(offset=41, epoch="a1b2")
    assert Position(41, "a1b2") == position
    assert hash(Position(41, "a1b2")) == hash(position)
    raw = msgspec.json.encode(position)
    assert msgspec.json.decode(raw) == {"offset": 41, "epoch": "a1b2"}
    assert msgspec.json.decode(raw, type=Position) == position


@pytest.mark.parametrize("offset", [-1, MAX_OFFSET + 1, True, 1.0])
def test_position_decoding_refuses_offsets_outside_the_contract(offset: object) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode({"offset": offset, "epoch": "e"}), type=Position)


# ---------------------------------------------------------------------------------- room names

room_ids = st.text(alphabet="abcXYZ019_-", min_size=1, max_size=128)


@given(st.sampled_from(["project", "workspace"]), room_ids)
def test_room_names_parse_and_format_both_ways(kind: RoomKind, rid: str) -> None:
    name = project_room(rid) if kind == "project" else workspace_room(rid)
    parsed = parse_room(name)
    assert parsed == RoomName(kind, rid)
    assert (parsed.kind, parsed.id) == (kind, rid)
    assert str(parsed) == name
    assert RoomName.of(name) == parsed
    assert parsed.is_workspace is (kind == "workspace")
    assert parse_room(str(parsed)) == parsed


@pytest.mark.parametrize(
    "name", ["", "project:", "room:1", "Project:p1", "project:p 1", "project:" + "x" * 129]
)
def test_parse_room_refuses_what_is_not_a_room(name: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_room(name)
    assert info.value.code == "invalid_room"


def test_room_name_of_refuses_a_name_without_a_kind() -> None:
    with pytest.raises(ValueError, match="not a room name"):
        RoomName.of("lobby:1")


# ------------------------------------------------------------- server messages: encode → decode

EVENT = Event(
    type="task:moved",
    room="project:p1",
    offset=7,
    epoch="e1",
    ts=1_764_120_000_000,
    user_id="alice",
    data={"taskId": "t1", "fromStatus": "todo", "toStatus": "done", "order": 1.5},
    origin="c_x.y",
)

ROUND_TRIPS: list[tuple[bytes, ServerMessage]] = [
    (encode_connected("c_abc.def", "alice"), Connected(connection_id="c_abc.def", user_id="alice")),
    (
        encode_subscribed("project:p1", 41, "e1", id=7, recovered=False),
        Subscribed(room="project:p1", offset=41, epoch="e1", recovered=False, id=7),
    ),
    (
        encode_subscribed("workspace:w1", 0, "e2", id=None),
        Subscribed(room="workspace:w1", offset=0, epoch="e2"),
    ),
    (encode_unsubscribed("project:p1", id="u1"), Unsubscribed(room="project:p1", id="u1")),
    (
        encode_unsubscribed("project:p1", reason="forbidden"),
        Unsubscribed(room="project:p1", reason="forbidden"),
    ),
    (encode_pong(None), Pong()),
    (encode_pong("p-1"), Pong(id="p-1")),
    (encode_refreshed(1_764_120_600, 3), Refreshed(expires_at=1_764_120_600, id=3)),
    (
        encode_error("forbidden", "no", "s-1"),
        ErrorReply(code="forbidden", message="no", id="s-1"),
    ),
    (
        encode_error("rate_limited", "slow down"),
        ErrorReply(code="rate_limited", message="slow down"),
    ),
    (
        encode_presence_update("project:p1", [("alice", "Alice"), ("bob", "bob")], ["bob"], []),
        PresenceUpdate(
            room="project:p1",
            users=[PresenceUser("alice", "Alice"), PresenceUser("bob", "bob")],
            joined=["bob"],
            left=[],
        ),
    ),
    (
        encode_resync("project:p1", "continuity_lost"),
        ResyncNotice(room="project:p1", reason="continuity_lost"),
    ),
    (encode_event(EVENT), EVENT),
]


@pytest.mark.parametrize(("raw", "message"), ROUND_TRIPS, ids=lambda v: type(v).__name__)
def test_every_server_message_decodes_to_what_was_encoded(
    raw: bytes, message: ServerMessage
) -> None:
    assert decode_server_message(raw) == message
    assert msgspec.json.encode(message) == raw  # the struct is the wire form, byte for byte


def test_the_round_trips_cover_every_server_message_type() -> None:
    kinds = {msgspec.json.decode(raw)["type"] for raw, _ in ROUND_TRIPS}
    assert kinds | protocol.EVENT_TYPES == SERVER_MESSAGE_TYPES


def test_unknown_server_message_types_decode_to_none() -> None:
    assert decode_server_message(b'{"type": "hello:later", "x": 1}') is None


def test_the_broker_envelope_keeps_workspace_offset_and_the_client_wire_does_not() -> None:
    fields = {f: getattr(EVENT, f) for f in EVENT.__struct_fields__}
    dependent = BrokerEvent(**fields, workspace_offset=12)
    assert encode_event(dependent) == encode_event(EVENT)  # the client's wire: no workspaceOffset
    assert decode_broker_event(encode_broker_event(dependent)) == dependent
    assert decode_broker_event(encode_event(dependent)) == BrokerEvent(**fields)  # 0: none
    # A client reads the broker form too, skipping what is not its.
    assert decode_event(encode_broker_event(dependent)) == EVENT
    assert decode_server_message(encode_broker_event(dependent)) == EVENT
    assert (
        set(msgspec.json.decode(encode_broker_event(dependent)))
        - set(msgspec.json.decode(encode_event(dependent)))
        == protocol.INTERNAL_EVENT_FIELDS
    )
    assert not protocol.INTERNAL_EVENT_FIELDS & set(msgspec.json.decode(encode_event(EVENT)))
    assert {f.encode_name for f in msgspec.structs.fields(BrokerEvent)} - {
        f.encode_name for f in msgspec.structs.fields(Event)
    } == protocol.INTERNAL_EVENT_FIELDS


def test_client_messages_round_trip_through_the_parser() -> None:
    message = Subscribe(room="workspace:w1", since=Position(3, "e"), id="s")
    assert parse_client_message(encode_client_message(message)) == message
