"""Server → client messages (CONTRACT §4), decoded into typed values, and the SDK's own items.

``decode_server_message`` turns one text frame into an ``Event`` (``liveboard.events``), one of
the reply/notice structs below, or ``None`` for a message type this SDK does not know (a newer
server may send more; unknown keys are ignored too).

What a ``Subscription`` yields (``SubscriptionItem``):

* ``Event`` — a committed change, in offset order, each once.
* ``Resync`` — continuity was lost (``recovered: false``, a server ``resync``, or a gap the
  server should never send): refetch the snapshot. The stream goes on from ``offset``/``epoch``.
* ``PresenceUpdate`` — who is viewing the room changed (``users`` is the full, sorted list).
* ``Revoked`` — the subscription has ended for good (membership revoked, or refused on
  resubscribe); nothing follows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias

import msgspec

from liveboard.events import EVENT_TYPES, Event, decode_event
from liveboard.realtime.protocol import MessageId


class Connected(msgspec.Struct, frozen=True, rename="camel"):
    connection_id: str
    user_id: str


class Subscribed(msgspec.Struct, frozen=True):
    room: str
    offset: int
    epoch: str
    recovered: bool | None = None
    id: MessageId = None


class Unsubscribed(msgspec.Struct, frozen=True):
    room: str
    reason: str | None = None
    id: MessageId = None


class Pong(msgspec.Struct, frozen=True):
    id: MessageId = None


class Refreshed(msgspec.Struct, frozen=True, rename="camel"):
    expires_at: int
    id: MessageId = None


class ErrorReply(msgspec.Struct, frozen=True):
    code: str
    message: str
    id: MessageId = None


class PresenceUser(msgspec.Struct, frozen=True, rename="camel"):
    """One user viewing a room; ``name`` is their token's ``name`` claim or their id."""

    user_id: str
    name: str


class PresenceUpdate(msgspec.Struct, frozen=True):
    """``presence:update``: ``users`` is everyone present (sorted by id); who joined and left."""

    room: str
    users: list[PresenceUser]
    joined: list[str]
    left: list[str]


class ResyncNotice(msgspec.Struct, frozen=True):
    """The server's ``resync``: it has ended the subscription."""

    room: str
    reason: str


Reply: TypeAlias = Subscribed | Unsubscribed | Pong | Refreshed | ErrorReply
ServerMessage: TypeAlias = Event | Connected | Reply | PresenceUpdate | ResyncNotice


class _Head(msgspec.Struct):
    type: str


_head: Final = msgspec.json.Decoder(_Head)
_decoders: Final[dict[str, msgspec.json.Decoder[ServerMessage]]] = {
    "connected": msgspec.json.Decoder(Connected),
    "subscribed": msgspec.json.Decoder(Subscribed),
    "unsubscribed": msgspec.json.Decoder(Unsubscribed),
    "pong": msgspec.json.Decoder(Pong),
    "refreshed": msgspec.json.Decoder(Refreshed),
    "error": msgspec.json.Decoder(ErrorReply),
    "presence:update": msgspec.json.Decoder(PresenceUpdate),
    "resync": msgspec.json.Decoder(ResyncNotice),
}


def decode_server_message(raw: str | bytes) -> ServerMessage | None:
    """Decode one server frame; None for a type unknown to this SDK.

    Raises ``msgspec.DecodeError`` (or ``ValidationError``) for a frame that is not a valid
    message of its type.
    """
    kind = _head.decode(raw).type
    if kind in EVENT_TYPES:
        return decode_event(raw)
    decoder = _decoders.get(kind)
    return None if decoder is None else decoder.decode(raw)


# --------------------------------------------------------------------------- SDK items


@dataclass(frozen=True, slots=True)
class Resync:
    """Continuity of ``room`` was lost: refetch the snapshot, then apply events after it.

    ``reason``: ``not_recovered`` (a resubscribe with ``since`` answered ``recovered: false``),
    the server's ``resync`` reason (``continuity_lost``, ``epoch_changed``,
    ``history_unavailable``), or ``gap`` / ``epoch_mismatch`` (the SDK saw a hole in the
    stream). Events that follow start right after ``offset`` in ``epoch``; a snapshot fetched
    after this item has arrived is at or after that position, so events at or below the
    snapshot's offset can be skipped.
    """

    room: str
    reason: str
    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Revoked:
    """The subscription ended for good (``reason``: ``forbidden`` when membership was revoked)."""

    room: str
    reason: str


SubscriptionItem: TypeAlias = Event | Resync | PresenceUpdate | Revoked
