"""A task's edit or deletion without holding its row lock across a round trip (PostgreSQL).

``TaskService.update_task`` and ``delete_task`` try this first on PostgreSQL. It reads the task
(no lock, one statement), decides with the same rules as the locked path (``tasks.merge``,
``tasks.access``) and then writes with one autocommitted statement that applies only if the
task is still at the version read (``store.task_writes``): the change, its event and, with an
``Idempotency-Key``, the answer stored under it. The task's and the room's row locks live
within that statement, so a burst of changes to one task no longer queues behind round trips
to this process (issue 20: a stalled writer used to hold the task for two or three of them,
and every other writer of the task waited, a convoy).

Guarantees, the locked path's (``TaskService``):

* The verdict is the locked path's: ``merge.decide`` on the row as ``read`` saw it, and the
  write applies only if the row is still at that version, so what was decided is what the
  row was when it changed. A write that finds the task changed since writes nothing and
  returns None (``NOT_APPLIED``); the caller tries again (``ATTEMPTS``), then takes the locked
  path, which decides again on the locked row: nothing is written twice, nothing is lost.
* The change, its event (gap-free offset, the workspace head it depends on) and the key's
  answer commit in one statement or not at all; a key the caller already holds undoes it all
  (``KeyTakenError``, as ``Receipt.settle``).
* The event is handed to the publisher in the room's offset order (``tasks.publish_order``:
  its ticket is reserved before the statement is sent).
* Writers of one task on this instance take turns (``Turns``) for their read and write, so
  they do not miss each other's changes; no database lock is held while one waits.
* Declined (None, the locked path then runs): an edit that changes nothing but carries a key
  (its answer is stored by the locked path's transaction).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

from liveboard import errors
from liveboard.auth import Actor
from liveboard.protocol import (
    TASK_DELETED,
    TASK_UPDATED,
    BrokerEvent,
    Task,
    project_room,
    to_builtins,
    workspace_room,
)
from liveboard.store.eventlog import encode_event_data
from liveboard.store.task_writes import Appended, KeyHeldError, Read, Statements, StoredAnswer
from liveboard.store.task_writes import event_params as _event_params
from liveboard.tasks import access, merge
from liveboard.tasks.access import refuse_service as task_user
from liveboard.tasks.changes import TaskChanges, bumped, diff, wire_changes
from liveboard.tasks.clock import Clock
from liveboard.tasks.publish_order import Outbox
from liveboard.tasks.receipts import Answer, KeyTakenError, Receipt
from liveboard.tasks.writer import EventWriter

__all__ = ["ATTEMPTS", "NOT_APPLIED", "SingleWrites", "Turns"]

#: What a single write returns when the locked path must run instead.
NOT_APPLIED: Final = None
#: Reads and writes tried before the locked path. Another try costs two round trips, the
#: locked path four (BEGIN, lock, change and event, COMMIT); a second miss in a row means the
#: task is busy, where the lock's queue serves its writers in turn.
ATTEMPTS: Final = 2


class Turns:
    """One turn at a time per key (a task), in this process: writers of one task on this
    instance take turns for their read and write instead of sending statements that would
    miss each other's changes (each miss costs two round trips, and under load misses breed
    more load). No database lock is held while a writer waits here. A key with nobody in it
    has no entry."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def of(self, key: str) -> _Turn:
        """``async with turns.of(key):`` the block runs in ``key``'s turn."""
        return _Turn(self._locks, key)

    def __len__(self) -> int:
        """Keys with a writer in or waiting (for tests: 0 when all are done)."""
        return len(self._locks)


class _Turn:
    """One writer's turn of ``Turns.of`` (a class, not ``asynccontextmanager``: a few µs less
    per write)."""

    __slots__ = ("_key", "_lock", "_locks", "_users")

    def __init__(self, locks: dict[str, tuple[asyncio.Lock, list[int]]], key: str) -> None:
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._key)
        if entry is None:
            entry = self._locks[self._key] = (asyncio.Lock(), [0])
        self._lock, self._users = entry
        self._users[0] += 1
        try:
            await self._lock.acquire()
        except BaseException:  # cancelled while waiting: no turn, leave
            self._leave()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()
        self._leave()

    def _leave(self) -> None:
        self._users[0] -= 1
        if not self._users[0]:
            del self._locks[self._key]


