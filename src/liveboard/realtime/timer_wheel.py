"""One loop timer for the deadlines of every connection: heartbeats and token expiries.

A timer handle per connection costs a few hundred bytes (uvloop's handle and its libuv timer),
times tens of thousands of idle sockets. ``Wheel`` keeps each connection in one bucket per tick
instead: a deadline at loop time ``t`` goes to bucket ``ceil(t / tick)``, and one loop timer
that runs every ``tick`` seconds while anything is scheduled hands each due bucket's entries to
their ``_due`` method.

Guarantees:

* An entry is never called before its deadline (less ``SLACK``, the loop clock's granularity),
  and, on a loop that is not stalled, at most one tick after it.
* Each entry has at most one deadline: scheduling it again moves it; ``cancel`` removes it.
  Moving or removing is O(1) (each entry remembers its bucket).
* Entries due in the same tick are called in the order they were scheduled.
* The wheel holds no loop timer while it is empty, and is forgotten then (``wheel_for`` makes
  a new one): callers look the wheel up with ``wheel_for`` each time rather than keep it.

``Wheel`` is pure (no loop, no clock): ``due(now)`` returns what is due. ``LoopWheel`` drives it
from a loop's clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Protocol

log = logging.getLogger("liveboard.ws")

#: An entry counts as due this much before its time (the loop's clock granularity), seconds.
SLACK = 0.001
#: The longest tick: 4001 must go out within 1 s after ``exp`` (CONTRACT §4), with room to spare.
MAX_TICK = 0.25
#: The shortest tick, whatever the settings (tests run heartbeats of a fraction of a second).
MIN_TICK = 0.01


class Timed(Protocol):
    """What the wheel schedules: an object with a bucket slot and a callback."""

    #: The bucket the wheel put it in (None: not scheduled). Only the wheel writes it.
    wheel_bucket: int | None

    def _due(self) -> None: ...


class Wheel:
    """Buckets of entries keyed by tick number; pure."""

    __slots__ = ("_buckets", "_next", "tick")

    def __init__(self, tick: float) -> None:
        if not tick > 0:
            raise ValueError("tick must be positive")
        self.tick = tick
        # tick number → its entries (an ordered set: a dict with None values)
        self._buckets: dict[int, dict[Timed, None]] = {}
        self._next: int | None = None  # the first bucket not yet handed out

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())

    @property
    def empty(self) -> bool:
        return not self._buckets

    def schedule(self, entry: Timed, when: float) -> None:
        """Call ``entry`` at ``when`` (or within the tick after), instead of any earlier plan."""
        self.cancel(entry)
        key = math.ceil((when - SLACK) / self.tick)
        if self._next is not None and key < self._next:
            key = self._next  # already past: the next tick
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = {}
        bucket[entry] = None
        entry.wheel_bucket = key

    def cancel(self, entry: Timed) -> None:
        key = entry.wheel_bucket
        if key is None:
            return
        entry.wheel_bucket = None
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.pop(entry, None)
            if not bucket:
                del self._buckets[key]

    def due(self, now: float) -> list[Timed]:
        """Remove and return the entries due at ``now``, earliest bucket first."""
        last = math.floor((now + SLACK) / self.tick)
        first = self._next
        if first is None:
            first = min(self._buckets, default=last)
        found: list[Timed] = []
        buckets = self._buckets
        if last - first > len(buckets):  # a long stall: visit the buckets, not every tick
            keys = sorted(key for key in buckets if key <= last)
        else:
            keys = [key for key in range(first, last + 1) if key in buckets]
        for key in keys:
            for entry in buckets.pop(key):
                entry.wheel_bucket = None
                found.append(entry)
        self._next = last + 1
        return found


class LoopWheel:
    """A ``Wheel`` on a running loop: one timer, every tick, while anything is scheduled."""

    __slots__ = ("_handle", "_key", "_loop", "wheel")

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float) -> None:
        self._loop = loop
        self.wheel = Wheel(tick)
        self._handle: asyncio.TimerHandle | None = None
        self._key = (loop, tick)

    def schedule(self, entry: Timed, when: float) -> None:
        """Call ``entry._due()`` at loop time ``when`` (at most one tick late)."""
        self.wheel.schedule(entry, when)
        if self._handle is None:
            _WHEELS[self._key] = self
            self._arm()

    def cancel(self, entry: Timed) -> None:
        self.wheel.cancel(entry)

    def _arm(self) -> None:
        tick = self.wheel.tick
        # Just past the tick boundary, so that a bucket's deadlines have passed when it runs,
        # even if the loop fires a timer a little early (its clock granularity).
        at = (math.floor(self._loop.time() / tick) + 1) * tick + SLACK
        self._handle = self._loop.call_at(at, self._run)

    def _run(self) -> None:
        self._handle = None
        found = self.wheel.due(self._loop.time())
        if not self.wheel.empty:
            self._arm()
        for entry in found:  # each may schedule itself again (and arm the timer)
            try:
                entry._due()
            except Exception:  # one connection's bug must not stop every other's timers
                log.exception("timer of %r failed", entry)
        if self._handle is None and _WHEELS.get(self._key) is self:
            del _WHEELS[self._key]  # empty: no timer, no reference from here


#: The wheel of each running loop and tick while it has entries.
_WHEELS: dict[tuple[asyncio.AbstractEventLoop, float], LoopWheel] = {}


def tick_for(heartbeat_interval: float, heartbeat_timeout: float) -> float:
    """The tick for these settings: a quarter of the shorter heartbeat period, within bounds."""
    return max(MIN_TICK, min(MAX_TICK, heartbeat_interval / 4, heartbeat_timeout / 4))


def cancel(loop: asyncio.AbstractEventLoop, tick: float, entry: Timed) -> None:
    """Remove ``entry`` from the wheel of ``loop`` and ``tick``, if it is scheduled there."""
    if entry.wheel_bucket is None:
        return
    wheel = _WHEELS.get((loop, tick))
    if wheel is not None:
        wheel.cancel(entry)


def wheel_for(loop: asyncio.AbstractEventLoop, tick: float) -> LoopWheel:
    """The shared wheel of ``loop`` with this ``tick`` (one per loop and tick)."""
    key = (loop, tick)
    wheel = _WHEELS.get(key)
    if wheel is None:
        wheel = _WHEELS[key] = LoopWheel(loop, tick)
    return wheel
