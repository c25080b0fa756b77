"""Messages checked against the AsyncAPI document's schemas (``liveboard.asyncapi``).

``MessageSchemas(document).check(message)`` validates one decoded JSON message against the
payload schema of the document's message of the same ``type`` (jsonschema-rs, draft 7: the
AsyncAPI 3.0 default schema format). The schemas are checked *closed*: every object with
``properties`` also gets ``additionalProperties: false``, so a field that the server sends but
the document does not declare fails as surely as a missing or mistyped one. (The published
document stays open: clients must ignore fields a later server adds.)
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema_rs


def closed(schema: Any) -> Any:
    """A deep copy of ``schema`` where every object schema with ``properties`` is closed."""
    result = copy.deepcopy(schema)
    pending = [result]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if "properties" in node:
                node.setdefault("additionalProperties", False)
            pending += node.values()
        elif isinstance(node, list):
            pending += node
    return result


class MessageSchemas:
    """One validator per message ``type`` of an AsyncAPI document."""

    def __init__(self, document: dict[str, Any]) -> None:
        components = closed(document["components"]["schemas"])
        self.validators: dict[str, jsonschema_rs.Draft7Validator] = {}
        for message in document["components"]["messages"].values():
            root = {**message["payload"], "components": {"schemas": components}}
            self.validators[message["name"]] = jsonschema_rs.Draft7Validator(root)

    def errors(self, message: Any) -> list[str]:
        """Why ``message`` is not a valid message of its ``type`` (empty: it is)."""
        kind = message.get("type") if isinstance(message, dict) else None
        validator = self.validators.get(kind) if isinstance(kind, str) else None
        if validator is None:
            return [f"no message of type {kind!r} in the document"]
        return [f"{list(e.instance_path)}: {e.message}" for e in validator.iter_errors(message)]

    def check(self, message: Any) -> None:
        """Raise ``AssertionError`` naming the message and every error if it is not valid."""
        problems = self.errors(message)
        assert problems == [], (message, problems)
