"""The event envelope shared by the event log, the brokers and the WebSocket layer.

An ``Event`` is exactly the server → client message of CONTRACT §4::

    {"type": "task:moved", "room": "project:p1", "offset": 7, "epoch": "…", "ts": 1764120000000,
     "userId": "alice", "origin": "c-…", "data": {...}}

``origin`` is omitted when the change did not come from a known connection. ``offset`` is the
room's position in its event log (1, 2, 3… with no gap); ``epoch`` names the log's lineage, so a
client can tell a restarted history from a continued one.

One field is not part of that message: ``workspace_offset``, carried between instances (see
``encode_broker_event``) and never sent to a client. A project room's event names the head of
its workspace room as its transaction read it, so an instance does not release the event before
it has applied every membership change committed before it (a ``member:removed`` whose publish
was lost, or is still on its way, ends the subscription first: CONTRACT §3).
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


class Event(
    msgspec.Struct,
    frozen=True,
    omit_defaults=True,
    rename={"user_id": "userId", "workspace_offset": "workspaceOffset"},
):
    """One committed change, as stored in the log and as sent to subscribers.

    ``workspace_offset`` (0: none) is internal: for an event of a project room, the head of its
    workspace room read in the same transaction, so every membership change committed before
    this event has an offset at most ``workspace_offset``. Events read back from the log have 0
    (the node orders its log reads instead, see ``liveboard.realtime.node``).
    """

    type: str
    room: str
    offset: int
    epoch: str
    ts: int
    user_id: str
    data: dict[str, Any]
    origin: str | None = None
    workspace_offset: int = 0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    """The event's wire JSON (UTF-8), without the internal ``workspace_offset``. Done once per
    event, whatever the number of sockets."""
    if event.workspace_offset:
        event = msgspec.structs.replace(event, workspace_offset=0)
    return _encoder.encode(event)


def encode_broker_event(event: Event) -> bytes:
    """The event as instances send it to each other: the wire JSON plus ``workspaceOffset``.

    An instance of an older version ignores the extra field (unknown fields are skipped)."""
    return _encoder.encode(event)


def decode_event(raw: bytes | str) -> Event:
    """Parse an event produced by ``encode_event`` or ``encode_broker_event``."""
    return _decoder.decode(raw)


def project_room(project_id: str) -> str:
    return f"project:{project_id}"


#: A workspace's room is this prefix followed by its id.
WORKSPACE_ROOM_PREFIX: Final = "workspace:"


def workspace_room(workspace_id: str) -> str:
    return WORKSPACE_ROOM_PREFIX + workspace_id


class EventPublisher(Protocol):
    """Where the task service hands committed events, in commit order, after each commit.

    Commit order, per room, among one service's transactions: ``publish`` for an earlier commit
    is called, and runs to its first suspension, before ``publish`` for a later one is called
    (``tasks.publish_order``); what it does before its first ``await`` (the node: deliver to its
    own hub) sees each room's events in offset order. Called once per committed transaction
    with that transaction's events. Implementations must not raise for a broker outage: the
    event log already holds the events, and recovery reads them from there. The real-time node
    implements this; tests may use ``RecordingPublisher``.
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