class SingleWrites:
    """The single-statement edits and deletions of one PostgreSQL database."""

    def __init__(self, writer: EventWriter, clock: Callable[[], Clock]) -> None:
        self._writer = writer
        self._clock = clock
        self._sql = Statements(writer.db.table)
        self.turns = Turns()

    async def _read(
        self, driver: Any, task_id: str, user_id: str, assignee_id: str | None = None
    ) -> tuple[Read, dict[str, int]]:
        found = await self._sql.read(driver, task_id, user_id, assignee_id)
        if found is None or found.role is None:  # no such task, or not a member: the same 404
            raise errors.not_found("task not found")
        task = found.task
        fields = merge.known_field_versions(found.field_versions, found.fields_at, task.version)
        return found, fields

    async def update_task(
        self,
        actor: Actor,
        task_id: str,
        changes: TaskChanges,
        expected_version: int | None,
        receipt: Receipt | None,
    ) -> merge.Edited | None:
        """``TaskService.update_task`` in one write (see the module); None: not applied."""
        user_id = access.refuse_service(actor)
        assignee = changes.assignee_id if isinstance(changes.assignee_id, str) else None
        async with self.turns.of(task_id), self._writer.statement() as (driver, outbox):
            found, fields = await self._read(driver, task_id, user_id, assignee)
            task = found.task
            now = self._clock()
            changed = diff(task, changes)
            verdict = merge.decide(task.version, expected_version, changed, fields)
            if verdict.conflict is not None:
                raise verdict.conflict
            if assignee is not None and found.assignee_role is None:
                raise errors.validation_error("assigneeId", "must be a member of the workspace")
            if not changed:
                kept = merge.Edited(task)
                if receipt is not None:
                    if receipt.claim is not None:
                        return NOT_APPLIED  # its answer is stored by a transaction
                    receipt.complete(receipt.render(kept), None)
                return kept
            updated = bumped(task, now.iso, **{f: new for f, (_, new) in changed.items()})
            versions = merge.next_field_versions(fields, changed, updated.version)
            data = {"task": to_builtins(updated), "changes": wire_changes(changed)}
            event = _event(found, task, TASK_UPDATED, now, actor, encode_event_data(data))
            edited = merge.Edited(updated, verdict.merged)
            answer, key = _answer(receipt, edited, now)
            outbox.reserve(event[0])
            appended = await _write(self._sql.edit(driver, event, updated, versions, key))
            if appended is None:
                return NOT_APPLIED
            _add(outbox, appended, found, TASK_UPDATED, now, actor, data)
            if receipt is not None and answer is not None:
                receipt.complete(answer, appended.position)
        return edited

    async def delete_task(
        self,
        actor: Actor,
        task_id: str,
        expected_version: int | None,
        receipt: Receipt | None,
    ) -> bool:
        """``TaskService.delete_task`` in one write; False: not applied."""
        user_id = access.refuse_service(actor)
        async with self.turns.of(task_id), self._writer.statement() as (driver, outbox):
            found, _ = await self._read(driver, task_id, user_id)
            task = found.task
            if expected_version is not None and expected_version != task.version:
                raise merge.version_conflict(task.version, expected_version)
            now = self._clock()
            data = {"taskId": task.id}
            event = _event(found, task, TASK_DELETED, now, actor, encode_event_data(data))
            answer, key = _answer(receipt, None, now)
            outbox.reserve(event[0])
            appended = await _write(self._sql.delete(driver, event, key))
            if appended is None:
                return False
            _add(outbox, appended, found, TASK_DELETED, now, actor, data)
            if receipt is not None and answer is not None:
                receipt.complete(answer, appended.position)
        return True


def _event(
    found: Read, task: Task, type_: str, now: Clock, actor: Actor, data: str
) -> tuple[Any, ...]:
    """The statement's event parameters for a change of ``task`` read as at its version."""
    return _event_params(
        room=project_room(task.project_id),
        depends_on=workspace_room(found.project.workspace_id),
        task_id=task.id,
        version=task.version,
        type_=type_,
        ts=now.ms,
        user_id=task_user(actor),
        origin=actor.origin,
        data=data,
    )


def _answer(
    receipt: Receipt | None, result: Any, now: Clock
) -> tuple[Answer | None, StoredAnswer | None]:
    """The answer to render (None: no receipt) and what to store under its key (None: none)."""
    if receipt is None:
        return None, None
    answer = receipt.render(result)
    claim = receipt.claim
    if claim is None:
        return answer, None
    key = StoredAnswer(
        claim.user_id,
        claim.key,
        claim.fingerprint,
        answer.status,
        answer.body,
        answer.headers,
        now.ms,
    )
    return answer, key


async def _write(statement: Awaitable[Appended | None]) -> Appended | None:
    """Await the write; a key already held is ``KeyTakenError`` (see ``Receipt.settle``)."""
    try:
        return await statement
    except KeyHeldError:
        raise KeyTakenError from None


def _add(
    outbox: Outbox,
    appended: Appended,
    found: Read,
    type_: str,
    now: Clock,
    actor: Actor,
    data: dict[str, Any],
) -> None:
    outbox.add(
        BrokerEvent(
            type=type_,
            room=project_room(found.task.project_id),
            offset=appended.position.offset,
            epoch=appended.position.epoch,
            ts=now.ms,
            user_id=actor.user_id,
            data=data,
            origin=actor.origin,
            workspace_offset=appended.depended,
        )
    )
