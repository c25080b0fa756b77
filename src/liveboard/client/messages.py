"""What a ``Subscription`` yields (``SubscriptionItem``): the SDK's own items, beside the wire's.

The server → client messages themselves, and their decoder, are the wire contract's
(``liveboard.protocol``). A subscription turns them into:

* ``Event`` — a committed change, in offset order, each once.
* ``Resync`` — continuity was lost (``recovered: false``, a server ``resync``, or a gap the
  server should never send): refetch the snapshot. The stream goes on from ``offset``/``epoch``.
* ``PresenceUpdate`` — who is viewing the room changed (``users`` is the full, sorted list).
* ``Revoked`` — the subscription has ended for good (membership revoked, or refused on
  resubscribe); nothing follows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from liveboard.protocol import Event, PresenceUpdate


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
