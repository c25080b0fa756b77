"""The open log's pure parts: the wake-up's payload, the checks ``liveboard.emit`` makes before
any SQL, the SQL function's rule against the protocol's, and ``LIVEBOARD_DB_SCHEMA``.

The SQL function itself, the helper on real connections and the wake-up across instances run in
``tests/integration/test_emit_helper.py`` and ``test_open_log_emit.py``.
"""

from __future__ import annotations

import re

import pytest

from liveboard.config import load_settings
from liveboard.errors import ConfigError
from liveboard.open_log import EmitError, _checked
from liveboard.protocol import (
    CUSTOM_EVENT_TYPE_PATTERN,
    MAX_EVENT_TYPE_LENGTH,
    RESERVED_EVENT_TYPES,
)
from liveboard.protocol.rooms import ROOM_ID_MAX_LENGTH, ROOM_PATTERN
from liveboard.realtime.brokers.wakeup import parse
from liveboard.store import open_log_sql


def test_a_wake_up_names_its_room_and_offset() -> None:
    assert parse("project:p1 7") == ("project:p1", 7)
    assert parse("workspace:w-1_x 123456789012") == ("workspace:w-1_x", 123456789012)
    for malformed in ("", "project:p1", "project:p1 ", " 7", "project:p1 -1", "project:p1 x"):
        assert parse(malformed) is None, malformed


def test_the_sql_rule_is_the_protocols() -> None:
    assert f"^{CUSTOM_EVENT_TYPE_PATTERN.pattern}$" == open_log_sql.TYPE_PATTERN
    assert open_log_sql.MAX_TYPE_LENGTH == MAX_EVENT_TYPE_LENGTH
    fitting = {t for t in RESERVED_EVENT_TYPES if CUSTOM_EVENT_TYPE_PATTERN.fullmatch(t)}
    assert set(open_log_sql.RESERVED_TYPES) == fitting
    # The room syntax, read by Python's re (PostgreSQL's reads these patterns alike).
    sql_room = re.compile(open_log_sql.ROOM_PATTERN, re.ASCII)
    samples = ["project:p1", "workspace:w_1-2", "project:", "task:1", "project:a b", "Project:1"]
    samples += ["project:" + "x" * ROOM_ID_MAX_LENGTH, "project:" + "x" * (ROOM_ID_MAX_LENGTH + 1)]
    for name in samples:
        assert (sql_room.match(name) is None) == (ROOM_PATTERN.fullmatch(name) is None), name


def test_the_functions_are_installed_in_the_schema_and_wrapped_in_public() -> None:
    statements = open_log_sql.function_statements("lb")
    heads = [re.search(r"FUNCTION (\S+)\(", s).group(1) for s in statements]  # type: ignore[union-attr]
    assert heads == [
        "lb.liveboard_emit",
        "lb.liveboard_position",
        "public.liveboard_emit",
        "public.liveboard_position",
    ]
    assert "pg_notify('lb_events'" in statements[0]
    assert "lb.rooms" in statements[0]
    assert "lb.events" in statements[0]
    in_public = open_log_sql.function_statements("public")
    assert len(in_public) == 2


def test_emit_checks_before_any_sql() -> None:
    assert _checked("project:p1", "comment:added", {"a": [1, None]}) == '{"a":[1,null]}'
    refusals = [
        ("board:1", "comment:added", {}, "room must be project:{id} or workspace:{id}"),
        ("project:", "comment:added", {}, "room must be"),
        ("project:p1", "comment", {}, "type must be namespace:name"),
        ("project:p1", "n:" + "x" * 63, {}, "type must be at most 64 characters"),
        ("project:p1", "presence:update", {}, "message type of the server itself"),
        ("project:p1", "a:b", [1], "data must be a JSON object"),
        ("project:p1", "a:b", {"x": "y" * 65536}, "at most 65536 bytes"),
        ("project:p1", "a:b", {"x": object()}, "data must be JSON"),
    ]
    for room, event_type, data, message in refusals:
        with pytest.raises(EmitError, match=re.escape(message)):
            _checked(room, event_type, data)  # type: ignore[arg-type]
    # liveboard's own event types are allowed from outside (a task service elsewhere).
    assert _checked("project:p1", "task:created", {}) == "{}"


def test_the_schema_is_configurable_and_checked() -> None:
    assert load_settings({}).db_schema == "liveboard"
    assert load_settings({"LIVEBOARD_DB_SCHEMA": "realtime_1"}).db_schema == "realtime_1"
    for bad in ("Live", "1x", "a-b", "pg_x", "a" * 64, "x;drop"):
        with pytest.raises(ConfigError, match="LIVEBOARD_DB_SCHEMA"):
            load_settings({"LIVEBOARD_DB_SCHEMA": bad})
