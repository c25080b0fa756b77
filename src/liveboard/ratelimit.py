"""A token bucket: pure, clock passed in, used for REST callers and WebSocket connections."""

from __future__ import annotations


class TokenBucket:
    """Allows ``rate`` actions per second on average, bursts of up to ``burst``.

    ``take(now)`` spends one token and says whether the action is allowed. ``now`` is a monotonic
    time in seconds supplied by the caller, which keeps this class deterministic under test.
    """

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def full(self, now: float) -> bool:
        """True when the bucket has refilled completely (the caller may forget it)."""
        return self._tokens + max(0.0, now - self._stamp) * self.rate >= self.burst


def take_at(tat: float, now: float, rate: float, burst: float) -> float | None:
    """The same limit as ``TokenBucket(rate, burst)``, held in one float (GCRA).

    ``tat`` is the limit's state: the time at which it would be full again (``0.0`` for a new,
    full one). Returns the new state when the action is allowed, None when it is refused (the
    state is then unchanged). For the many WebSocket connections: one float each instead of an
    object and its four.
    """
    start = tat if tat > now else now
    if start - now > (burst - 1.0) / rate:
        return None
    return start + 1.0 / rate
