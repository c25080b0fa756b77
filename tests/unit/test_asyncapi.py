"""The AsyncAPI document (liveboard.asyncapi) and the files generated from it.

- docs/asyncapi.json and clients/js/src/protocol.ts are what the generator writes today
  (regenerate with `make asyncapi`);
- the document is a valid AsyncAPI 3.0.0 document (the official JSON Schema, vendored) whose
  every ``$ref`` resolves;
- it names every message, event type, error code and close code of ``liveboard.protocol``,
  with the reconnect policy of ``close_action``;
- every message the protocol's encoders write validates against its schema (closed: no
  undeclared field), and the schemas refuse what the protocol refuses;
- the browser client (clients/js/src) takes its close-code policy from protocol.ts and handles
  every generated message and task event name.

Events as the server really sends them are checked in tests/integration/test_asyncapi_live.py,
the TypeScript declarations by tsc in tests/integration/test_protocol_typescript.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import msgspec
import pytest

from liveboard import protocol
from liveboard.asyncapi import WS_ALIAS, WS_PATH, build_document
from liveboard.protocol import (
    CLIENT_MESSAGE_TYPES,
    ERROR_CODES,
    EVENT_DATA,
    EVENT_TYPES,
    SERVER_MESSAGE_TYPES,
    BrokerEvent,
    CloseAction,
    CloseCode,
    Event,
    Position,
    Subscribe,
    close_action,
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
)
from tests.support.protocol_schema import MessageSchemas
from tools import protocol_docs
from tools.protocol_ts import typescript

ROOT = Path(__file__).resolve().parents[2]
VENDORED = ROOT / "tests" / "vendor" / "asyncapi-specs"
SCHEMA_SHA256 = "d4571a420e6ffb7fcc7066c95a6db1202f299a3c51daa103d0706bf30f95e626"
CLIENT_JS = ROOT / "clients" / "js" / "src"

DOCUMENT = build_document()
SCHEMAS = MessageSchemas(DOCUMENT)


def test_generated_files_are_current() -> None:
    stale = [str(path.relative_to(ROOT)) for path in protocol_docs.stale()]
    assert stale == [], (
        f"{stale} differ from what liveboard.protocol generates: run {protocol_docs.REGENERATE} "
        "and commit the result"
    )


def test_the_document_is_deterministic_and_json() -> None:
    assert build_document() == DOCUMENT
    assert json.loads(json.dumps(DOCUMENT)) == DOCUMENT


def test_the_document_is_a_valid_asyncapi_3_document() -> None:
    raw = (VENDORED / "3.0.0.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SCHEMA_SHA256, "see tests/vendor/asyncapi-specs"
    validator = jsonschema_rs.validator_for(json.loads(raw))
    assert [e.message for e in validator.iter_errors(DOCUMENT)] == []
    # The validator does look: an operation with an unknown action is refused.
    broken = json.loads(json.dumps(DOCUMENT))
    broken["operations"]["sendPing"]["action"] = "publish"
    assert not validator.is_valid(broken)


def _pointer(document: Any, ref: str) -> Any:
    """What ``ref`` names in ``document``, following references to references."""
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return _pointer(document, node["$ref"]) if "$ref" in node else node


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [ref for item in value.values() for ref in _refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []


def test_every_reference_resolves_inside_the_document() -> None:
    refs = _refs(DOCUMENT)
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), ref
        _pointer(DOCUMENT, ref)  # raises KeyError if it names nothing
    # Operations name messages of their own channel (AsyncAPI 3.0 requires it).
    for name, operation in DOCUMENT["operations"].items():
        channel = operation["channel"]["$ref"]
        for message in operation["messages"] + operation.get("reply", {}).get("messages", []):
            assert message["$ref"].startswith(channel + "/messages/"), (name, message)


def test_the_channels_are_the_websocket_endpoint_and_its_alias() -> None:
    addresses = {channel["address"] for channel in DOCUMENT["channels"].values()}
    assert addresses == {WS_PATH, WS_ALIAS} == {"/ws/connect", "/ws"}
    schemes = DOCUMENT["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert (schemes["queryToken"]["in"], schemes["queryToken"]["name"]) == ("query", "token")


def _messages_tagged(tag: str) -> set[str]:
    return {
        message["name"]
        for message in DOCUMENT["components"]["messages"].values()
        if tag in {t["name"] for t in message["tags"]}
    }


def test_every_message_of_the_protocol_is_in_the_document() -> None:
    assert _messages_tagged("client") == CLIENT_MESSAGE_TYPES
    assert _messages_tagged("server") == SERVER_MESSAGE_TYPES
    assert _messages_tagged("event") == EVENT_TYPES == set(EVENT_DATA)
    operations = DOCUMENT["operations"].values()
    sent = {ref["$ref"] for op in operations if op["action"] == "send" for ref in op["messages"]}
    received = {
        ref["$ref"]
        for op in operations
        for ref in (
            op["messages"] if op["action"] == "receive" else op.get("reply", {}).get("messages", [])
        )
    }
    names = {_pointer(DOCUMENT, ref)["name"] for ref in sent}
    assert names == CLIENT_MESSAGE_TYPES
    assert {_pointer(DOCUMENT, ref)["name"] for ref in received} == SERVER_MESSAGE_TYPES


def test_error_codes_and_close_codes_are_the_protocols() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    assert set(schemas["ErrorCode"]["enum"]) == ERROR_CODES
    channel = DOCUMENT["channels"]["ws"]
    assert [(c["code"], c["name"], c["action"]) for c in channel["x-close-codes"]] == [
        (int(code), code.name, close_action(code).value) for code in CloseCode
    ]
    assert all(c["description"] for c in channel["x-close-codes"])
    assert set(channel["x-close-actions"]) == {action.value for action in CloseAction}


TASK = protocol.Task(
    id="tsk_1",
    project_id="prj_1",
    title="Write",
    description="",
    status="todo",
    order=1.0,
    rank="a0",
    assignee_id=None,
    created_by_id="alice",
    version=1,
    created_at="2026-12-06T09:00:00.000Z",
    updated_at="2026-12-06T09:00:00.000Z",
)
PROJECT = protocol.Project(
    id="prj_1",
    workspace_id="wsp_1",
    name="Board",
    statuses=["todo", "done"],
    created_at="2026-12-06T09:00:00.000Z",
)
EVENT_PAYLOADS: dict[str, dict[str, Any]] = {
    "task:created": {"task": protocol.to_builtins(TASK), "afterId": None},
    "task:updated": {
        "task": protocol.to_builtins(TASK),
        "changes": {
            "title": {"from": "W", "to": "Write"},
            "assigneeId": {"from": None, "to": "bo"},
        },
    },
    "task:moved": {
        "taskId": "tsk_1",
        "fromStatus": "todo",
        "toStatus": "done",
        "order": 2,
        "rank": "a1",
        "afterId": "tsk_0",
    },
    "task:deleted": {"taskId": "tsk_1"},
    "project:created": {"project": protocol.to_builtins(PROJECT)},
    "member:added": {"userId": "bob", "role": "member"},
    "member:removed": {"userId": "bob"},
}


def _event(kind: str, data: dict[str, Any], **extra: Any) -> Event:
    # A server holds a BrokerEvent (it may carry workspace_offset); the wire form is the same.
    return BrokerEvent(
        type=kind,
        room="project:prj_1",
        offset=7,
        epoch="e1",
        ts=1,
        user_id="alice",
        data=data,
        **extra,
    )


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_encoded_events_validate_and_their_data_decodes_into_its_struct(kind: str) -> None:
    data = EVENT_PAYLOADS[kind]
    for extra in ({}, {"origin": "c_1", "workspace_offset": 3}):
        message = json.loads(encode_event(_event(kind, data, **extra)))
        SCHEMAS.check(message)
    decoded = msgspec.convert(data, EVENT_DATA[kind])
    assert msgspec.to_builtins(decoded) == data


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        ("task:moved", {"taskId": "t", "fromStatus": "todo", "toStatus": "done"}),  # no order
        ("task:moved", {"taskId": "t", "fromStatus": "a", "toStatus": "b", "order": 1, "rank": 2}),
        ("task:moved", {"taskId": "t", "fromStatus": "todo", "status": "done", "order": 1}),
        ("task:deleted", {"task": {}}),
        ("task:updated", {"task": {}, "changes": {}}),
        ("task:updated", {"changes": {"title": {"from": "a", "to": "b"}}}),
        ("task:updated", {"task": None, "changes": {"status": {"from": "a", "to": "b"}}}),
        ("member:added", {"userId": "bob", "role": "guest"}),
        ("member:removed", {}),
        ("project:created", {"project": {"id": "p"}}),
    ],
)
def test_the_event_schemas_refuse_a_wrong_payload(kind: str, data: dict[str, Any]) -> None:
    assert SCHEMAS.errors(json.loads(encode_event(_event(kind, data)))) != []


def test_every_encoded_server_message_validates() -> None:
    frames = [
        encode_connected("c_1", "alice"),
        encode_subscribed("project:p1", 3, "e1", id=1),
        encode_subscribed("project:p1", 3, "e1", id="s1", recovered=False),
        encode_unsubscribed("project:p1", id=2),
        encode_unsubscribed("workspace:w1", reason="forbidden"),
        encode_pong(None),
        encode_pong("p1"),
        encode_refreshed(1_800_000_000, 5),
        encode_presence_update("project:p1", [("alice", "Alice"), ("bob", "bob")], ["bob"], []),
        encode_resync("project:p1", "continuity_lost"),
        *(encode_error(code, "why", id=None) for code in sorted(ERROR_CODES)),
        encode_error("forbidden", "why", id=9),
    ]
    for frame in frames:
        SCHEMAS.check(json.loads(frame))
    assert SCHEMAS.errors({"type": "connected", "connectionId": "c_1"}) != []
    assert SCHEMAS.errors({"type": "error", "code": "not_found", "message": "m"}) != []
    assert SCHEMAS.errors({"type": "pong", "id": None}) != [], "a server never writes a null id"


def test_every_encoded_client_message_validates() -> None:
    messages: list[protocol.ClientMessage] = [
        Subscribe(room="project:p1"),
        Subscribe(room="project:p1", since=Position(offset=4, epoch="e1"), id=1),
        protocol.Unsubscribe(room="workspace:w1", id="u"),
        protocol.Presence(action="join", room="project:p1"),
        protocol.Presence(action="leave", room="project:p1"),
        protocol.Ping(),
        protocol.Refresh(token="jwt", id=3),
    ]
    for message in messages:
        SCHEMAS.check(json.loads(encode_client_message(message)))
    assert SCHEMAS.errors({"type": "presence", "action": "wave", "room": "project:p1"}) != []
    assert SCHEMAS.errors({"type": "subscribe", "since": {"offset": 1, "epoch": "e"}}) != []
    assert SCHEMAS.errors({"type": "subscribe", "room": "r", "since": {"offset": -1, "epoch": "e"}})


def test_the_typescript_generator_refuses_what_it_cannot_express() -> None:
    document = json.loads(json.dumps(DOCUMENT))
    document["components"]["schemas"]["Position"]["properties"]["offset"] = {"not": {}}
    with pytest.raises(ValueError, match="no TypeScript form"):
        typescript(document)


def _js_const(name: str, source: str) -> int:
    match = re.search(rf"const {name} = (\d+);", source)
    assert match, name
    return int(match.group(1))


def _js_cases(source: str, start: str, end: str) -> set[str]:
    body = source[source.index(start) : source.index(end, source.index(start))]
    return set(re.findall(r'case "([^"]+)":', body))


def test_the_browser_client_follows_the_generated_tables() -> None:
    """The browser client (clients/js/src, issue 19) takes its reconnect policy from the
    generated protocol.ts (so 1002, 1007 and 1010 are fatal there too, as the policy says), and
    handles every server message and task event by its generated name."""
    client = (CLIENT_JS / "client.ts").read_text(encoding="utf-8")
    board = (CLIENT_JS / "board.ts").read_text(encoding="utf-8")
    assert 'import { CLOSE_ACTIONS } from "./protocol.js";' in client
    assert re.search(r"const closeAction = .*CLOSE_ACTIONS\[code as CloseCode\]", client)
    assert not re.search(r"new Set\(\[\d", client), "a hand-written table of close codes"
    codes = {c["code"] for c in DOCUMENT["channels"]["ws"]["x-close-codes"]}
    # The client's own code for a dead link is one no server sends.
    assert _js_const("CLOSE_DEAD_LINK", client) not in codes
    # _onFrame handles every server message that is not an event, and only those.
    handled = _js_cases(client, "  private _onFrame(", "\n  }\n")
    assert handled == SERVER_MESSAGE_TYPES - EVENT_TYPES
    # Board._apply knows the task events, each by its generated name.
    applied = _js_cases(board, "  private _apply(event: RoomEvent): void {", "\n  }\n")
    assert applied == {kind for kind in EVENT_TYPES if kind.startswith("task:")}


def _reachable(names: set[str]) -> set[str]:
    schemas = DOCUMENT["components"]["schemas"]
    seen: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending += [ref.rsplit("/", 1)[1] for ref in _refs(schemas[name])]
    return seen


def test_client_and_server_messages_share_no_schema() -> None:
    """The server-sent schemas say "absent, never null" for fields the server omits at their
    default; a schema shared with a client message would wrongly say it of the client too."""
    payloads: dict[str, set[str]] = {"client": set(), "server": set()}
    for message in DOCUMENT["components"]["messages"].values():
        side = "client" if {"name": "client"} in message["tags"] else "server"
        payloads[side].add(message["payload"]["$ref"].rsplit("/", 1)[1])
    assert _reachable(payloads["client"]) & _reachable(payloads["server"]) == set()
