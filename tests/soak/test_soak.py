"""A short soak (≈ 30 s) in the regular suite; ``make soak`` runs the long one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.soak.runner import soak

DURATION = float(os.environ.get("LIVEBOARD_SOAK_SECONDS", "30"))


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_short_soak(tmp_path: Path) -> None:
    report = await soak(tmp_path, DURATION, rate=15.0, churners=2)
    assert report.mutations > DURATION * 5
    assert report.churn_connections > 0
    assert report.stream_problems == []
    for gauges in report.gauges_after:
        # Every client has gone: nothing may be left behind (connections, rooms, presence),
        # checked once the gauges settle (the runner polls for up to 5 s; see its comment).
        assert gauges["liveboard_connections"] == 0.0
        assert gauges["liveboard_subscriptions"] == 0.0
        assert gauges["liveboard_presence_rooms"] == 0.0
    rss = [sample.rss_kb for sample in report.samples]
    warm = rss[len(rss) // 4]
    for before, after in zip(warm, rss[-1], strict=True):
        assert after < before + 64 * 1024, "RSS grew by more than 64 MiB during the soak"
