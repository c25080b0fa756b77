"""Where a created or moved task goes in its column (CONTRACT §6.2), decided by the server.

A request names a ``Slot``: by neighbours (``afterId`` and/or ``beforeId``), by a §3 numeric
``order``, or neither (the end of the column). ``place`` turns it into the task's ``rank`` and
``order`` inside the caller's write transaction, after taking the project room's lock
(``eventlog.lock_room``): every writer of the room waits for it, so no other create or move in
the project can change the column between the read of the neighbours and the commit, on one
instance or many. Two drops into one slot at the same moment therefore get two distinct ranks,
one after the other, in the order their transactions took the lock.

Rules (docs/protocol.md, "Placement"):

* ``afterId``: directly after that task; ``null``: the top. It wins over ``beforeId``, which
  then only has to be below it (cards dropped in between since the client looked are kept
  above). ``beforeId`` alone: directly before that task; ``null``: the end.
* Either id must be a task in the target column other than the one placed: else a 422.
* ``order`` (§3): after every task whose ``order`` is at most it, before the others; the task
  keeps that ``order``. It cannot be combined with neighbours (422).
* By neighbours or at the end, ``order`` is chosen between the neighbours' (``order_between``):
  ``order`` never descends along ranks, so a §3 client sorting by it sees the same order,
  ties aside.
* A move to where the task already is changes nothing (``Placement.unchanged``).
* A new rank longer than ``ranks.REBALANCE_LENGTH`` rebalances the column: every task gets a
  short rank, in the same order, and a ``task:moved`` each (``Placement.reranked``). If a task of
  the column is locked by a writer that waits for this room (PostgreSQL), the rebalance waits
  for a later placement and the long rank is kept, up to ``ranks.MAX_RANK_LENGTH``; beyond it,
  a 409 ``conflict`` (retry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

from msgspec import UNSET, UnsetType
from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard import errors
from liveboard.protocol import project_room
from liveboard.protocol.ranks import MAX_RANK_LENGTH, REBALANCE_LENGTH, key_between, keys_between
from liveboard.store import columns, eventlog
from liveboard.store.columns import Ranked

__all__ = ["END", "Placement", "Reranked", "Slot", "moved_data", "order_between", "place"]


@dataclass(frozen=True, slots=True)
class Slot:
    """Where a request asks for a task: ``UNSET`` neighbours and no ``order`` is the end."""

    after_id: str | UnsetType | None = UNSET
    before_id: str | UnsetType | None = UNSET
    order: float | None = None

    @property
    def by_neighbours(self) -> bool:
        return self.after_id is not UNSET or self.before_id is not UNSET


#: The end of the column: a request that names no place.
END: Final = Slot()


@dataclass(frozen=True, slots=True)
class Reranked:
    """A task of the column given a new rank by a rebalance (same column, same neighbours)."""

    task_id: str
    status: str
    rank: str
    order: float
    after_id: str | None


@dataclass(frozen=True, slots=True)
class Placement:
    """The task's rank and ``order``, the task it follows (None: the top), and the tasks a
    rebalance re-ranked (saved and announced by the caller, before the task's own change)."""

    rank: str
    order: float
    after_id: str | None
    unchanged: bool = False
    reranked: list[Reranked] = field(default_factory=list)

    def moved_data(self, task_id: str, from_status: str, to_status: str) -> dict[str, Any]:
        """The ``data`` of the ``task:moved`` that places the task here."""
        return moved_data(task_id, from_status, to_status, self.order, self.rank, self.after_id)

    def rerank_events(self) -> list[dict[str, Any]]:
        """The ``data`` of a ``task:moved`` per re-ranked task (already saved by ``place``),
        to be appended before the change that placed the task."""
        return [
            moved_data(r.task_id, r.status, r.status, r.order, r.rank, r.after_id)
            for r in self.reranked
        ]


def moved_data(
    task_id: str, from_status: str, to_status: str, order: float, rank: str, after_id: str | None
) -> dict[str, Any]:
    """A ``task:moved`` event's ``data`` (``protocol.TaskMovedData``)."""
    return {
        "taskId": task_id,
        "fromStatus": from_status,
        "toStatus": to_status,
        "order": order,
        "rank": rank,
        "afterId": after_id,
    }


def order_between(lower: float | None, upper: float | None) -> float:
    """A §3 ``order`` at least ``lower`` and at most ``upper`` (None: open). At an end it is a
    whole step away (as before ranks: the end of a column is ``floor(last) + 1``); between two
    it is the midpoint, which a double may round onto either bound: ties are what ranks fix."""
    if lower is None and upper is None:
        return 1.0
    if upper is None:
        assert lower is not None
        return math.floor(lower) + 1.0
    if lower is None:
        return math.ceil(upper) - 1.0
    return lower + (upper - lower) / 2


async def place(
    conn: AsyncConnection,
    project_id: str,
    status: str,
    slot: Slot,
    moving: Ranked | None = None,
    moving_status: str | None = None,
    now: str = "",
) -> Placement:
    """The place of a new task (``moving`` None) or of ``moving`` (now in ``moving_status``) in
    column ``status``, under the project room's lock, which this takes (see the module). A
    rebalance is saved here (its tasks' ``updatedAt``: ``now``); the caller announces it."""
    await eventlog.lock_room(conn, project_room(project_id))
    excluding = None if moving is None else moving.id
    if slot.by_neighbours:
        if slot.order is not None:
            raise errors.validation_error("order", "give either order or afterId/beforeId")
        lower, upper = await _neighbours(conn, project_id, status, slot, excluding)
    elif slot.order is not None:
        lower = await columns.last_at_or_below(conn, project_id, status, slot.order, excluding)
        upper = await columns.next_after(
            conn, project_id, status, None if lower is None else lower.rank, excluding
        )
    else:
        lower, upper = await columns.last_before(conn, project_id, status, None, excluding), None
    after_id = None if lower is None else lower.id
    if moving is not None and moving_status == status:
        same_order = slot.order is None or slot.order == moving.order
        if same_order and _between(moving.rank, lower, upper):
            return Placement(moving.rank, moving.order, after_id, unchanged=True)
    order = slot.order if slot.order is not None else _order_of(lower, upper)
    rank = key_between(None if lower is None else lower.rank, None if upper is None else upper.rank)
    if len(rank) <= REBALANCE_LENGTH:
        return Placement(rank, order, after_id)
    locked = await columns.lock_column(conn, project_id, status)
    if locked is None:
        if len(rank) > MAX_RANK_LENGTH:
            raise errors.conflict("the column is being rearranged by another change; retry")
        return Placement(rank, order, after_id)
    placed = _rebalanced(locked, status, lower, upper, order)
    await columns.rerank(conn, [(r.task_id, r.rank) for r in placed.reranked], now)
    return placed


def _between(rank: str, lower: Ranked | None, upper: Ranked | None) -> bool:
    return (lower is None or lower.rank < rank) and (upper is None or rank < upper.rank)


def _order_of(lower: Ranked | None, upper: Ranked | None) -> float:
    return order_between(
        None if lower is None else lower.order, None if upper is None else upper.order
    )


async def _neighbours(
    conn: AsyncConnection, project_id: str, status: str, slot: Slot, excluding: str | None
) -> tuple[Ranked | None, Ranked | None]:
    """The tasks the placed one goes between (None: an end), from ``afterId``/``beforeId``."""
    after = await _anchor(conn, project_id, status, slot.after_id, "afterId", excluding)
    before = await _anchor(conn, project_id, status, slot.before_id, "beforeId", excluding)
    if after is not None and before is not None and before.rank <= after.rank:
        raise errors.validation_error("beforeId", "must be below afterId in the column")
    if slot.after_id is not UNSET:  # afterId wins: directly after it (null: the top)
        rank = None if after is None else after.rank
        return after, await columns.next_after(conn, project_id, status, rank, excluding)
    # beforeId alone: directly before it (null: the end)
    rank = None if before is None else before.rank
    return await columns.last_before(conn, project_id, status, rank, excluding), before


async def _anchor(
    conn: AsyncConnection,
    project_id: str,
    status: str,
    task_id: str | UnsetType | None,
    name: str,
    excluding: str | None,
) -> Ranked | None:
    if not isinstance(task_id, str):
        return None
    if task_id == excluding:
        raise errors.validation_error(name, "must be another task than the one placed")
    found = await columns.task_in_column(conn, project_id, status, task_id)
    if found is None:
        raise errors.validation_error(name, f"must be a task in the column {status!r}")
    return found


def _rebalanced(
    column: list[Ranked], status: str, lower: Ranked | None, upper: Ranked | None, order: float
) -> Placement:
    """Fresh, short ranks for the column as it is (the re-ranked tasks keep their order and
    neighbours: each ``Reranked`` names the task before it), then the placed task's rank
    between its neighbours' new ranks."""
    ranks = keys_between(None, None, len(column))
    new_rank = {task.id: rank for task, rank in zip(column, ranks, strict=True)}
    reranked: list[Reranked] = []
    previous: str | None = None
    for task, rank in zip(column, ranks, strict=True):
        if rank != task.rank:
            reranked.append(Reranked(task.id, status, rank, task.order, previous))
        previous = task.id
    rank = key_between(
        None if lower is None else new_rank[lower.id], None if upper is None else new_rank[upper.id]
    )
    return Placement(rank, order, None if lower is None else lower.id, reranked=reranked)
