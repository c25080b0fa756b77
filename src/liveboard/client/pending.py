"""The local writes of a ``Board`` that its stream does not reflect yet. Pure: no I/O, no clock.

A *write* is one change the user made (create, move, rename, delete), identified by its
``Idempotency-Key``. ``PendingWrites`` keeps them in the order they were made and answers three
questions, the same way liveboard.js's ``PendingWrites`` does:

* **What to show** — ``columns(tasks, statuses)``: the confirmed tasks in display order, each
  column sorted by ``sort_key``, with every write applied on top, in order (a move places its
  card after ``after_id``, ``None`` = the top, unset = the end).
* **When a write is over** — it stays until the board has applied its event: ``settle(position)``
  drops the answered writes whose answer named an offset at or below ``position.offset`` in that
  epoch; an answer that named no event ends its write at once; a snapshot of another epoch ends
  every answered write (the snapshot is the truth); ``refused`` ends a write and the later writes
  that need it (those of a card whose create was refused). No timers, no origin matching.
* **What to send** — ``next()``: the first write the server has not accepted, so writes go out
  one at a time, in the order they were made. A create's answer gives the card its server id in
  that write and every later one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import msgspec
from msgspec import UNSET, UnsetType

from liveboard.protocol import Position, Task

WriteKind = Literal["create", "move", "rename", "delete"]
#: Where a card goes: after this card's id; ``None`` = the top of the column; unset = the end.
AfterId = str | None | UnsetType


@dataclass
class Write:
    """One local change, from the moment it is made until the stream has applied its event."""

    key: str
    kind: WriteKind
    task_id: str
    title: str | None = None
    status: str | None = None
    after_id: AfterId = UNSET
    #: A rename's base: the card's confirmed version when the user made it (None: the card had
    #: local changes of its own then, so no version is sent and the last write wins).
    version: int | None = None
    answered: bool = False
    at: Position | None = None
    task: Task | None = None


def sort_key(task: Task) -> tuple[float, str, str, str]:
    """A strict order of a column's cards: ``order``, then ``rank`` (which never descends where
    ``order`` ascends: this is the server's rank order, CONTRACT §6.2), then creation time, id."""
    return (task.order, task.rank, task.created_at, task.id)


def _place(column: list[Task], task: Task, after_id: AfterId) -> None:
    if after_id is None:
        column.insert(0, task)
        return
    for i, other in enumerate(column):
        if other.id == after_id:
            column.insert(i + 1, task)
            return
    column.append(task)


