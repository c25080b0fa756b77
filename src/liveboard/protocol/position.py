"""A position in a room's event log: the last offset seen, and the log's lineage (epoch)."""

from __future__ import annotations

from typing import Annotated, Final, TypeAlias

import msgspec

__all__ = ["MAX_OFFSET", "Offset", "Position"]

MAX_OFFSET: Final = 2**63 - 1
"""The largest offset a client may send: what a signed 64-bit database column holds."""

Offset: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=MAX_OFFSET)]
"""An offset as decoded from a client: 0 to ``MAX_OFFSET`` (checked when decoding only)."""


class Position(msgspec.Struct, frozen=True):
    """A position in a room's event log: ``offset`` in log lineage ``epoch``.

    A subscriber's position is the last offset it has seen (``subscribe``'s ``since``); a
    room's head is its last committed offset (0 for a new room). Offsets grow by one per event
    with no gap; a new ``epoch`` means a history that does not continue the old one.
    """

    offset: Offset
    epoch: str
