"""Ordering and recovery, pure: no I/O, no clock reads (callers pass ``now``), no asyncio.

Three pieces keep CONTRACT §5.2-3 ("in offset order, with no gap and no duplicate, unless sent
``resync``"; "a resubscribe with ``since`` receives every later event, in order, once"):

``RoomSequencer``
    One per room per instance. Events arrive from the broker possibly duplicated, out of order
    or with holes; ``offer`` releases them strictly in offset order, each once. A hole is
    reported as ``missing`` (an inclusive offset range) with ``gap_since`` (when it opened), so
    the caller can wait a moment for the broker and then read the range from the event log and
    ``fill`` it. An event from another epoch (the log was reset) asks for ``resync``.

``RecoveryBuffer``
    One per subscriber resubscribing with ``since``, while its history is read from the log.
    Live events arriving meanwhile are held; ``merge(history)`` returns history then held
    events, deduplicated, in offset order, without gap, and names any hole left.

``is_recovered``
    Whether the log can still serve a ``since`` position at all (same epoch, not from the
    future, not trimmed away).

Memory is bounded: at most ``max_buffered`` events wait behind a hole. Past the bound the
*highest* offsets are dropped rather than the lowest (they are the last to be needed, and the
log still has them): the result says ``overflow`` and ``missing`` still covers them, so no event
is lost as long as the log can be read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from liveboard.protocol import Position, SequencedEvent

__all__ = [
    "DEFAULT_MAX_BUFFERED",
    "OfferResult",
    "RecoveryBuffer",
    "RecoveryResult",
    "RoomSequencer",
    "is_recovered",
]

DEFAULT_MAX_BUFFERED: Final = 10_000
# Epochs a sequencer has left behind; a late event from one of them is stale, not a new reset.
_RETIRED_EPOCHS_KEPT: Final = 8


@dataclass(frozen=True, slots=True)
class OfferResult:
    """What ``RoomSequencer.offer``/``fill`` produced.

    ``deliver``: events now deliverable, in offset order, each offset once, contiguous with what
    was delivered before. Send them first.

    ``resync``: an event of another epoch arrived: the room's continuity is broken. Send
    ``resync`` to the room's subscribers after ``deliver``. The sequencer has already moved to
    the new epoch (see ``RoomSequencer``).

    ``overflow``: the buffer was full, so events ahead of the hole were dropped; ``missing``
    still covers them and a log read recovers them.
    """

    deliver: list[SequencedEvent] = field(default_factory=list)
    resync: bool = False
    overflow: bool = False


class RoomSequencer:
    """Releases one room's events in offset order, each once, with no gap.

    Guarantees, for everything returned in ``OfferResult.deliver`` across calls (within one
    epoch): offsets are exactly ``next_offset``, ``next_offset + 1``, … with no repeat and no
    hole. An event below ``next_offset`` or already buffered is a duplicate and is dropped. An
    event ahead of a hole waits in a buffer of at most ``max_buffered`` events.

    Epochs: an event whose epoch differs from ``epoch`` (and is not one this sequencer has
    already left) stops processing: the result has ``resync=True``; the sequencer drops its
    buffer, adopts the new epoch and continues after that event (``next_offset = offset + 1``),
    since subscribers told to resync refetch a snapshot that includes it. Late events of an
    abandoned epoch are dropped silently. Call ``reset`` when the log's position is known
    better (e.g. read from the database).

    The room name is the caller's business: every event given is taken as this room's.
    """

    __slots__ = (
        "_buffer",
        "_epoch",
        "_first_buffered",
        "_gap_since",
        "_highest_seen",
        "_last_buffered",
        "_max_buffered",
        "_next_offset",
        "_retired",
    )

    def __init__(
        self, epoch: str, next_offset: int = 1, *, max_buffered: int = DEFAULT_MAX_BUFFERED
    ) -> None:
        if next_offset < 1:
            raise ValueError("next_offset must be at least 1 (offsets start at 1)")
        if max_buffered < 0:
            raise ValueError("max_buffered must not be negative")
        self._max_buffered = max_buffered
        self._retired: dict[str, None] = {}  # an ordered set, oldest first
        self._set_position(epoch, next_offset)

    def _set_position(self, epoch: str, next_offset: int) -> None:
        self._epoch = epoch
        self._next_offset = next_offset
        self._buffer: dict[int, SequencedEvent] = {}
        # The buffer's smallest and largest keys, kept so that no call scans the buffer except
        # when a hole closes (smallest) or an overflow evicts (largest).
        self._first_buffered: int | None = None
        self._last_buffered: int | None = None
        # The highest offset known to exist; above next_offset - 1 means a hole.
        self._highest_seen = next_offset - 1
        self._gap_since: float | None = None

    def reset(self, epoch: str, next_offset: int) -> None:
        """Start over at ``next_offset`` in ``epoch``, forgetting buffered events and holes."""
        if next_offset < 1:
            raise ValueError("next_offset must be at least 1 (offsets start at 1)")
        if epoch != self._epoch:
            self._retire(self._epoch)
            self._retired.pop(epoch, None)
        self._set_position(epoch, next_offset)

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def next_offset(self) -> int:
        """The offset the next delivered event will have."""
        return self._next_offset

    @property
    def position(self) -> Position:
        """The last delivered position (offset 0 when nothing was ever delivered)."""
        return Position(self._next_offset - 1, self._epoch)

    @property
    def buffered(self) -> int:
        """How many events wait behind a hole."""
        return len(self._buffer)

    @property
    def missing(self) -> tuple[int, int] | None:
        """The inclusive offset range that blocks delivery now, or ``None`` when nothing does.

        The range ends just before the first buffered event or, with nothing buffered (all
        dropped for overflow), at the highest offset seen. Read it from the log and ``fill``.
        """
        if self._highest_seen < self._next_offset:
            return None
        upper = self._highest_seen if self._first_buffered is None else self._first_buffered - 1
        return (self._next_offset, upper)

    @property
    def gap_since(self) -> float | None:
        """The ``now`` of the call that opened the current hole; ``None`` when there is none.

        A hole that is narrowed but not closed keeps its original time.
        """
        return self._gap_since

    def offer(self, event: SequencedEvent, *, now: float) -> OfferResult:
        """Take one live event; return what became deliverable (see ``OfferResult``)."""
        deliver: list[SequencedEvent] = []
        resync, overflow = self._take(event, deliver)
        self._track_gap(now)
        return OfferResult(deliver, resync, overflow)

    def take_next(self, event: SequencedEvent) -> bool:
        """The common case of ``offer``, without building a result: when ``event`` is the next
        offset of the current epoch and no hole is known (nothing buffered, nothing expected
        ahead), take it and return True; the sequencer is then exactly where ``offer`` would
        have left it, and ``offer`` would have returned ``OfferResult([event])`` with no hole
        left. Otherwise take nothing and return False: call ``offer``."""
        offset = event.offset
        if (
            offset != self._next_offset
            or self._highest_seen >= offset
            or event.epoch != self._epoch
        ):
            return False
        # No hole known: ``_highest_seen`` is ``offset - 1`` and the buffer is empty (an event
        # is buffered only above a hole, after ``_highest_seen`` was raised to it), and so
        # ``_gap_since`` is None already (``_track_gap`` ends every call that changes them).
        self._next_offset = offset + 1
        self._highest_seen = offset
        return True

    def expect(self, offset: int, *, now: float) -> None:
        """Offsets up to ``offset`` are known to exist (another room's event depends on them):
        until they are delivered, ``missing`` names those not delivered yet."""
        if offset > self._highest_seen:
            self._highest_seen = offset
        self._track_gap(now)

    def fill(self, events: Iterable[SequencedEvent], *, now: float) -> OfferResult:
        """Take many events (typically read from the log), in any order; same rules as ``offer``.

        Processing stops at an epoch change; the events after it are not taken (they are
        still in the log, and the subscribers are about to resync).
        """
        deliver: list[SequencedEvent] = []
        resync = overflow = False
        for event in events:
            resync, dropped = self._take(event, deliver)
            overflow = overflow or dropped
            if resync:
                break
        self._track_gap(now)
        return OfferResult(deliver, resync, overflow)

    def _take(self, event: SequencedEvent, deliver: list[SequencedEvent]) -> tuple[bool, bool]:
        """Place one event; append what it unblocks to ``deliver``. Returns (resync, overflow)."""
        if event.epoch != self._epoch:
            if event.epoch in self._retired:
                return False, False
            self._retire(self._epoch)
            self._set_position(event.epoch, event.offset + 1)
            return True, False
        offset = event.offset
        if offset == self._next_offset:
            deliver.append(event)
            offset += 1
            buffer = self._buffer
            if buffer:
                while offset in buffer:
                    deliver.append(buffer.pop(offset))
                    offset += 1
                if not buffer:
                    self._first_buffered = self._last_buffered = None
                elif self._first_buffered is not None and self._first_buffered < offset:
                    self._first_buffered = min(buffer)
            self._next_offset = offset
            if offset - 1 > self._highest_seen:
                self._highest_seen = offset - 1
            return False, False
        if offset < self._next_offset or offset in self._buffer:
            return False, False
        if offset > self._highest_seen:
            self._highest_seen = offset
        return False, not self._buffer_ahead(event)

    def _buffer_ahead(self, event: SequencedEvent) -> bool:
        """Keep an event that waits behind a hole; False when it or another had to be dropped."""
        offset = event.offset
        buffer = self._buffer
        if len(buffer) >= self._max_buffered:
            last = self._last_buffered
            if last is None or offset > last:
                return False
            # Keep the lowest offsets: they are delivered first once the hole is filled.
            del buffer[last]
            buffer[offset] = event
            self._last_buffered = max(buffer)
            if self._first_buffered is None or offset < self._first_buffered:
                self._first_buffered = offset
            return False
        buffer[offset] = event
        if self._first_buffered is None or offset < self._first_buffered:
            self._first_buffered = offset
        if self._last_buffered is None or offset > self._last_buffered:
            self._last_buffered = offset
        return True

    def _track_gap(self, now: float) -> None:
        if self._highest_seen < self._next_offset:
            self._gap_since = None
        elif self._gap_since is None:
            self._gap_since = now

    def _retire(self, epoch: str) -> None:
        self._retired[epoch] = None
        while len(self._retired) > _RETIRED_EPOCHS_KEPT:
            del self._retired[next(iter(self._retired))]


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    """What ``RecoveryBuffer.merge`` produced.

    ``deliver``: events after ``since.offset``, in offset order, each once, without gap, and
    contiguous with those of earlier merges. Send them to the subscriber.

    ``missing``: the inclusive range still missing before events the buffer holds: read it from
    the log and ``merge`` it. ``None`` when nothing known is missing.

    ``resync``: an event of another epoch was seen: send the subscriber ``resync`` instead.
    ``overflow``: held live events were dropped for the bound; ``missing`` covers them.
    """

    deliver: list[SequencedEvent]
    missing: tuple[int, int] | None
    resync: bool = False
    overflow: bool = False

    @property
    def complete(self) -> bool:
        """Recovery is over: deliver live events directly, skipping offsets <= ``position``."""
        return not self.resync and self.missing is None


class RecoveryBuffer:
    """Merges one subscriber's history with the live events that arrive while it is read.

    Use: create it with the client's ``since`` when the subscription is registered (so no live
    event can slip between), ``add_live`` every live event of the room meanwhile, start the log
    read for offsets > ``since.offset``, then ``merge`` its result. While ``missing`` is not
    ``None``, read that range and ``merge`` again. Once ``complete``, the caller delivers live
    events directly, dropping those with offset <= ``position.offset`` (the history may have
    gone further than the live stream had yet).

    Guarantee: the concatenation of every ``deliver`` is exactly the offsets ``since.offset + 1``
    … ``position.offset``, in order, once each, whatever the overlap between history and live
    events. Nothing is released before the first ``merge``. It is a ``RoomSequencer`` started at
    ``since.offset + 1`` whose output is held until the history is in.
    """

    __slots__ = ("_held", "_overflow", "_resync", "_sequencer")

    def __init__(self, since: Position, *, max_buffered: int = DEFAULT_MAX_BUFFERED) -> None:
        self._sequencer = RoomSequencer(since.epoch, since.offset + 1, max_buffered=max_buffered)
        self._held: list[SequencedEvent] = []
        self._resync = False
        self._overflow = False

    @property
    def position(self) -> Position:
        """The last position released by ``merge`` (or that ``merge`` will release next)."""
        return self._sequencer.position

    @property
    def missing(self) -> tuple[int, int] | None:
        """As in ``RecoveryResult``: what must be read from the log before more can be released."""
        return self._sequencer.missing

    def add_live(self, event: SequencedEvent) -> None:
        """Hold one live event of the room until the next ``merge``."""
        if self._resync:
            return
        result = self._sequencer.offer(event, now=0.0)
        self._absorb(result)

    def merge(self, history: Iterable[SequencedEvent]) -> RecoveryResult:
        """Add events read from the log; release all that are now contiguous, history first."""
        if not self._resync:
            self._absorb(self._sequencer.fill(history, now=0.0))
        if self._resync:
            self._held.clear()
            return RecoveryResult([], None, resync=True, overflow=self._overflow)
        deliver, self._held = self._held, []
        overflow, self._overflow = self._overflow, False
        return RecoveryResult(deliver, self._sequencer.missing, overflow=overflow)

    def _absorb(self, result: OfferResult) -> None:
        self._held.extend(result.deliver)
        self._resync = self._resync or result.resync
        self._overflow = self._overflow or result.overflow


def is_recovered(
    since: Position,
    current_epoch: str,
    current_offset: int,
    oldest_available_offset: int,
) -> bool:
    """Whether the log can replay every event after ``since``: the contract's ``recovered``.

    ``current_offset`` is the room's last offset; ``oldest_available_offset`` the lowest offset
    the log still holds (``current_offset + 1`` when it holds none). False when the epoch
    differs, when ``since`` is ahead of the log (a client from the future), or when history no
    longer reaches back to ``since.offset + 1``.
    """
    if since.epoch != current_epoch:
        return False
    if since.offset < 0 or since.offset > current_offset:
        return False
    if since.offset == current_offset:
        return True
    return oldest_available_offset <= since.offset + 1
