"""Queries about the order of a column (a project's tasks of one status), by rank.

Ranks compare byte by byte on both databases (``schema.RANK_TYPE``). No rules here:
``tasks.placement`` decides where a task goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import Row, bindparam, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard.protocol.ranks import keys_between
from liveboard.store.schema import tasks


class Ranked(NamedTuple):
    """A task's place in its column."""

    id: str
    rank: str
    order: float


def _ranked(row: Row[Any] | None) -> Ranked | None:
    return None if row is None else Ranked(row.id, row.sort_rank, float(row.sort_order))


def _column(project_id: str, status: str, excluding: str | None) -> Any:
    query = select(tasks.c.id, tasks.c.sort_rank, tasks.c.sort_order).where(
        tasks.c.project_id == project_id, tasks.c.status == status
    )
    return query if excluding is None else query.where(tasks.c.id != excluding)


async def task_in_column(
    conn: AsyncConnection, project_id: str, status: str, task_id: str
) -> Ranked | None:
    """The task ``task_id`` if it is in the column, else None."""
    query = _column(project_id, status, None).where(tasks.c.id == task_id)
    return _ranked((await conn.execute(query)).first())


async def next_after(
    conn: AsyncConnection, project_id: str, status: str, rank: str | None, excluding: str | None
) -> Ranked | None:
    """The first task ranked after ``rank`` (None: the column's first), not ``excluding``."""
    query = _column(project_id, status, excluding)
    if rank is not None:
        query = query.where(tasks.c.sort_rank > rank)
    row = (await conn.execute(query.order_by(tasks.c.sort_rank, tasks.c.id).limit(1))).first()
    return _ranked(row)


async def last_before(
    conn: AsyncConnection, project_id: str, status: str, rank: str | None, excluding: str | None
) -> Ranked | None:
    """The last task ranked before ``rank`` (None: the column's last), not ``excluding``."""
    query = _column(project_id, status, excluding)
    if rank is not None:
        query = query.where(tasks.c.sort_rank < rank)
    order = (tasks.c.sort_rank.desc(), tasks.c.id.desc())
    return _ranked((await conn.execute(query.order_by(*order).limit(1))).first())


async def last_at_or_below(
    conn: AsyncConnection, project_id: str, status: str, order: float, excluding: str | None
) -> Ranked | None:
    """The last task (by rank) whose ``order`` is at most ``order``, not ``excluding``."""
    query = _column(project_id, status, excluding).where(tasks.c.sort_order <= order)
    order_by = (tasks.c.sort_rank.desc(), tasks.c.id.desc())
    return _ranked((await conn.execute(query.order_by(*order_by).limit(1))).first())


async def lock_column(conn: AsyncConnection, project_id: str, status: str) -> list[Ranked] | None:
    """Every task of the column in rank order, their rows locked for this transaction; None if
    another transaction holds one of them (PostgreSQL: it may be waiting for a lock this one
    holds, so this never waits). SQLite runs one writer at a time: never None there."""
    query = (
        _column(project_id, status, None)
        .order_by(tasks.c.sort_rank, tasks.c.id)
        .with_for_update(skip_locked=True)
    )
    locked = [Ranked(r.id, r.sort_rank, float(r.sort_order)) for r in await conn.execute(query)]
    count = await conn.scalar(
        select(func.count()).where(tasks.c.project_id == project_id, tasks.c.status == status)
    )
    return locked if len(locked) == count else None


# A rebalanced task: a new rank, version + 1 (task:moved says so), and its merge record moved
# along when it was current (tasks.merge: fields_at == version).
_RERANK = (
    update(tasks)
    .where(tasks.c.id == bindparam("task_id"))
    .values(
        sort_rank=bindparam("new_rank"),
        version=tasks.c.version + 1,
        updated_at=bindparam("now"),
        fields_at=case(
            (tasks.c.fields_at == tasks.c.version, tasks.c.version + 1), else_=tasks.c.fields_at
        ),
    )
)


async def rerank(conn: AsyncConnection, ranks: Sequence[tuple[str, str]], now: str) -> None:
    """Give each task (id, rank) its new rank, bumping its version, at time ``now``."""
    if ranks:
        params = [{"task_id": tid, "new_rank": rank, "now": now} for tid, rank in ranks]
        await conn.execute(_RERANK, params)


async def ranks_backfill(conn: AsyncConnection) -> None:
    """Rank every task without a rank, per column, in the order the columns were listed in
    before ranks (``order``, ``created_at``, ``id``), after the column's ranked tasks."""
    rows = await conn.execute(
        select(tasks.c.id, tasks.c.project_id, tasks.c.status)
        .where(tasks.c.sort_rank.is_(None))
        .order_by(
            tasks.c.project_id,
            tasks.c.status,
            tasks.c.sort_order,
            tasks.c.created_at,
            tasks.c.id,
        )
    )
    columns: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        columns.setdefault((row.project_id, row.status), []).append(row.id)
    fill = update(tasks).where(tasks.c.id == bindparam("task_id"))
    for (project_id, status), ids in columns.items():
        last = await conn.scalar(
            select(func.max(tasks.c.sort_rank)).where(
                tasks.c.project_id == project_id, tasks.c.status == status
            )
        )
        ranks = keys_between(last, None, len(ids))
        params = [{"task_id": t, "filled_rank": r} for t, r in zip(ids, ranks, strict=True)]
        await conn.execute(fill.values(sort_rank=bindparam("filled_rank")), params)
