"""Event types that other backends may publish into a room (CONTRACT §6.3).

A custom event travels in the same envelope as liveboard's own (``Event``); only its ``type``
and ``data`` come from outside. The rule, checked by ``custom_event_type_problem``:

* ``namespace:name``: each part starts with a lowercase ASCII letter and goes on with lowercase
  letters, digits, ``_``, ``.`` or ``-`` (``^[a-z][a-z0-9_.-]*:[a-z][a-z0-9_.-]*$``);
* at most ``MAX_EVENT_TYPE_LENGTH`` (64) characters;
* not one of the types the server sends on its own account that are not events
  (``RESERVED_EVENT_TYPES``: ``presence:update`` is the only one that fits the pattern today).
  liveboard's own event types (``task:*``, ``project:created``, ``member:*``) are allowed: a
  team whose task service is not liveboard's publishes them itself.

Pure: no I/O, no state. Used by the HTTP publish route and by the Python ``emit`` helper, so
both refuse the same types with the same words.
"""

from __future__ import annotations

import re
from typing import Final

from liveboard.protocol.events import EVENT_TYPES
from liveboard.protocol.server_messages import SERVER_MESSAGE_TYPES

__all__ = [
    "CUSTOM_EVENT_TYPE_PATTERN",
    "MAX_EVENT_TYPE_LENGTH",
    "RESERVED_EVENT_TYPES",
    "check_custom_event_type",
    "custom_event_type_problem",
]

#: The longest event ``type`` accepted from outside, in characters.
MAX_EVENT_TYPE_LENGTH: Final = 64
#: The syntax of a custom event's ``type`` (ASCII only: ``re.ASCII`` keeps ``[a-z]`` exact).
CUSTOM_EVENT_TYPE_PATTERN: Final = re.compile(r"[a-z][a-z0-9_.-]*:[a-z][a-z0-9_.-]*", re.ASCII)
#: Types the server sends that are not events: an outside event must not look like one.
RESERVED_EVENT_TYPES: Final[frozenset[str]] = SERVER_MESSAGE_TYPES - EVENT_TYPES


def custom_event_type_problem(event_type: object) -> str | None:
    """Why ``event_type`` may not be published from outside, or None when it may.

    The message completes "type …" (``"must be at most 64 characters"``), for a 422's text."""
    if not isinstance(event_type, str):
        return "must be a string"
    if len(event_type) > MAX_EVENT_TYPE_LENGTH:
        return f"must be at most {MAX_EVENT_TYPE_LENGTH} characters"
    if CUSTOM_EVENT_TYPE_PATTERN.fullmatch(event_type) is None:
        return (
            "must be namespace:name, each part a lowercase letter followed by lowercase "
            "letters, digits, '_', '.' or '-'"
        )
    if event_type in RESERVED_EVENT_TYPES:
        return f"{event_type} is a message type of the server itself"
    return None


def check_custom_event_type(event_type: object) -> str:
    """``event_type`` when it may be published from outside; ``ValueError`` (the problem) else."""
    problem = custom_event_type_problem(event_type)
    if problem is not None:
        raise ValueError(f"type {problem}")
    assert isinstance(event_type, str)  # custom_event_type_problem refused anything else
    return event_type
