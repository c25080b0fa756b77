"""Events: the server → client message of a committed change (CONTRACT §4), and its envelope.

An ``Event`` is exactly the message a subscriber receives::

    {"type": "task:moved", "room": "project:p1", "offset": 7, "epoch": "…", "ts": 1764120000000,
     "userId": "alice", "origin": "c-…", "data": {...}}

``origin`` is omitted when the change did not come from a known connection. ``offset`` is the
room's position in its event log (1, 2, 3… with no gap); ``epoch`` names the log's lineage, so a
client can tell a restarted history from a continued one.

Servers hold and exchange one more field, never sent to a client: a ``BrokerEvent`` (an
``Event`` plus ``workspace_offset``) is what the event log, the broker (``encode_broker_event``,
``decode_broker_event``) and the hub carry; ``encode_event`` leaves the field out. A project
room's event names the head of its workspace room as its transaction read it, so an instance
does not release the event before it has applied every membership change committed before it
(a ``member:removed`` whose publish was lost, or is still on its way, ends the subscription
first: CONTRACT §3).

The broker message layout (``encode_broker_event``) is the event's client JSON exactly as
``encode_event`` writes it, with, only when ``workspace_offset`` is not 0, the field
``"workspaceOffset":N`` as the object's last member::

    {"type":…,"room":…,…,"data":{…},"origin":…}                       (workspace_offset 0)
    {"type":…,"room":…,…,"data":{…},"origin":…,"workspaceOffset":12}  (otherwise)

So a receiver needs to parse only what sequencing uses (``decode_wire_event``: the routing
fields; ``data`` is skipped, not built) and can write the message to the sockets as it came, cut
before the trailing member when there is one (``WireEvent.wire``). Every version of liveboard
has published this layout (msgspec writes a subclass's fields last), so a rolling upgrade needs
nothing: an older instance decodes the whole message as before, and a message that does not
have the layout (a trailing member missing, another ``workspaceOffset`` key left in it) is
decoded whole and encoded again (``BrokerEvent``), so no layout can leak the field to a client.
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias

import msgspec

__all__ = [
    "EVENT_TYPES",
    "INTERNAL_EVENT_FIELDS",
    "MEMBER_ADDED",
    "MEMBER_REMOVED",
    "PROJECT_CREATED",
    "TASK_CREATED",
    "TASK_DELETED",
    "TASK_MOVED",
    "TASK_UPDATED",
    "BrokerEvent",
    "Event",
    "SequencedEvent",
    "WireEvent",
    "client_json",
    "decode_broker_event",
    "decode_event",
    "decode_wire_event",
    "encode_broker_event",
    "encode_event",
]

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
"""Every event ``type``: the task events of project rooms, the others of workspace rooms."""


class Event(msgspec.Struct, frozen=True, omit_defaults=True, rename={"user_id": "userId"}):
    """One committed change, as subscribers receive it.

    ``data`` is ``{task}`` / ``{task, changes}`` / ``{taskId, fromStatus, toStatus, order}`` /
    ``{taskId}`` for the task events, ``{project}``, ``{userId, role}``, ``{userId}`` for
    ``project:created``, ``member:added``, ``member:removed``; any JSON object for a type
    another backend published (``custom_events``), whose ``userId`` is null.
    """

    type: str
    room: str
    offset: int
    epoch: str
    ts: int
    #: Who made the change; null for an event a service published (CONTRACT §6.3).
    user_id: str | None
    data: dict[str, Any]
    origin: str | None = None


class BrokerEvent(
    Event,
    frozen=True,
    omit_defaults=True,
    rename={"user_id": "userId", "workspace_offset": "workspaceOffset"},
):
    """An ``Event`` as the servers hold and exchange it (the event log, the broker, the hub).

    ``workspace_offset`` (0: none) never reaches a client: for an event of a project room, the
    head of its workspace room read in the same transaction, so every membership change
    committed before this event has an offset at most ``workspace_offset``. Events read back
    from the log have 0.
    """

    workspace_offset: int = 0


INTERNAL_EVENT_FIELDS: Final = frozenset({"workspaceOffset"})
"""Wire names of the fields ``BrokerEvent`` adds to ``Event``: only servers exchange them, and
no client ever receives them (a schema generator leaves them out of a client's ``Event``)."""


class WireEvent(msgspec.Struct, frozen=True):
    """An event received from a broker, ready for the sockets (``decode_wire_event``).

    Only what sequencing and the hub use was parsed (``type``, ``room``, ``offset``, ``epoch``,
    ``ts``, ``workspace_offset``); ``wire`` is the event's client JSON, exactly the bytes
    ``encode_event`` would write for it, taken from the broker message without parsing
    ``data``. ``full()`` parses the rest (a workspace room's ``member:removed``, whose
    ``data.userId`` a revocation needs).
    """

    type: str
    room: str
    offset: int
    epoch: str
    ts: int
    workspace_offset: int
    wire: bytes

    def full(self) -> BrokerEvent:
        """The whole event, ``data`` included."""
        event = _broker_decoder.decode(self.wire)
        if self.workspace_offset:
            event = msgspec.structs.replace(event, workspace_offset=self.workspace_offset)
        return event


SequencedEvent: TypeAlias = BrokerEvent | WireEvent
"""What the hub sequences and fans out: an event from a broker message (``WireEvent``) or one
built whole (read from the log, published by this instance, or a message decoded whole)."""


class _Route(
    msgspec.Struct, frozen=True, rename={"user_id": "userId", "workspace_offset": "workspaceOffset"}
):
    """The fields of a broker message that sequencing reads; ``data`` is checked to be one JSON
    value and skipped (``Raw``: no dict is built), ``user_id`` and ``origin`` type-checked, as
    a whole decode would, so a malformed message is refused either way."""

    type: str
    room: str
    offset: int
    epoch: str
    ts: int
    user_id: str | None
    data: msgspec.Raw
    origin: str | None = None
    workspace_offset: int | msgspec.UnsetType = msgspec.UNSET


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Event)
_broker_decoder: Final = msgspec.json.Decoder(BrokerEvent)
_route_decoder: Final = msgspec.json.Decoder(_Route)
_INTERNAL_KEY: Final = b'"workspaceOffset"'


