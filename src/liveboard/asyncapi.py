"""The AsyncAPI 3.0 document of the WebSocket API (CONTRACT §4), generated from the protocol.

Every message schema comes from ``liveboard.protocol``'s structs (``msgspec``'s JSON Schema of
them), so a change to a message is one edit there; ``build_document`` only arranges them into
AsyncAPI's channels, operations and messages and adds what the structs cannot say:

- each event type's envelope with its typed ``data`` (``EVENT_DATA``), without the servers'
  internal ``workspaceOffset``;
- ``error``'s ``code`` as the closed list ``ERROR_CODES`` (schema ``ErrorCode``);
- server messages' optional fields as absent rather than ``null`` (they are encoded with
  ``omit_defaults``: a server never writes ``null`` for them);
- the close codes with the reconnect policy (``close_action``) as the channel's
  ``x-close-codes``, and the two ways to pass the token.

It lives beside ``openapi.py`` rather than in the protocol package because it describes this
server's endpoint (its paths, its authentication, its version); the protocol package stays the
wire's types only. Operations are written from a client's point of view, as AsyncAPI's examples
of public WebSocket APIs are: ``send`` is client → server, ``receive`` server → client.

The document is deterministic (no clock, no host): ``GET /asyncapi.json`` serves it,
``docs/asyncapi.json`` is a copy checked in CI (``make asyncapi`` rewrites it), and the
TypeScript declarations of ``clients/js`` are generated from it (``tools/protocol_ts.py``).
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import textwrap
from typing import Any, Final

import msgspec

from liveboard import __version__
from liveboard.protocol import (
    ERROR_CODES,
    EVENT_DATA,
    INTERNAL_EVENT_FIELDS,
    CloseAction,
    CloseCode,
    Connected,
    ErrorReply,
    Event,
    Ping,
    Pong,
    Presence,
    PresenceUpdate,
    Refresh,
    Refreshed,
    ResyncNotice,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    close_action,
)

__all__ = ["ASYNCAPI_VERSION", "WS_ALIAS", "WS_PATH", "build_document", "document_json"]

ASYNCAPI_VERSION: Final = "3.0.0"
WS_PATH: Final = "/ws/connect"
WS_ALIAS: Final = "/ws"

_SCHEMAS: Final = "#/components/schemas/{name}"
_CHANNEL: Final = "ws"
_ALIAS_CHANNEL: Final = "wsAlias"

_CLIENT_MESSAGES: Final[tuple[type[msgspec.Struct], ...]] = (
    Subscribe,
    Unsubscribe,
    Presence,
    Ping,
    Refresh,
)
_SERVER_MESSAGES: Final[tuple[type[msgspec.Struct], ...]] = (
    Connected,
    Subscribed,
    Unsubscribed,
    Pong,
    Refreshed,
    ErrorReply,
    PresenceUpdate,
    ResyncNotice,
)

#: Client operations (``send``): message, its direct replies, and what the operation does.
_SENDS: Final[tuple[tuple[type[msgspec.Struct], tuple[type[msgspec.Struct], ...], str], ...]] = (
    (
        Subscribe,
        (Subscribed, ErrorReply),
        "Join a room; with `since`, also receive every event after that position, in order, "
        "before live events. Errors: `invalid_room`, `forbidden`, `too_many_subscriptions`.",
    ),
    (Unsubscribe, (Unsubscribed, ErrorReply), "Leave a room. Error: `not_subscribed`."),
    (
        Presence,
        (),
        "Join or leave the room's presence (needs a subscription). No direct reply: the room's "
        "subscribers get `presence:update` when its set of users changes (a joiner always gets "
        "one with the full list); `error` `not_subscribed` otherwise.",
    ),
    (Ping, (Pong,), "An application-level ping."),
    (
        Refresh,
        (Refreshed, ErrorReply),
        "Replace the connection's token before it expires; the token's `sub` must be the "
        "connection's user. Error: `unauthorized`.",
    ),
)


@functools.cache
def document_json() -> bytes:
    """``build_document()`` as compact JSON, built once per process: the document cannot change
    while the process runs, and building it takes ~4 ms (``GET /asyncapi.json`` is public)."""
    return msgspec.json.encode(build_document())


def build_document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of ``/ws/connect``; equal input gives an equal document."""
    event_names = {kind: _event_name(data) for kind, data in EVENT_DATA.items()}
    models: list[Any] = [*_CLIENT_MESSAGES, *_SERVER_MESSAGES, Event, *EVENT_DATA.values()]
    _, schemas = msgspec.json.schema_components(models, ref_template=_SCHEMAS)
    _clean_descriptions(schemas)
    for name in _sent_by_server(schemas):
        _absent_not_null(schemas[name])
    event = schemas.pop("Event")
    for kind, data in EVENT_DATA.items():
        schemas[event_names[kind]] = _event_envelope(event, kind, data.__name__)
    schemas["ErrorCode"] = {
        "title": "ErrorCode",
        "description": "The codes an `error` may carry: a closed list.",
        "enum": sorted(ERROR_CODES),
    }
    schemas["ErrorReply"]["properties"]["code"] = {"$ref": _SCHEMAS.format(name="ErrorCode")}

    messages: dict[str, Any] = {}
    for struct in _CLIENT_MESSAGES:
        messages[struct.__name__] = _message(_tag(struct), struct.__name__, schemas, "client")
    for struct in _SERVER_MESSAGES:
        messages[struct.__name__] = _message(_tag(struct), struct.__name__, schemas, "server")
    for kind in EVENT_DATA:
        messages[event_names[kind]] = _message(kind, event_names[kind], schemas, "event")
    channel_messages = {name: {"$ref": f"#/components/messages/{name}"} for name in messages}
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "liveboard WebSocket API",
            "version": __version__,
            "description": _INFO,
            "license": {"name": "MIT"},
            "tags": [
                {"name": "client", "description": "Sent by a client."},
                {"name": "server", "description": "Sent by the server."},
                {"name": "event", "description": "A committed change of a room (server → client)."},
            ],
        },
        "defaultContentType": "application/json",
        "servers": {
            "liveboard": {
                "host": "{host}",
                "protocol": "ws",
                "description": "A liveboard server (`liveboard serve`); `wss` behind TLS.",
                "variables": {
                    "host": {
                        "default": "127.0.0.1:8000",
                        "description": "Where the server listens.",
                    }
                },
                "security": [
                    {"$ref": "#/components/securitySchemes/bearer"},
                    {"$ref": "#/components/securitySchemes/queryToken"},
                ],
            }
        },
        "channels": {
            _CHANNEL: {
                "address": WS_PATH,
                "title": "The WebSocket connection",
                "description": _CHANNEL_DOC + "\n\n" + _close_code_table(),
                "messages": channel_messages,
                "bindings": {"ws": _WS_BINDING},
                "x-close-codes": _close_codes(),
                "x-close-actions": _attribute_docs(CloseAction, by_value=True),
            },
            _ALIAS_CHANNEL: {
                "address": WS_ALIAS,
                "title": f"Alias of {WS_PATH}",
                "description": f"The same endpoint as `{WS_PATH}`: same messages, same rules.",
                "messages": channel_messages,
                "bindings": {"ws": _WS_BINDING},
            },
        },
        "operations": _operations(event_names),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "messages": messages,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "`Authorization: Bearer <jwt>` on the upgrade request.",
                },
                "queryToken": {
                    "type": "httpApiKey",
                    "name": "token",
                    "in": "query",
                    "description": "`?token=<jwt>`, for browsers (they cannot set headers on "
                    "a WebSocket). liveboard never writes query strings to its logs.",
                },
            },
        },
    }


