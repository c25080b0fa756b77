"""TypeScript declarations of the WebSocket protocol, generated from the AsyncAPI document.

``typescript(document)`` turns ``liveboard.asyncapi.build_document()`` into one TypeScript
module (``clients/js/src/protocol.ts``): an interface per schema, the unions of client and
server messages, ``EventMap``/``EventDataMap`` from each event type to its message and its
``data`` (so ``on("task:moved", (e) => e.data.toStatus)`` is typed), ``ErrorCode`` as a union,
and ``CloseCode`` and ``CLOSE_ACTIONS`` as ``as const`` objects, the only values it holds.

Why a small generator here rather than json-schema-to-typescript: the schemas come from
msgspec and use a small subset of JSON Schema (objects, arrays, ``anyOf``, ``enum``, ``$ref``,
the primitive types), every one of which maps to one TypeScript form; the maps from event type
to payload and the close-code table are not JSON Schema at all and would need a second pass
anyway; and json-schema-to-typescript 16 brings eight dependencies (prettier, lodash, a
``$ref`` parser, …) to do the first part. A construct outside the subset raises ``ValueError``,
so the generator fails loudly instead of writing ``any``. ``tsc --strict`` checks the output
(tests/integration/test_protocol_typescript.py).
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any, Final

__all__ = ["typescript"]

_IDENTIFIER: Final = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
#: Comment lines are wrapped to this many characters (before the indent and `` * ``).
_WIDTH: Final = 92
_PRIMITIVES: Final = {
    "string": "string",
    "integer": "number",
    "number": "number",
    "boolean": "boolean",
    "null": "null",
}


def typescript(document: dict[str, Any]) -> str:
    """The TypeScript module declaring ``document``'s messages; deterministic."""
    components = document["components"]
    schemas: dict[str, Any] = components["schemas"]
    messages: dict[str, Any] = components["messages"]
    channel = next(iter(document["channels"].values()))
    out = [
        "// Generated from liveboard.protocol by `make asyncapi` (tools/protocol_ts.py), from the",
        "// AsyncAPI document docs/asyncapi.json: do not edit. The types of liveboard's WebSocket",
        f"// protocol, version {document['info']['version']} (CONTRACT §4, docs/protocol.md).",
        "",
    ]
    for name, schema in schemas.items():
        out += _declaration(name, schema)
    by_tag = _messages_by_tag(messages)
    out += _union("ClientMessage", "Every message a client sends.", by_tag["client"])
    out += _union("ServerMessage", "Every message a server sends.", by_tag["server"])
    out += [
        'export type ClientMessageType = ClientMessage["type"];',
        'export type ServerMessageType = ServerMessage["type"];',
        "",
    ]
    out += _map("ServerMessageMap", "Each server message by its `type`.", by_tag["server"])
    out += _map("EventMap", "Each event by its `type`.", by_tag["event"])
    out += _comment("Each event type's `data`: `EventDataMap[\"task:moved\"]` is a move's.")
    out.append('export type EventDataMap = { [K in EventType]: EventMap[K]["data"] };')
    out += [
        "export type EventType = keyof EventMap;",
        "/** Every event a subscriber may receive. */",
        "export type LiveboardEvent = EventMap[EventType];",
        "/** The event types, in the contract's order. */",
        "export const EVENT_TYPES = "
        + _json([wire for wire, _ in by_tag["event"]])
        + " as const satisfies readonly EventType[];",
        "",
    ]
    out += _close_codes(channel["x-close-codes"], channel["x-close-actions"])
    return "\n".join(out).rstrip("\n") + "\n"


def _messages_by_tag(messages: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """``(wire type, payload schema name)`` of each message, by tag, in document order."""
    found: dict[str, list[tuple[str, str]]] = {"client": [], "server": [], "event": []}
    for message in messages.values():
        payload = _ref_name(message["payload"]["$ref"])
        for tag in message["tags"]:
            found[tag["name"]].append((message["name"], payload))
    return found


def _declaration(name: str, schema: dict[str, Any]) -> list[str]:
    lines = _comment(schema.get("description"))
    if schema.get("type") == "object" and "properties" in schema:
        return [*lines, f"export interface {name} " + _object(schema, 0), ""]
    return [*lines, f"export type {name} = {_type(schema, 0)};", ""]


def _object(schema: dict[str, Any], depth: int) -> str:
    indent = "  " * (depth + 1)
    required = set(schema.get("required", ()))
    lines = ["{"]
    for prop, value in schema["properties"].items():
        lines += [indent + line for line in _comment(value.get("description"))]
        key = prop if _IDENTIFIER.fullmatch(prop) else json.dumps(prop)
        optional = "" if prop in required else "?"
        lines.append(f"{indent}{key}{optional}: {_type(value, depth + 1)};")
    lines.append("  " * depth + "}")
    return "\n".join(lines)


def _type(schema: dict[str, Any], depth: int) -> str:
    if "$ref" in schema:
        return _ref_name(schema["$ref"])
    if "enum" in schema:
        return " | ".join(_json(value) for value in schema["enum"])
    if "anyOf" in schema:
        return " | ".join(_type(branch, depth) for branch in schema["anyOf"])
    kind = schema.get("type")
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    if kind == "array":
        item = _type(schema["items"], depth)
        return f"({item})[]" if " | " in item else f"{item}[]"
    if kind == "object":
        if "properties" in schema:
            return _object(schema, depth)
        return "Record<string, unknown>"
    raise ValueError(f"no TypeScript form for the schema {schema!r}")


def _union(name: str, doc: str, members: list[tuple[str, str]]) -> list[str]:
    body = " | ".join(payload for _, payload in members)
    return [*_comment(doc), f"export type {name} = {body};", ""]


def _map(name: str, doc: str, members: list[tuple[str, str]]) -> list[str]:
    lines = [*_comment(doc), f"export interface {name} {{"]
    lines += [f"  {_json(wire)}: {payload};" for wire, payload in members]
    return [*lines, "}", ""]


def _close_codes(codes: list[dict[str, Any]], actions: dict[str, str]) -> list[str]:
    lines = [
        *_comment("The close codes a client may see (RFC 6455's and liveboard's)."),
        "export const CloseCode = {",
    ]
    for code in codes:
        lines += ["  " + line for line in _comment(code["description"])]
        lines.append(f"  {code['name']}: {code['code']},")
    lines += [
        "} as const;",
        "export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];",
        "",
    ]
    legend = "\n".join(f"- `{value}`: {doc}" for value, doc in actions.items())
    lines += _comment("What a client does after a close:\n" + legend)
    lines.append("export type CloseAction = " + " | ".join(map(_json, actions)) + ";")
    lines += [
        "",
        *_comment(
            "The reconnect policy: the action for each close code (a code not listed, or a "
            "link dropped without a close frame, is `reconnect`)."
        ),
        "export const CLOSE_ACTIONS: { readonly [C in CloseCode]: CloseAction } = {",
    ]
    lines += [f"  {code['code']}: {_json(code['action'])}," for code in codes]
    return [*lines, "};", ""]


def _comment(text: str | None) -> list[str]:
    if not text:
        return []
    body = [
        wrapped
        for line in text.replace("*/", "*\\/").splitlines()
        for wrapped in (textwrap.wrap(line, _WIDTH, subsequent_indent=_hanging(line)) or [""])
    ]
    if len(body) == 1:
        return [f"/** {body[0]} */"]
    return ["/**", *(f" * {line}".rstrip() for line in body), " */"]


def _hanging(line: str) -> str:
    """A list item's continuation lines line up with its text."""
    return "  " if line.startswith("- ") else ""


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[1]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
