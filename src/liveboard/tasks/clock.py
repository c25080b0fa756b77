"""The service's ids and times: opaque random ids, and one reading of the clock in both forms."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Clock", "new_id"]


@dataclass(frozen=True, slots=True)
class Clock:
    """One reading of the wall clock, as the API's ISO text and as event milliseconds."""

    iso: str
    ms: int

    @staticmethod
    def now() -> Clock:
        ms = time.time_ns() // 1_000_000
        moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
        return Clock(iso=moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z", ms=ms)


def new_id(prefix: str) -> str:
    """An opaque id: a short prefix and 96 random bits (URL- and room-name-safe)."""
    return f"{prefix}_{secrets.token_urlsafe(12)}"