def encode_event(event: Event) -> bytes:
    """The event's client wire JSON (UTF-8), without a ``BrokerEvent``'s ``workspace_offset``.
    The server does it once per event, whatever the number of sockets."""
    try:
        # The server's case (a BrokerEvent), at the cost of an attribute read: a try costs
        # nothing when it does not raise, where getattr with a default or a type test cost
        # ~10-15 ns per event. A client's Event (tail) takes the except.
        dependent = event.workspace_offset  # type: ignore[attr-defined]
    except AttributeError:
        return _encoder.encode(event)
    if dependent:
        event = msgspec.structs.replace(event, workspace_offset=0)
    return _encoder.encode(event)


def encode_broker_event(event: BrokerEvent) -> bytes:
    """The event as server instances send it to each other: the wire JSON plus
    ``workspaceOffset`` as its last member (the layout of the module docstring; msgspec writes
    a subclass's own fields after its base's). An instance of an older version ignores the
    extra field (unknown fields are skipped)."""
    return _encoder.encode(event)


def client_json(event: SequencedEvent) -> bytes:
    """The event's client wire JSON: a ``WireEvent``'s bytes as received, or ``encode_event``."""
    if isinstance(event, WireEvent):
        return event.wire
    return encode_event(event)


def decode_wire_event(raw: bytes) -> SequencedEvent:
    """Parse a broker message (``encode_broker_event``): a ``WireEvent`` carrying its client
    JSON, or, for a message without the layout of the module docstring, the ``BrokerEvent``
    decoded whole. Raises ``msgspec.DecodeError`` or ``msgspec.ValidationError`` (a
    ``DecodeError``) for a malformed message, as ``decode_broker_event`` does."""
    route = _route_decoder.decode(raw)
    dependent = route.workspace_offset
    if dependent is msgspec.UNSET:
        wire = raw  # no top-level workspaceOffset: the message is the client JSON
        dependent = 0
    else:
        tail = b',"workspaceOffset":%d}' % dependent
        if not raw.endswith(tail):
            return _broker_decoder.decode(raw)
        wire = raw[: -len(tail)] + b"}"
        if _INTERNAL_KEY in wire:  # a second one (or a nested key: decoding whole is safe)
            return _broker_decoder.decode(raw)
    return WireEvent(route.type, route.room, route.offset, route.epoch, route.ts, dependent, wire)


def decode_event(raw: bytes | str) -> Event:
    """Parse an event produced by ``encode_event`` or ``encode_broker_event`` (a client's view:
    ``workspaceOffset`` is skipped)."""
    return _decoder.decode(raw)


def decode_broker_event(raw: bytes | str) -> BrokerEvent:
    """Parse an event produced by ``encode_broker_event`` (or ``encode_event``: 0), as servers
    do."""
    return _broker_decoder.decode(raw)