_INFO: Final = (
    "liveboard's real-time protocol (CONTRACT §4): JSON text frames, one object each, with a "
    "`type`. A client message may carry `id` (string or integer); its direct reply "
    "(`subscribed`, `unsubscribed`, `pong`, `refreshed`, `error`) echoes it. Operations are "
    "written from a client's point of view: `send` is client → server, `receive` server → "
    "client. Unknown fields are ignored on both sides, and a client ignores message types it "
    "does not know, so a later version may add either. The REST API is described by the "
    "server's `/openapi.json`. Generated from `liveboard.protocol`."
)

_CHANNEL_DOC: Final = (
    "Open with `GET` and a JWT (`Authorization: Bearer` or `?token=`). Refused before the "
    "upgrade: 401 (no or bad token), 403 (`Origin` not allowed), 429 (too many connections of "
    "this user), 503 (shutting down), with the REST error body. On open the server sends "
    "`connected`. Rooms are `project:{id}` and `workspace:{id}`; subscribing needs membership "
    "of the workspace. Heartbeat: the server sends WebSocket pings and drops a peer that "
    "answers nothing within `LIVEBOARD_HEARTBEAT_TIMEOUT`."
)

_WS_BINDING: Final = {
    "method": "GET",
    "query": {
        "type": "object",
        "properties": {
            "token": {"type": "string", "description": "The JWT, when no header can be set."}
        },
    },
    "headers": {
        "type": "object",
        "properties": {
            "Authorization": {"type": "string", "pattern": "^Bearer .+$"},
            "Origin": {
                "type": "string",
                "description": "Checked against `LIVEBOARD_ALLOWED_ORIGINS` when present.",
            },
        },
    },
    "bindingVersion": "0.1.0",
}


