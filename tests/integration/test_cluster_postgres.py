"""Several processes on PostgreSQL alone: ``serve --workers 2`` on the postgres broker.

The multi-instance tests run on the postgres broker where they are written, parametrised by
broker (``tests.support.cluster.on_brokers``): ``test_cluster_events`` (instances killed mid
burst, the listening connections terminated mid burst, and under ``make soak-brokers`` events
in order on three instances), ``test_cluster_presence`` and ``test_presence_outages`` (under
``make soak-brokers``). Here, under ``make soak-brokers`` (``LIVEBOARD_BROKERS_FULL=1``),
``serve --workers 2`` with no Redis: connections spread over both workers, events and presence
cross them.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration import test_workers
from tests.integration.test_workers import Supervised
from tests.support.cluster import FULL

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

if FULL:
    test_workers_spread_and_share_rooms = pytest.mark.soak(
        test_workers.test_connections_spread_and_events_and_presence_cross_workers
    )


@pytest.fixture(name="supervised")
async def postgres_workers(cluster_database: str, tmp_path: Path) -> AsyncIterator[Supervised]:
    """``serve --workers 2`` on the postgres broker, no Redis."""
    s = Supervised(cluster_database, None, tmp_path)
    try:
        await s.start()
        yield s
    finally:
        await s.board.aclose()
        pids = s.pids()
        s.server.kill()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        print(s.server.log())
