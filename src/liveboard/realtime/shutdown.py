"""How a graceful shutdown paces its 1012 closes (pure: no I/O, no clock)."""

from __future__ import annotations

from collections.abc import Iterator

#: How long a graceful shutdown spreads its 1012 closes over, so clients do not return at once.
SHUTDOWN_SPREAD = 2.0
#: Sessions closed between two pauses of that spread (a pause per session would cost a timer each).
SHUTDOWN_BATCH = 50


def shutdown_pauses(sessions: int, spread: float, batch: int) -> Iterator[float]:
    """For each of ``sessions`` 1012 closes in turn, the pause to take after it, so that the closes
    span ``spread`` seconds whatever their count: one equal pause after each full ``batch``, none
    after the last close. (A per-session step once gated the pauses, so above 2,000 sessions every
    close went out at once.)"""
    gaps = max(sessions - 1, 0) // batch
    pause = spread / gaps if gaps else 0.0
    for index in range(sessions):
        yield pause if index % batch == batch - 1 and index + 1 < sessions else 0.0
