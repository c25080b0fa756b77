"""The reconnect policy, pure (no I/O, no clock): backoff delays and what each close code means.

``full_jitter(attempt, base, cap)`` is the "full jitter" backoff: a delay drawn uniformly from
``[0, min(cap, base * 2**attempt)]``. Spreading reconnects over the whole interval is what keeps
thousands of clients of a restarted server from coming back in lock-step.

``close_action(code)`` maps a WebSocket close code (CONTRACT §4) to what the client does next.
"""

from __future__ import annotations

import enum
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


class CloseAction(enum.Enum):
    """What to do after the server closed the socket (or the link dropped)."""

    RECONNECT = "reconnect"
    """Reconnect with backoff (dropped link, 1000/1001, 1011, 4008, anything unknown)."""
    RECONNECT_LATER = "reconnect_later"
    """The server is restarting (1012) or overloaded (1013): backoff plus a random delay."""
    NEW_TOKEN = "new_token"
    """The token expired (4001): get a new one from the provider and reconnect; a fixed token
    cannot be renewed, so the client stops."""
    FATAL = "fatal"
    """A client bug the server will refuse again (1002, 1003, 1007, 1008, 1009): stop."""


CLOSE_TOKEN_EXPIRED: Final = 4001
CLOSE_SLOW_CONSUMER: Final = 4008
CLOSE_RESTARTING: Final = 1012
_FATAL: Final = frozenset({1002, 1003, 1007, 1008, 1009, 1010})
_LATER: Final = frozenset({CLOSE_RESTARTING, 1013})


def close_action(code: int | None) -> CloseAction:
    """The client's reaction to close ``code`` (None: the link dropped without a close frame)."""
    if code in _FATAL:
        return CloseAction.FATAL
    if code in _LATER:
        return CloseAction.RECONNECT_LATER
    if code == CLOSE_TOKEN_EXPIRED:
        return CloseAction.NEW_TOKEN
    return CloseAction.RECONNECT