class PendingWrites:
    """The writes not yet reflected by the board's stream (see the module docstring)."""

    def __init__(self) -> None:
        self.writes: list[Write] = []

    def add(self, write: Write) -> None:
        self.writes.append(write)

    def get(self, key: str) -> Write | None:
        return next((w for w in self.writes if w.key == key), None)

    def unsent(self) -> list[Write]:
        """The writes the server has not accepted yet."""
        return [w for w in self.writes if not w.answered]

    def is_pending(self, task_id: str) -> bool:
        """True while a write of ``task_id`` is shown but not confirmed by the stream."""
        return any(w.task_id == task_id for w in self.writes)

    def next(self) -> Write | None:
        """The write to send now: the first one the server has not accepted."""
        return next((w for w in self.writes if not w.answered), None)

    def echoed(self, at: Position, task: Task) -> None:
        """This client's own ``task:created`` arrived (at ``at``): if it came before the create's
        answer, it is the write in flight (the first unanswered one: writes are sent one at a
        time), so answer that write from the event; the HTTP answer, when it comes, says the same.

        The echo of a create that *was* answered already (the stream slower than HTTP) must not
        bind the next create: a write that already names ``task.id`` means it was answered, and
        the create in flight must have made this card (same title and column)."""
        if any(w.task_id == task.id for w in self.writes):
            return
        write = self.next()
        if (
            write is not None
            and write.kind == "create"
            and write.task_id.startswith("local:")
            and write.title == task.title
            and write.status == task.status
        ):
            self.answered(write.key, at, task)

    def answered(self, key: str, at: Position | None, task: Task | None = None) -> None:
        """The server accepted ``key``; its event is at ``at`` (None: it emitted none)."""
        write = self.get(key)
        if write is None:
            return
        write.answered = True
        write.at = at
        if write.kind == "create" and task is not None:
            write.task = task
            temp = write.task_id
            for other in self.writes:
                if other.task_id == temp:
                    other.task_id = task.id
                if other.after_id == temp:
                    other.after_id = task.id
        if at is None:
            self.writes.remove(write)

    def refused(self, key: str) -> list[Write]:
        """The server refused ``key``: drop it and the writes that need it; return them."""
        write = self.get(key)
        if write is None:
            return []
        gone = [
            w
            for w in self.writes
            if w is write or (write.kind == "create" and write.task_id in (w.task_id, w.after_id))
        ]
        self.writes = [w for w in self.writes if w not in gone]
        return gone

    def settle(self, position: Position, *, snapshot: bool = False) -> int:
        """The board reflects every event up to ``position``: drop the writes that are in it."""

        def done(w: Write) -> bool:
            if not w.answered or w.at is None:
                return False
            if w.at.epoch == position.epoch:
                return w.at.offset <= position.offset
            return snapshot

        before = len(self.writes)
        self.writes = [w for w in self.writes if not done(w)]
        return before - len(self.writes)

    def columns(self, tasks: Iterable[Task], statuses: list[str]) -> dict[str, list[Task]]:
        """What to show: ``tasks`` by status, in display order, with every write applied."""
        columns: dict[str, list[Task]] = {status: [] for status in statuses}
        for task in tasks:
            columns.setdefault(task.status, []).append(task)
        for column in columns.values():
            column.sort(key=sort_key)
        for write in self.writes:
            found = _find(columns, write.task_id)
            if write.kind == "create":
                self._show_create(columns, write, found)
            elif found is None:
                continue  # deleted meanwhile (by someone else): nothing to show
            elif write.kind == "delete":
                found[0].pop(found[1])
            elif write.kind == "rename":
                column, i = found
                column[i] = msgspec.structs.replace(column[i], title=write.title or column[i].title)
            elif write.status in columns:
                column, i = found
                moved = msgspec.structs.replace(column.pop(i), status=write.status)
                _place(columns[moved.status], moved, write.after_id)
        return columns

    @staticmethod
    def _show_create(
        columns: dict[str, list[Task]], write: Write, found: tuple[list[Task], int] | None
    ) -> None:
        base = found[0].pop(found[1]) if found is not None else write.task
        status = write.status or ""
        if status not in columns:
            return
        task = (
            msgspec.structs.replace(base, id=write.task_id, title=write.title or "", status=status)
            if base is not None
            else Task(
                id=write.task_id,
                project_id="",
                title=write.title or "",
                description="",
                status=status,
                order=0.0,
                rank="",  # placed by after_id, not sorted: the server gives it its rank
                assignee_id=None,
                created_by_id="",
                version=0,
                created_at="",
                updated_at="",
            )
        )
        _place(columns[status], task, write.after_id)


def _find(columns: dict[str, list[Task]], task_id: str) -> tuple[list[Task], int] | None:
    for column in columns.values():
        for i, task in enumerate(column):
            if task.id == task_id:
                return column, i
    return None


_WHAT: dict[WriteKind, str] = {
    "create": "new card",
    "move": "move",
    "rename": "edit",
    "delete": "delete",
}


_NEIGHBOUR = re.compile(r"\b(afterId|beforeId)\b")


def refusal_message(write: Write, status: int, detail: str) -> str:
    """A human sentence for a write the server refused with ``status`` (``detail``: its message)."""
    what = _WHAT[write.kind]
    if status == 409:
        return f"Someone else changed this card — your {what} was undone."
    if status == 404:
        return f"This card was deleted by someone else — your {what} was undone."
    if status == 403:
        return f"You may not change this board any more — your {what} was undone."
    if status == 422 and _NEIGHBOUR.search(detail):
        # A neighbour the card was placed by left its column meanwhile (CONTRACT §6.2).
        return f"The cards around where you put it moved meanwhile — your {what} was undone."
    return f"The server refused your {what} ({detail}) — it was undone."


def is_transient(status: int, reason: str | None) -> bool:
    """True for an answer worth retrying with the same key: overload, timeouts, a lost token
    (the client asks its provider again), the key's first attempt still in flight."""
    return status in (401, 408, 429) or status >= 500 or reason == "idempotency_key_in_flight"
