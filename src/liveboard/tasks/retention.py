"""Event retention (``LIVEBOARD_EVENT_RETENTION``, ``LIVEBOARD_EVENT_RETENTION_AGE``): the log
stops growing without bound.

What is kept, per room: at least the last ``keep`` events (10,000 by default), and of those
beyond ``recovery_window`` (the last 1,000: CONTRACT §5.3, what a resubscribe with ``since`` is
promised) only the ones younger than ``max_age`` when an age is configured. What is pruned is
always a room's oldest events (a prefix of its offsets), so what is kept stays consecutive:
history paging by cursor and ``since`` recovery see no hole, only an older start
(``truncated: true``, ``recovered: false``).

How (``Retention.prune``): a background round every ``PRUNE_INTERVAL`` walks the rooms whose
head is past the recovery window, ``ROOMS_PER_ROUND`` at a time in name order (a cursor, so a
round's work is bounded however many rooms there are), and deletes each one's prunable prefix
in batches of at most ``PRUNE_BATCH`` consecutive offsets, each its own short write
transaction. Every instance prunes; deleting what another instance already deleted deletes
nothing. ``prune_through`` (pure) decides what may go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from liveboard.store import eventlog
from liveboard.store.database import Database

__all__ = ["PRUNE_BATCH", "PRUNE_INTERVAL", "ROOMS_PER_ROUND", "Retention", "prune_through"]

log = logging.getLogger("liveboard.retention")

PRUNE_INTERVAL: Final = 60.0
#: Consecutive offsets deleted by one statement at most.
PRUNE_BATCH: Final = 1000
#: Rooms looked at per round at most; the next round goes on from there.
ROOMS_PER_ROUND: Final = 500


def prune_through(
    *,
    head: int,
    oldest: int,
    keep: int,
    recovery_window: int,
    first_young: int | None = None,
    age_configured: bool = False,
) -> int:
    """The highest offset of a room that may be pruned (everything at or below it), or
    ``oldest - 1`` when nothing may.

    ``head``: the room's last offset; ``oldest``: its oldest event kept; ``first_young``: with
    an age configured, the first offset whose event is younger than the age (None: all kept
    events are older). Never past ``head - recovery_window``, nor past ``head - keep`` unless
    the age allows it."""
    by_count = head - keep
    by_age = oldest - 1
    if age_configured:
        by_age = head if first_young is None else first_young - 1
    target = min(max(by_count, by_age), head - recovery_window)
    return max(target, oldest - 1)


class Retention:
    """The background pruning of the event log (see the module)."""

    def __init__(
        self,
        db: Database,
        *,
        keep: int,
        recovery_window: int,
        max_age: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if keep < recovery_window:
            raise ValueError("retention must keep at least the recovery window")
        self._db = db
        self.keep = keep
        self.recovery_window = recovery_window
        self.max_age = max_age
        self._clock = clock
        self._cursor = ""  # the last room looked at: the next round starts after it

    async def prune(self) -> int:
        """One round: up to ``ROOMS_PER_ROUND`` rooms; return how many events were deleted."""
        threshold = self.recovery_window if self.max_age is not None else self.keep
        async with self._db.read_one() as conn:
            heads = await eventlog.rooms_longer_than(
                conn, threshold, after_room=self._cursor, limit=ROOMS_PER_ROUND
            )
        self._cursor = heads[-1][0] if len(heads) == ROOMS_PER_ROUND else ""
        deleted = 0
        for room, head in heads:
            deleted += await self.prune_room(room, head)
        return deleted

    async def prune_room(self, room: str, head: int) -> int:
        """Delete ``room``'s prunable prefix, a batch per transaction; return how many."""
        deleted = 0
        while True:
            async with self._db.write() as conn:
                oldest = await eventlog.oldest_offset(conn, room)
                if oldest is None:
                    return deleted
                first_young = None
                if self.max_age is not None:
                    cutoff = int((self._clock() - self.max_age) * 1000)
                    first_young = await eventlog.first_offset_since(
                        conn, room, cutoff, from_offset=oldest, up_to=oldest + PRUNE_BATCH
                    )
                    if first_young is None and oldest + PRUNE_BATCH < head:
                        first_young = oldest + PRUNE_BATCH + 1  # old through the batch at least
                target = prune_through(
                    head=head,
                    oldest=oldest,
                    keep=self.keep,
                    recovery_window=self.recovery_window,
                    first_young=first_young,
                    age_configured=self.max_age is not None,
                )
                if target < oldest:
                    return deleted
                deleted += await eventlog.delete_through(
                    conn, room, min(target, oldest + PRUNE_BATCH - 1)
                )

    async def prune_forever(self) -> None:
        """``prune`` every ``PRUNE_INTERVAL``; a failure is logged and tried again next time."""
        while True:
            await asyncio.sleep(PRUNE_INTERVAL)
            try:
                await self.prune()
            except Exception:
                log.warning("pruning the event log failed", exc_info=True)
