"""The room log over REST (CONTRACT §6.3-6.4): publishing an event, reading a room's history.

- ``PublishEvent`` is the body of ``POST /api/rooms/{room}/events``: a ``type`` that follows
  ``custom_events`` and a JSON object ``data``; ``Published`` is its answer, the event's
  position.
- ``RoomHistory`` is the answer of ``GET /api/rooms/{room}/events?after=&limit=``: events with
  offset > ``after`` in offset order, each in the envelope subscribers receive (``Event``), and
  the room's head. ``truncated`` is true when events after ``after`` were pruned (retention):
  the answer starts at the oldest event kept.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from liveboard.protocol.events import Event

__all__ = [
    "HISTORY_DEFAULT_LIMIT",
    "HISTORY_MAX_LIMIT",
    "PublishEvent",
    "Published",
    "RoomHistory",
]

#: Events a history page holds unless ``limit`` says otherwise, and at most.
HISTORY_DEFAULT_LIMIT: Final = 100
HISTORY_MAX_LIMIT: Final = 1000


class PublishEvent(msgspec.Struct, frozen=True):
    """An event another backend publishes: ``type`` (``namespace:name``) and ``data``."""

    type: str
    data: dict[str, Any]


class Published(msgspec.Struct, frozen=True):
    """Where a published event went: its room, offset and epoch."""

    room: str
    offset: int
    epoch: str


class RoomHistory(msgspec.Struct, frozen=True, omit_defaults=True):
    """A page of a room's events (ascending offsets) and the room's head when it was read."""

    events: list[Event]
    offset: int
    epoch: str
    truncated: bool = False
