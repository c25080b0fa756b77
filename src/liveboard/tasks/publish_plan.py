"""Where each event of a publish batch goes: the pure arithmetic of a group commit.

A batch (``tasks.publish_batch``) is several published events appended in one transaction.
Once it holds the row locks of its rooms' heads it knows each head; this module decides,
without I/O, the offset of every event and each room's new head:

* The events of one room take that room's next offsets in the order they are given (the
  order their requests arrived), with no gap and no duplicate: head + 1, head + 2, ….
* An event whose room has no head (no such room), or whose project room's workspace head is
  unknown (no such project), is placed nowhere and takes no offset: the others of its room
  still follow one another from the head.
* The new head of each room is its last placed offset; a room none of whose events was placed
  keeps its head and is left out.

Each placed event of a project room names its workspace room's head as read under its share
lock (``workspace_offset``, as ``store.eventlog.append_event`` does for a single event).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from liveboard.protocol import Position

__all__ = ["Placement", "Plan", "plan_batch"]


class Placement(NamedTuple):
    """Where one event of the batch goes."""

    offset: int
    epoch: str
    #: The head of the project room's workspace room (0 for a workspace room's event).
    workspace_offset: int


class Plan(NamedTuple):
    """The batch's placements (one per event, in the order given; None: nowhere) and the new
    head of every room that gets an event."""

    placements: list[Placement | None]
    heads: dict[str, int]


def plan_batch(
    rooms: Sequence[str],
    heads: Mapping[str, Position],
    workspace_heads: Mapping[str, int] | None = None,
) -> Plan:
    """Place the events whose rooms are ``rooms`` (one entry per event, in order).

    ``heads``: each existing room's head, read under its row lock. ``workspace_heads``: for a
    project room (``project:{id}``), the head of its workspace room, read under a share lock;
    a project room absent from it has no project and its events are placed nowhere. None:
    the batch has no project room."""
    placements: list[Placement | None] = []
    new_heads: dict[str, int] = {}
    for room in rooms:
        head = heads.get(room)
        depended = 0
        if room.startswith("project:"):
            found = None if workspace_heads is None else workspace_heads.get(room)
            if found is None:
                head = None
            else:
                depended = found
        if head is None:
            placements.append(None)
            continue
        offset = new_heads.get(room, head.offset) + 1
        new_heads[room] = offset
        placements.append(Placement(offset, head.epoch, depended))
    return Plan(placements, new_heads)
