"""The broker message layout (``protocol.events``): what ``encode_broker_event`` writes, what
``decode_wire_event`` parses and carries to the sockets as bytes, and that no layout lets
``workspaceOffset`` reach a client."""

from __future__ import annotations

import json

import msgspec
import pytest

from liveboard.protocol import (
    BrokerEvent,
    WireEvent,
    client_json,
    decode_broker_event,
    decode_event,
    decode_wire_event,
    encode_broker_event,
    encode_event,
)


def event(workspace_offset: int = 0, **changes: object) -> BrokerEvent:
    base = BrokerEvent(
        type="task:updated",
        room="project:p1",
        offset=7,
        epoch="ep",
        ts=1764120000000,
        user_id="alice",
        data={"task": {"id": "t1", "title": 'Ship \u00e9t\u00e9 "quoted" ,}'}, "n": [1, {}]},
        origin="c-1",
        workspace_offset=workspace_offset,
    )
    return msgspec.structs.replace(base, **changes) if changes else base


def test_the_layout_is_the_client_json_with_the_offset_as_the_last_member() -> None:
    plain, dependent = event(), event(workspace_offset=12)
    assert encode_broker_event(plain) == encode_event(plain)
    assert encode_broker_event(dependent) == encode_event(dependent)[:-1] + (
        b',"workspaceOffset":12}'
    )


@pytest.mark.parametrize("workspace_offset", [0, 12])
def test_a_broker_message_becomes_a_wire_event_carrying_the_client_json(
    workspace_offset: int,
) -> None:
    sent = event(workspace_offset)
    received = decode_wire_event(encode_broker_event(sent))
    assert isinstance(received, WireEvent)
    assert (received.type, received.room, received.offset, received.epoch, received.ts) == (
        "task:updated",
        "project:p1",
        7,
        "ep",
        1764120000000,
    )
    assert received.workspace_offset == workspace_offset
    assert received.wire == encode_event(sent)  # the very bytes the server would have encoded
    assert client_json(received) == encode_event(sent)
    assert b"workspaceOffset" not in received.wire
    assert received.full() == sent


def test_without_a_trailer_the_message_is_forwarded_as_it_came() -> None:
    payload = encode_broker_event(event())
    received = decode_wire_event(payload)
    assert isinstance(received, WireEvent)
    assert received.wire is payload  # not copied


def test_a_nested_workspace_offset_key_is_client_data() -> None:
    custom = event(data={"workspaceOffset": 3})
    received = decode_wire_event(encode_broker_event(custom))
    assert isinstance(received, WireEvent)
    assert received.workspace_offset == 0
    assert decode_event(received.wire).data == {"workspaceOffset": 3}


@pytest.mark.parametrize(
    "payload",
    [
        # The member first (another encoder's order): no trailer to cut.
        b'{"workspaceOffset":12,"type":"task:deleted","room":"project:p1","offset":7,'
        b'"epoch":"ep","ts":1,"userId":null,"data":{"taskId":"t"}}',
        # Twice: cutting the trailer would leave the first one.
        b'{"type":"task:deleted","room":"project:p1","offset":7,"epoch":"ep","ts":1,'
        b'"userId":null,"workspaceOffset":5,"data":{"taskId":"t"},"workspaceOffset":12}',
        # Trailer and a nested key: the nested one is data, decoded whole to be sure.
        b'{"type":"task:deleted","room":"project:p1","offset":7,"epoch":"ep","ts":1,'
        b'"userId":null,"data":{"workspaceOffset":1},"workspaceOffset":12}',
        # Whitespace: not the layout.
        b'{"type":"task:deleted","room":"project:p1","offset":7,"epoch":"ep","ts":1,'
        b'"userId":null,"data":{"taskId":"t"}, "workspaceOffset": 12}',
    ],
)
def test_another_layout_is_decoded_whole_and_never_leaks_the_field(payload: bytes) -> None:
    received = decode_wire_event(payload)
    assert isinstance(received, BrokerEvent)
    assert received.workspace_offset == 12
    assert received.offset == 7
    client = json.loads(client_json(received))
    assert "workspaceOffset" not in client
    assert client == json.loads(encode_event(decode_broker_event(payload)))


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"type":"task:deleted","room":"project:p1","offset":7,"epoch":"ep","ts":1}',  # no data
        b'{"type":"task:deleted","room":"project:p1","offset":"7","epoch":"ep","ts":1,'
        b'"userId":null,"data":{}}',
        b'{"type":"task:deleted","room":"project:p1","offset":7,"epoch":"ep","ts":1,'
        b'"userId":3,"data":{}}',
        b'{"type":"task:deleted","room":"project:p1","offset":7,"epoch":"ep","ts":1,'
        b'"userId":null,"data":{"x":}}',
    ],
)
def test_a_malformed_message_is_refused_as_a_whole_decode_would(payload: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_broker_event(payload)
    with pytest.raises(msgspec.DecodeError):
        decode_wire_event(payload)


def test_an_older_instance_still_reads_the_message() -> None:
    # What versions before the WireEvent did with a message: decode it whole.
    sent = event(workspace_offset=12)
    assert decode_broker_event(encode_broker_event(sent)) == sent
    assert decode_event(encode_broker_event(sent)) == decode_event(encode_event(sent))


def test_client_json_of_a_whole_event_leaves_the_offset_out() -> None:
    assert b"workspaceOffset" not in client_json(event(workspace_offset=12))
