"""The public contract as the tests read it: error codes, JSON shapes, event types, room names.

Kept apart from the server's own tables (``liveboard.errors``, the wire structs) so that the
tests check them. ``assert_error`` and ``assert_event`` check one REST error body and one event
envelope exactly as CONTRACT §3 and §4 describe them.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

Json = dict[str, Any]

#: The error code CONTRACT §3 pairs with each status, as the tests read the contract: kept apart
#: from the server's own table (``liveboard.errors``) so that the tests check it.
CONTRACT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
    429: "rate_limited",
}

EVENT_TYPES = frozenset(
    {
        "task:created",
        "task:updated",
        "task:moved",
        "task:deleted",
        "project:created",
        "member:added",
        "member:removed",
    }
)

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$")
DEFAULT_STATUSES = ["todo", "in_progress", "done"]
WORKSPACE_KEYS = {"id", "name", "createdAt"}
PROJECT_KEYS = {"id", "workspaceId", "name", "statuses", "createdAt"}
TASK_KEYS = {
    "id",
    "projectId",
    "title",
    "description",
    "status",
    "order",
    "rank",
    "assigneeId",
    "createdById",
    "version",
    "createdAt",
    "updatedAt",
}
EVENT_KEYS = {"type", "room", "offset", "epoch", "ts", "userId", "data"}


def project_room(pid: str) -> str:
    return f"project:{pid}"


def workspace_room(wid: str) -> str:
    return f"workspace:{wid}"


def offsets(events: list[Json]) -> list[int]:
    return [int(e["offset"]) for e in events]


def assert_error(
    status: int, body: Any, expected_status: int, code: str, field: str | None = None
) -> None:
    """The contract's error shape: ``{"error": {"code", "message"[, "details"]}}``."""
    assert status == expected_status, (status, body)
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) <= {"code", "message", "details"}, error
    assert {"code", "message"} <= set(error), error
    assert error["code"] == code, error
    assert isinstance(error["message"], str), error
    assert error["message"], error
    if "details" in error:
        assert isinstance(error["details"], dict), error
    if field is not None:
        assert error.get("details", {}).get("field") == field, error


def parse_utc(value: Any) -> datetime:
    """An ISO 8601 UTC timestamp from the API, checked and parsed."""
    assert isinstance(value, str), value
    assert ISO_UTC.match(value), value
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert moment.utcoffset() == timedelta(0), value
    return moment


def assert_recent(value: Any, *, seconds: float = 60.0) -> None:
    moment = parse_utc(value)
    now = datetime.now(UTC)
    assert now - timedelta(seconds=seconds) <= moment <= now + timedelta(seconds=5), value


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def assert_event(
    event: dict[str, Any],
    *,
    type_: str,
    room: str,
    user: str,
    data: dict[str, Any],
    origin: str | None = None,
    after_ms: int | None = None,
) -> None:
    """One event envelope exactly as CONTRACT §4 describes it."""
    expected_keys = EVENT_KEYS | ({"origin"} if origin is not None else set())
    assert set(event) == expected_keys, event
    assert event["type"] == type_, event
    assert event["room"] == room, event
    assert event["userId"] == user, event
    assert event["data"] == data, event
    assert isinstance(event["offset"], int), event
    assert event["offset"] >= 1, event
    assert isinstance(event["epoch"], str), event
    assert event["epoch"], event
    assert isinstance(event["ts"], int), event
    if after_ms is not None:
        assert after_ms - 5 <= event["ts"] <= now_ms() + 5, event
    if origin is not None:
        assert event["origin"] == origin, event