def _operations(event_names: dict[str, str]) -> dict[str, Any]:
    channel = {"$ref": f"#/channels/{_CHANNEL}"}

    def refs(*names: str) -> list[dict[str, str]]:
        return [{"$ref": f"#/channels/{_CHANNEL}/messages/{name}"} for name in names]

    operations: dict[str, Any] = {}
    for struct, replies, doc in _SENDS:
        operation: dict[str, Any] = {
            "action": "send",
            "channel": channel,
            "summary": f"`{_tag(struct)}`",
            "description": doc,
            "messages": refs(struct.__name__),
        }
        if replies:
            operation["reply"] = {
                "channel": channel,
                "messages": refs(*(r.__name__ for r in replies)),
            }
        operations[f"send{struct.__name__}"] = operation
    receives: tuple[tuple[str, str, tuple[str, ...]], ...] = (
        ("receiveConnected", "The first message of every connection.", ("Connected",)),
        (
            "receiveEvent",
            "A committed change of a subscribed room, in the room's offset order with no gap "
            "and no duplicate unless `resync` says otherwise. `data` depends on `type`.",
            tuple(event_names.values()),
        ),
        ("receivePresenceUpdate", "A room's present users changed.", ("PresenceUpdate",)),
        (
            "receiveSubscriptionEnd",
            "The server ended a subscription: `unsubscribed` with a `reason` (`forbidden` when "
            "membership is revoked), or `resync` (continuity lost: refetch the snapshot and "
            "subscribe again with its offset).",
            ("Unsubscribed", "ResyncNotice"),
        ),
        (
            "receiveError",
            "A message the server did not act on; the connection stays open.",
            ("ErrorReply",),
        ),
    )
    for name, doc, messages in receives:
        operations[name] = {
            "action": "receive",
            "channel": channel,
            "description": doc,
            "messages": refs(*messages),
        }
    return operations


def _message(kind: str, schema_name: str, schemas: dict[str, Any], tag: str) -> dict[str, Any]:
    """The message object of wire type ``kind`` whose payload is ``schema_name``; ``tag`` is
    who sends it (``client`` or ``server``, plus ``event`` for events)."""
    description = schemas[schema_name].get("description", "")
    tags = [{"name": tag}] if tag == "client" else [{"name": "server"}]
    if tag == "event":
        tags.append({"name": "event"})
    message: dict[str, Any] = {
        "name": kind,
        "title": f"`{kind}`",
        "payload": {"$ref": _SCHEMAS.format(name=schema_name)},
        "tags": tags,
    }
    if description:
        message["summary"] = description.split("\n\n", 1)[0].replace("\n", " ")
    return message


_EVENT_DOC: Final = (
    "one committed change, as its room's subscribers receive it; `offset` is the room's "
    "previous offset + 1 in log lineage `epoch`."
)


