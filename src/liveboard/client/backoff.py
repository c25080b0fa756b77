"""Reconnect delays, pure (no I/O, no clock).

``full_jitter(attempt, base, cap)`` is the "full jitter" backoff: a delay drawn uniformly from
``[0, min(cap, base * 2**attempt)]``. Spreading reconnects over the whole interval is what keeps
thousands of clients of a restarted server from coming back in lock-step.

What each close code means (reconnect, later, with a new token, or never) is the protocol's
policy: ``liveboard.protocol.close_action``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

#: The exponent stops growing here (``2**attempt`` would otherwise overflow a float one day).
MAX_EXPONENT: Final = 62


def backoff_ceiling(attempt: int, base: float, cap: float) -> float:
    """The upper bound of the ``attempt``-th delay (0-based): ``min(cap, base * 2**attempt)``."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must be >= 0")
    return min(cap, base * float(2 ** min(attempt, MAX_EXPONENT)))


def full_jitter(
    attempt: int,
    base: float,
    cap: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """A delay in ``[0, min(cap, base * 2**attempt)]``, uniformly distributed."""
    ceiling = backoff_ceiling(attempt, base, cap)
    return min(ceiling, max(0.0, uniform(0.0, ceiling)))


class Backoff:
    """Successive reconnect delays; ``reset()`` after a connection proved stable."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        if base < 0 or cap < 0:
            raise ValueError("base and cap must be >= 0")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one attempt."""
        delay = full_jitter(self.attempt, self.base, self.cap, self._rng.uniform)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
