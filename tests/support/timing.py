"""Time in tests: timeouts scaled for the machine, and polling until a condition holds.

``LIVEBOARD_TEST_TIMEOUT_FACTOR`` (default 1) multiplies every timeout that goes through
``timeout``, for slow machines.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

TIMEOUT_FACTOR = float(os.environ.get("LIVEBOARD_TEST_TIMEOUT_FACTOR", "1"))


def timeout(seconds: float) -> float:
    """A test timeout scaled for the machine."""
    return seconds * TIMEOUT_FACTOR


async def wait_until(
    predicate: Callable[[], Any], wait: float = 5.0, interval: float = 0.02
) -> None:
    """Poll an (async or sync) predicate until it is true."""
    deadline = time.monotonic() + timeout(wait)
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