def _event_envelope(event: dict[str, Any], kind: str, data_name: str) -> dict[str, Any]:
    """``Event``'s schema for events of type ``kind``: ``type`` fixed, ``data`` typed."""
    properties = {k: v for k, v in event["properties"].items() if k not in INTERNAL_EVENT_FIELDS}
    properties["type"] = {"enum": [kind]}
    properties["data"] = {"$ref": _SCHEMAS.format(name=data_name)}
    properties["ts"] = {**properties["ts"], "description": "Commit time, unix milliseconds."}
    properties["userId"] = {
        **properties["userId"],
        "description": "Who made the change; null when a service published the event "
        "(an API key or `liveboard_emit`).",
    }
    properties["origin"] = {
        **properties["origin"],
        "description": "The connection whose REST call made the change (`X-Connection-Id`).",
    }
    return {
        "title": _event_name_of(data_name),
        "description": f"`{kind}`: {_EVENT_DOC}",
        "type": "object",
        "properties": properties,
        "required": [k for k in event["required"] if k in properties],
    }


def _event_name(data: type[msgspec.Struct]) -> str:
    return _event_name_of(data.__name__)


def _event_name_of(data_name: str) -> str:
    return data_name.removesuffix("Data") + "Event"


def _tag(struct: type[msgspec.Struct]) -> str:
    return str(struct.__struct_config__.tag)


def _sent_by_server(schemas: dict[str, Any]) -> list[str]:
    """The components reachable from server messages and events: what the server encodes
    (no client message shares one with them, so their fields can say what the server does)."""
    roots = [
        *(s.__name__ for s in _SERVER_MESSAGES),
        "Event",
        *(d.__name__ for d in EVENT_DATA.values()),
    ]
    seen: list[str] = []
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.append(name)
        pending += re.findall(
            r'"#/components/schemas/(\w+)"', msgspec.json.encode(schemas[name]).decode()
        )
    return sorted(seen)


def _absent_not_null(schema: dict[str, Any]) -> None:
    """A server omits a field at its default (``omit_defaults``): absent, never ``null``."""
    for prop in schema.get("properties", {}).values():
        if "default" not in prop:
            continue
        if prop["default"] is None and "anyOf" in prop:
            kept = [branch for branch in prop["anyOf"] if branch != {"type": "null"}]
            del prop["anyOf"]
            if len(kept) == 1:
                prop.update(kept[0])
            else:
                prop["anyOf"] = kept
        del prop["default"]


def _clean_descriptions(schemas: dict[str, Any]) -> None:
    """Docstrings as Markdown: dedented, and reST's double backquotes as single ones."""
    for schema in schemas.values():
        if "description" in schema:
            schema["description"] = _markdown(schema["description"])


def _markdown(docstring: str) -> str:
    return inspect.cleandoc(docstring).replace("``", "`")


def _close_codes() -> list[dict[str, Any]]:
    """Every ``CloseCode`` with its name, the client's reaction, and what it means."""
    docs = _attribute_docs(CloseCode)
    return [
        {
            "code": int(code),
            "name": code.name,
            "action": close_action(code).value,
            "description": docs.get(code.name) or _rfc_name(code),
        }
        for code in CloseCode
    ]


def _close_code_table() -> str:
    rows = "\n".join(
        f"| {c['code']} | `{c['name']}` | `{c['action']}` | {c['description']} |"
        for c in _close_codes()
    )
    actions = _attribute_docs(CloseAction, by_value=True)
    legend = "\n".join(f"- `{value}`: {doc}" for value, doc in actions.items())
    return (
        "Close codes and what a client does after each (`x-close-codes`; a dropped link "
        "without a close frame is `reconnect`):\n\n"
        "| code | name | client action | meaning |\n| --- | --- | --- | --- |\n"
        f"{rows}\n\n{legend}"
    )


def _rfc_name(code: CloseCode) -> str:
    return f"RFC 6455: {code.name.replace('_', ' ').lower()}."


def _attribute_docs(cls: type, *, by_value: bool = False) -> dict[str, str]:
    """The docstrings written under an enum's members (as Sphinx reads them), by member name
    (or by value), as Markdown; members without one are left out."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    for node, following in zip(body.body, body.body[1:], strict=False):
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
            continue
        if not (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)):
            continue
        name = node.targets[0].id
        key = str(getattr(cls, name).value) if by_value else name
        docs[key] = _markdown(str(following.value.value)).replace("\n", " ")
    return docs
