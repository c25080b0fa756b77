"""The event envelope shared by the event log, the brokers and the WebSocket layer.

An ``Event`` is exactly the server → client message of CONTRACT §4::

    {"type": "task:moved", "room": "project:p1", "offset": 7, "epoch": "…", "ts": 1764120000000,
     "userId": "alice", "origin": "c-…", "data": {...}}

``origin`` is omitted when the change did not come from a known connection. ``offset`` is the
room's position in its event log (1, 2, 3… with no gap); ``epoch`` names the log's lineage, so a
client can tell a restarted history from a continued one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Protocol

import msgspec

TASK_CREATED: Final = "task:created"
TASK_UPDATED: Final = "task:updated"
TASK_MOVED: Final = "task:moved"
TASK_DELETED: Final = "task:deleted"
PROJECT_CREATED: Final = "project:created"
MEMBER_ADDED: Final = "member:added"
MEMBER_REMOVED: Final = "member:removed"

EVENT_TYPES: Final = frozenset(
    {
        TASK_CREATED,
        TASK_UPDATED,
        TASK_MOVED,
        TASK_DELETED,
        PROJECT_CREATED,
        MEMBER_ADDED,
        MEMBER_REMOVED,
    }
)


class Event(msgspec.Struct, frozen=True, omit_defaults=True, rename={"user_id": "userId"}):
    """One committed change, as stored in the log and as sent to subscribers."""

    type: str
    room: str
    offset: int
    epoch: str
    ts: int
    user_id: str
    data: dict[str, Any]
    origin: str | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    """The event's wire JSON (UTF-8). Done once per event, whatever the number of sockets."""
    return _encoder.encode(event)


def decode_event(raw: bytes | str) -> Event:
    """Parse an event produced by ``encode_event`` (e.g. from a broker)."""
    return _decoder.decode(raw)


def project_room(project_id: str) -> str:
    return f"project:{project_id}"


#: A workspace's room is this prefix followed by its id.
WORKSPACE_ROOM_PREFIX: Final = "workspace:"


def workspace_room(workspace_id: str) -> str:
    return WORKSPACE_ROOM_PREFIX + workspace_id


class EventPublisher(Protocol):
    """Where the task service hands committed events, in commit order, after each commit.

    Called once per committed transaction with that transaction's events. Implementations must
    not raise for a broker outage: the event log already holds the events, and recovery reads
    them from there. The real-time node implements this; tests may use ``RecordingPublisher``.
    """

    async def publish(self, events: Sequence[Event]) -> None: ...


class RecordingPublisher:
    """An in-process publisher that keeps every event it is given, for tests and tools."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, events: Sequence[Event]) -> None:
        self.events.extend(events)


class NullPublisher:
    """Discards events: for a service used without a real-time layer (e.g. tools, migrations)."""

    async def publish(self, events: Sequence[Event]) -> None:
        return None
