"""The process's open-files limit (``RLIMIT_NOFILE``), raised at start.

Every connection is a file descriptor. Many systems start services with a soft limit of 1,024
and a hard limit far above it; at the soft limit ``accept`` fails and every new REST call and
WebSocket fails with it, so ``serve`` raises the soft limit to the hard one (which an
unprivileged process may do) and logs what it has. Linux does not accept an infinite soft
limit for open files; the kernel's ceiling (``/proc/sys/fs/nr_open``) stands in for it.
"""

from __future__ import annotations

import logging
import resource
from pathlib import Path

log = logging.getLogger("liveboard")

#: Below this many descriptors an instance serving WebSockets is likely to run out.
LOW_LIMIT = 4096
_NR_OPEN = Path("/proc/sys/fs/nr_open")


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
