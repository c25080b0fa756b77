"""The process's open-files limit (``RLIMIT_NOFILE``): raised at start, watched while serving.

Every connection is a file descriptor. Many systems start services with a soft limit of 1,024
and a hard limit far above it; at the soft limit ``accept`` fails and every new REST call and
WebSocket fails with it, so ``serve`` raises the soft limit to the hard one (which an
unprivileged process may do) and logs what it has. Linux does not accept an infinite soft
limit for open files; the kernel's ceiling (``/proc/sys/fs/nr_open``) stands in for it.

The event loop's accept does not report running out (libuv closes the connection it cannot
keep and says nothing), so ``watch_open_files`` counts the open descriptors every few seconds
and logs when they near the limit and when they are back below it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from pathlib import Path

log = logging.getLogger("liveboard")

#: Below this many descriptors an instance serving WebSockets is likely to run out.
LOW_LIMIT = 4096
#: Seconds between two counts of the open descriptors.
WATCH_INTERVAL = 5.0
#: Share of the limit in use at which a warning is logged, and below which it is over.
HIGH_WATER = 0.9
LOW_WATER = 0.8
_NR_OPEN = Path("/proc/sys/fs/nr_open")
_FD_DIR = "/proc/self/fd"


def target_soft_limit(soft: int, hard: int, ceiling: int) -> int:
    """The soft limit to ask for: the hard limit (``ceiling`` if that is infinite), never
    lower than ``soft``. Pure."""
    want = ceiling if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY:
        return soft
    return max(soft, want)


def _kernel_ceiling() -> int:
    try:
        return int(_NR_OPEN.read_text())
    except (OSError, ValueError):
        return 1 << 20


def raise_open_files_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; log the result; return the limit
    in force. A failure to raise it is logged as a warning, never fatal."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = target_soft_limit(soft, hard, _kernel_ceiling())
    if target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, target, exc)
            target = soft
        else:
            log.info("open files limit raised from %d to %d", soft, target)
    else:
        log.info("open files limit: %d", soft)
    if target < LOW_LIMIT:
        log.warning(
            "open files limit is %d (the hard limit): each connection takes one; raise it"
            " (systemd LimitNOFILE=, ulimit -Hn)",
            target,
        )
    return target


def open_files() -> int:
    """Descriptors open in this process now (Linux), or -1 where that cannot be read."""
    try:
        return len(os.listdir(_FD_DIR)) - 1  # less the one listdir itself opened
    except OSError:
        return -1


def open_files_limit() -> int:
    """The soft ``RLIMIT_NOFILE`` in force."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Watermark:
    """Whether usage is high, with hysteresis: high at ``high`` of the limit, over below
    ``low``, so that usage hovering at one mark does not log a line per count. Pure."""

    __slots__ = ("_high", "_low", "high")

    def __init__(self, high: float = HIGH_WATER, low: float = LOW_WATER) -> None:
        self._high = high
        self._low = low
        self.high = False

    def update(self, used: int, limit: int) -> bool | None:
        """True when usage has just become high, False when it has just stopped, else None."""
        if used < 0 or limit <= 0 or limit == resource.RLIM_INFINITY:
            return None
        if not self.high and used >= self._high * limit:
            self.high = True
            return True
        if self.high and used < self._low * limit:
            self.high = False
            return False
        return None


async def watch_open_files(interval: float = WATCH_INTERVAL) -> None:
    """Until cancelled: log a warning when open descriptors reach ``HIGH_WATER`` of the limit
    and an info line when they are back under ``LOW_WATER``."""
    mark = Watermark()
    while True:
        used, limit = open_files(), open_files_limit()
        change = mark.update(used, limit)
        if change is True:
            log.warning(
                "%d of %d file descriptors open: at the limit new connections fail"
                " (see liveboard_unauthenticated_connections, LIVEBOARD_MAX_PENDING_PER_ADDRESS)",
                used,
                limit,
            )
        elif change is False:
            log.info("%d of %d file descriptors open: below the limit again", used, limit)
        await asyncio.sleep(interval)
