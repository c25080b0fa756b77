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
        return Clock.at(time.time_ns() // 1_000_000)

    @staticmethod
    def at(ms: int) -> Clock:
        """The reading at ``ms`` (Unix milliseconds): ``…T11:46:28.123Z``."""
        return Clock(iso=_second_prefix(ms // 1000) + f"{ms % 1000:03d}Z", ms=ms)


_last_second: list[tuple[int, str]] = [(-1, "")]


def _second_prefix(second: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.`` of a Unix second; the last one is kept (``strftime`` costs
    more than the rest of a reading, and most readings fall in the second before)."""
    cached, prefix = _last_second[0]
    if cached != second:
        prefix = datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _last_second[0] = (second, prefix)
    return prefix


def new_id(prefix: str) -> str:
    """An opaque id: a short prefix and 96 random bits (URL- and room-name-safe)."""
    return f"{prefix}_{secrets.token_urlsafe(12)}"
