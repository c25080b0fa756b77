"""Reconnect delays, pure (no I/O, no clock).

``full_jitter(attempt, base, cap)`` is the "full jitter" backoff: a delay drawn uniformly from
``[0, min(cap, base * 2**attempt)]``. Spreading reconnects over the whole interval is what keeps
thousands of clients of a restarted server from coming back in lock-step.

``Backoff`` adds what a server restart (close code 1012) calls for: the server said it is
coming back soon, so for ``restart_window`` seconds every attempt waits a short, flat
``uniform(0, restart_delay)`` instead of doubling. Connects refused while the server is down
used to double the delay each time, which pushed a client's return far past the moment the new
server listened (issue 20 measured a 46-67 s tail for 10,000 clients). The window is known from
the clock the caller passes in; nothing here reads one.

An upgrade answered 503 with ``Retry-After`` (a server busy with a reconnect storm,
``LIVEBOARD_MAX_HANDSHAKES``) is retried after what it asked, bounded by ``MAX_RETRY_AFTER``,
plus ``uniform(0, restart_delay)`` so that the clients it refused together do not come back
together (``Backoff.retry_after``); it does not count as a failed attempt.

What each close code means (reconnect, later, with a new token, or never) is the protocol's
policy: ``liveboard.protocol.close_action``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

#: The exponent stops growing here (``2**attempt`` would otherwise overflow a float one day).
MAX_EXPONENT: Final = 62
#: The longest ``Retry-After`` honoured, seconds: a longer one (or a date) waits this long.
MAX_RETRY_AFTER: Final = 60.0


def parse_retry_after(value: str | None) -> float | None:
    """The seconds of a ``Retry-After`` header: its delta-seconds form, capped at
    ``MAX_RETRY_AFTER``; an HTTP date counts as ``MAX_RETRY_AFTER`` (no clock here); None when
    there is no header or it is neither."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    if "," in text and text.endswith("GMT"):  # an IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT")
        return MAX_RETRY_AFTER
    return None


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
    """Successive reconnect delays; ``reset()`` after a connection proved stable,
    ``server_restarting(now)`` after a 1012, ``connected()`` once a connection succeeds."""

    def __init__(
        self,
        base: float,
        cap: float,
        rng: random.Random | None = None,
        *,
        restart_delay: float = 1.5,
        restart_window: float = 30.0,
    ) -> None:
        if base < 0 or cap < 0 or restart_delay < 0 or restart_window < 0:
            raise ValueError("base, cap, restart_delay and restart_window must be >= 0")
        self.base = base
        self.cap = cap
        self.restart_delay = restart_delay
        self.restart_window = restart_window
        self.attempt = 0
        self._restart_until = float("-inf")
        self._rng = rng or random.Random()

    def server_restarting(self, now: float) -> None:
        """The server closed with 1012: until ``now + restart_window`` delays are short and flat,
        and the exponential count starts again afterwards."""
        self._restart_until = now + self.restart_window
        self.attempt = 0

    def connected(self) -> None:
        """A connection succeeded: the restart, if any, is over."""
        self._restart_until = float("-inf")

    def restarting(self, now: float) -> bool:
        """Whether ``now`` is inside a restart window."""
        return now < self._restart_until

    def next_delay(self, now: float = 0.0) -> float:
        """The delay before the next attempt. Inside a restart window: ``uniform(0,
        restart_delay)``, not counted; otherwise full jitter, and each call counts one attempt."""
        if self.restarting(now):
            return self._rng.uniform(0.0, self.restart_delay)
        delay = full_jitter(self.attempt, self.base, self.cap, self._rng.uniform)
        self.attempt += 1
        return delay

    def retry_after(self, seconds: float) -> float:
        """The delay after an upgrade refused with ``Retry-After: seconds`` (already parsed):
        ``seconds`` (at most ``MAX_RETRY_AFTER``) plus ``uniform(0, restart_delay)``. Not counted
        as a failed attempt: the server is up and said when to come back."""
        wait = min(max(0.0, seconds), MAX_RETRY_AFTER)
        return wait + self._rng.uniform(0.0, self.restart_delay)

    def reset(self) -> None:
        self.attempt = 0
