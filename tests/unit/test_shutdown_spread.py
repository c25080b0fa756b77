"""The 1012 closes of a graceful shutdown span SHUTDOWN_SPREAD whatever the session count."""

from __future__ import annotations

import pytest

from liveboard.realtime.shutdown import SHUTDOWN_BATCH, SHUTDOWN_SPREAD, shutdown_pauses


@pytest.mark.parametrize("sessions", [51, 100, 101, 2_000, 2_001, 5_000, 10_000, 100_000])
def test_closes_span_the_whole_spread(sessions: int) -> None:
    pauses = list(shutdown_pauses(sessions, SHUTDOWN_SPREAD, SHUTDOWN_BATCH))
    assert len(pauses) == sessions
    assert sum(pauses) == pytest.approx(SHUTDOWN_SPREAD)
    assert pauses[-1] == 0.0  # nothing left to spread after the last close


def test_pauses_are_equal_and_one_per_batch() -> None:
    pauses = list(shutdown_pauses(10_000, SHUTDOWN_SPREAD, SHUTDOWN_BATCH))
    taken = [index for index, pause in enumerate(pauses) if pause]
    assert taken == list(range(SHUTDOWN_BATCH - 1, 10_000 - 1, SHUTDOWN_BATCH))
    assert len({pauses[index] for index in taken}) == 1


@pytest.mark.parametrize("sessions", [0, 1, 49, 50])
def test_one_batch_needs_no_pause(sessions: int) -> None:
    assert sum(shutdown_pauses(sessions, SHUTDOWN_SPREAD, SHUTDOWN_BATCH)) == 0.0
