"""The rule for event types published from outside (CONTRACT §6.3), ``protocol.custom_events``."""

from __future__ import annotations

import pytest

from liveboard.protocol import (
    EVENT_TYPES,
    MAX_EVENT_TYPE_LENGTH,
    RESERVED_EVENT_TYPES,
    SERVER_MESSAGE_TYPES,
    check_custom_event_type,
    custom_event_type_problem,
)


@pytest.mark.parametrize(
    "event_type",
    [
        "comment:added",
        "a:b",
        "billing.v2:invoice-paid",
        "x9_:y.z-1",
        "task:created",  # liveboard's own event types are allowed from outside
        "task:moved",
        "member:removed",
        "project:created",
        "presence:joined",  # only the server's exact message types are reserved
        "n" * 31 + ":" + "m" * 32,  # exactly 64
    ],
)
def test_allowed_types(event_type: str) -> None:
    assert custom_event_type_problem(event_type) is None
    assert check_custom_event_type(event_type) == event_type


@pytest.mark.parametrize(
    ("event_type", "words"),
    [
        ("", "namespace:name"),
        ("comment", "namespace:name"),
        ("comment:", "namespace:name"),
        (":added", "namespace:name"),
        ("Comment:added", "namespace:name"),
        ("comment:Added", "namespace:name"),
        ("1comment:added", "namespace:name"),
        ("comment:_added", "namespace:name"),
        ("comment:added:twice", "namespace:name"),
        ("comment added:x", "namespace:name"),
        ("comment:added\n", "namespace:name"),
        ("kommentar:hinzugefügt", "namespace:name"),
        ("\uff43omment:added", "namespace:name"),  # a fullwidth letter: not ASCII
        ("n" * 32 + ":" + "m" * 32, "at most 64"),
        ("a:" + "b" * 10_000, "at most 64"),
        ("presence:update", "message type of the server"),
        (None, "string"),
        (7, "string"),
    ],
)
def test_refused_types(event_type: object, words: str) -> None:
    problem = custom_event_type_problem(event_type)
    assert problem is not None
    assert words in problem
    with pytest.raises(ValueError, match=r"^type "):
        check_custom_event_type(event_type)


def test_reserved_are_the_server_messages_that_are_not_events() -> None:
    assert RESERVED_EVENT_TYPES == SERVER_MESSAGE_TYPES - EVENT_TYPES
    assert "presence:update" in RESERVED_EVENT_TYPES
    assert not RESERVED_EVENT_TYPES & EVENT_TYPES
    # Every reserved type that fits the syntax is refused for being reserved, not for syntax.
    for reserved in RESERVED_EVENT_TYPES:
        problem = custom_event_type_problem(reserved)
        assert problem is not None
    assert MAX_EVENT_TYPE_LENGTH == 64
