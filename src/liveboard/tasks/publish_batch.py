"""Group commit for ``POST /api/rooms/{room}/events``: publishes that arrive together share one
transaction, each still answered with its own offset.

A lone publish runs at once in a transaction of its own (it waits only for the event loop's
current turn, so that the requests read in the same turn join it). Publishes that arrive while
``MAX_IN_FLIGHT`` transactions are running queue, and the next transaction takes the queue, up
to ``MAX_BATCH`` of them (and ``MAX_BATCH_BYTES`` of data): the busier the instance, the
larger the batches, and the fewer BEGINs, COMMITs, statements and broker hand-overs per event
(a fixed number per batch: ``store.publish_batch``).

Guarantees, for every member of a batch as for a publish on its own:

* Its event commits with its idempotency key (if it carries one) or not at all, and it is
  answered only after the commit: 201 with its own offset, or the error it would get alone.
* Offsets stay gap-free and in order per room (``tasks.publish_plan``): a room's members take
  the room's next offsets in the order they were queued. A member that does not commit takes
  no offset: a room that does not exist (404) is placed nowhere, and a member whose key is
  already taken (``KeyTakenError``, answered by the idempotency gate from the stored answer)
  makes the batch roll back and run again without it.
* Events reach the publisher in the room's order with every other writer of this instance
  (the ``EventWriter``'s outbox), after the commit, in one hand-over per batch.
* No room is in two running batches of one instance, and a batch holds rooms of one kind
  (project or workspace rooms): its row locks follow the global order of
  ``store.publish_batch``. A batch that PostgreSQL still aborts as a deadlock (with some
  other transaction's locks) runs again, up to ``DEADLOCK_RETRIES`` times.
* A member whose request is cancelled before its batch starts is dropped; once its batch has
  started, its event commits with the batch (the caller is gone and cannot tell).
* A batch that fails otherwise (the database is down) fails every member with that error: all
  of it rolled back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from liveboard import errors
from liveboard.protocol import BrokerEvent, Position, Published, RoomName
from liveboard.store.publish_batch import (
    EventRow,
    KeyRow,
    PostgresBatchSql,
    lock_heads_sqlite,
    write_sqlite,
)
from liveboard.tasks.publish_order import Outbox
from liveboard.tasks.publish_plan import plan_batch
from liveboard.tasks.receipts import Answer, KeyTakenError, Receipt
from liveboard.tasks.writer import EventWriter

__all__ = ["MAX_BATCH", "MAX_BATCH_BYTES", "MAX_IN_FLIGHT", "PublishBatcher"]

log = logging.getLogger("liveboard.publish_batch")

#: Members of one batch at most: bounds a statement's arrays and a batch's lock set.
MAX_BATCH: Final = 256
#: Bytes of ``data`` JSON in one batch at most (a member alone may exceed it): bounds the
#: statement's size whatever ``max_event_data_bytes`` allows.
MAX_BATCH_BYTES: Final = 4 * 1024 * 1024
#: Batches running at once per instance. More overlap round trips; fewer make larger batches
#: (less CPU per event). Two keep a room whose lock another transaction holds long from
#: stopping every other room's publishes.
MAX_IN_FLIGHT: Final = 2
#: Runs of a batch that PostgreSQL aborted as a deadlock, before its members get the error.
DEADLOCK_RETRIES: Final = 3

_headers_encode = msgspec.json.Encoder().encode


@dataclass(slots=True, eq=False)
class _Member:
    """One publish waiting for, or in, a batch."""

    room: RoomName
    name: str
    type: str
    data: dict[str, Any]
    data_json: str
    receipt: Receipt | None
    future: asyncio.Future[Published]
    #: Set once the batch decided it: the answer to send and the event to hand over.
    answer: Answer | None = None
    event: BrokerEvent | None = None
    failure: BaseException | None = field(default=None)


class _KeysTakenError(Exception):
    """Some members' keys were taken: roll the batch back, run the others again."""


class PublishBatcher:
    """The instance's publish batches (see the module). One per process."""

    def __init__(
        self,
        writer: EventWriter,
        *,
        max_batch: int = MAX_BATCH,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._writer = writer
        self._db = writer.db
        self._sql = None if self._db.is_sqlite else PostgresBatchSql(self._db.table)
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queue: deque[_Member] = deque()
        self._busy: set[str] = set()  # rooms of the running batches
        self._running: set[asyncio.Task[None]] = set()
        self._scheduled = False
        #: Batches committed and events in them, since start (for tests and metrics).
        self.batches = 0
        self.batched_events = 0

    async def publish(
        self,
        room: RoomName,
        type_: str,
        data: dict[str, Any],
        data_json: str,
        receipt: Receipt | None = None,
    ) -> Published:
        """Append one event (``data_json``: ``data`` as JSON) to ``room``; answered after its
        batch commits, with ``receipt.answer`` set (see the module)."""
        if receipt is not None and receipt.claim is not None and not receipt.claim.service:
            raise RuntimeError("only services publish: a user's key has no place here")
        future: asyncio.Future[Published] = asyncio.get_running_loop().create_future()
        self._queue.append(_Member(room, str(room), type_, data, data_json, receipt, future))
        self._schedule()
        return await future

    @property
    def queued(self) -> int:
        """Publishes waiting for a batch."""
        return len(self._queue)

    async def drain(self) -> None:
        """Wait until every batch queued or running has ended."""
        while self._running or self._queue:
            if self._running:
                await asyncio.gather(*self._running, return_exceptions=True)
            else:
                await asyncio.sleep(0)

    def _schedule(self) -> None:
        if not self._scheduled and len(self._running) < self._max_in_flight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        while self._queue and len(self._running) < self._max_in_flight:
            batch = self._take()
            if not batch:
                return
            task = asyncio.create_task(self._run(batch), name="publish-batch")
            self._running.add(task)
            task.add_done_callback(self._ended)

    def _take(self) -> list[_Member]:
        """The next batch: queued members, in order, of rooms no running batch holds and of
        the first such member's kind; the others stay queued in their order."""
        taken: list[_Member] = []
        kept: deque[_Member] = deque()
        kind = None
        size = 0
        for member in self._queue:
            if member.future.done():  # cancelled while queued: dropped
                continue
            if (
                len(taken) < self._max_batch
                and (not taken or size + len(member.data_json) <= MAX_BATCH_BYTES)
                and member.name not in self._busy
                and (kind is None or member.room.kind == kind)
            ):
                kind = member.room.kind
                size += len(member.data_json)
                taken.append(member)
            else:
                kept.append(member)
        self._queue = kept
        self._busy.update(member.name for member in taken)
        return taken

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._queue:
            self._schedule()

    async def _run(self, batch: list[_Member]) -> None:
        try:
            await self._settle(batch)
        except BaseException as error:  # the batch failed: all of it rolled back
            for member in batch:
                if member.failure is None and member.event is None:
                    member.failure = error
            if not isinstance(error, Exception):
                raise
        finally:
            self._busy.difference_update(member.name for member in batch)
            for member in batch:
                self._answer(member)

    @staticmethod
    def _answer(member: _Member) -> None:
        if member.future.done():
            return
        event = member.event
        if event is not None:
            if member.receipt is not None:
                member.receipt.answer = member.answer
            member.future.set_result(Published(event.room, event.offset, event.epoch))
        elif isinstance(member.failure, asyncio.CancelledError):
            member.future.cancel()
        else:
            failure = member.failure or RuntimeError("the publish batch ended without it")
            member.future.set_exception(failure)

    async def _settle(self, batch: list[_Member]) -> None:
        """Commit the batch's members, again without those whose key was taken, until the
        rest commit (or fail)."""
        pending = batch
        deadlocks = 0
        while pending:
            try:
                await self._commit(pending)
                return
            except _KeysTakenError:
                pending = [m for m in pending if m.failure is None]
            except Exception as error:
                if _is_deadlock(error) and deadlocks < DEADLOCK_RETRIES:
                    deadlocks += 1
                    log.info("publish batch of %d aborted as a deadlock; again", len(pending))
                    continue
                raise

    async def _commit(self, members: list[_Member]) -> None:
        """One transaction for ``members``: the events of those whose room exists, with their
        keys; ``_KeysTakenError`` if a key was taken (nothing committed then)."""
        for member in members:
            member.answer = member.event = member.failure = None
        names = sorted({m.name for m in members})
        project_ids = sorted({m.room.id for m in members if not m.room.is_workspace})
        now_ms = time.time_ns() // 1_000_000
        outbox = self._writer.outbox()
        committed = False
        try:
            if self._sql is None:
                async with self._db.write() as conn:
                    heads = await lock_heads_sqlite(conn, names, project_ids)
                    new_heads, rows, keys = self._place(members, heads, now_ms)
                    if rows:
                        stored = await write_sqlite(conn, new_heads, rows, keys, now_ms)
                        self._check_keys(members, keys, stored)
                        self._add(outbox, members)
            else:
                sql = self._sql
                async with self._db.driver_write() as conn:
                    heads = await sql.lock_heads(conn, names, project_ids)
                    new_heads, rows, keys = self._place(members, heads, now_ms)
                    if rows:
                        stored = await sql.write_rows(conn, new_heads, rows, keys, now_ms)
                        self._check_keys(members, keys, stored)
                        self._add(outbox, members)
            committed = True
            await self._writer.hand_over(outbox)
        except BaseException:
            if not committed:
                for member in members:
                    member.answer = member.event = None  # nothing of this run committed
            raise
        finally:
            outbox.abandon()
        if rows:
            self.batches += 1
            self.batched_events += len(rows)

    def _place(
        self,
        members: list[_Member],
        heads: tuple[dict[str, Position], dict[str, int]],
        now_ms: int,
    ) -> tuple[dict[str, int], list[EventRow], list[KeyRow]]:
        """The rooms' new heads; each member's offset, event, answer and key row
        (``tasks.publish_plan``)."""
        room_heads, workspace_heads = heads
        plan = plan_batch([m.name for m in members], room_heads, workspace_heads)
        rows: list[EventRow] = []
        keys: list[KeyRow] = []
        for member, placement in zip(members, plan.placements, strict=True):
            if placement is None:
                member.failure = errors.not_found("room not found")
                continue
            offset, epoch, depended = placement
            member.event = BrokerEvent(
                type=member.type,
                room=member.name,
                offset=offset,
                epoch=epoch,
                ts=now_ms,
                user_id=None,
                data=member.data,
                origin=None,
                workspace_offset=depended,
            )
            rows.append(EventRow(member.name, offset, epoch, member.type, member.data_json))
            receipt = member.receipt
            if receipt is None:
                continue
            published = Published(room=member.name, offset=offset, epoch=epoch)
            member.answer = receipt.render(published, Position(offset=offset, epoch=epoch))
            claim = receipt.claim
            if claim is not None:
                keys.append(
                    KeyRow(
                        claim.user_id,
                        claim.key,
                        claim.fingerprint,
                        member.answer.status,
                        member.answer.body,
                        _headers_encode(member.answer.headers).decode(),
                    )
                )
        return plan.heads, rows, keys

    @staticmethod
    def _check_keys(
        members: list[_Member], keys: list[KeyRow], stored: set[tuple[str, str]]
    ) -> None:
        """``_KeysTakenError`` when a member's key was already taken (that member then fails with
        ``KeyTakenError``)."""
        if len(stored) == len(keys):
            return
        for member in members:
            claim = None if member.receipt is None else member.receipt.claim
            if claim is not None and (claim.user_id, claim.key) not in stored:
                member.failure = KeyTakenError()
        raise _KeysTakenError

    @staticmethod
    def _add(outbox: Outbox, members: list[_Member]) -> None:
        """Register the events while the transaction holds their rooms' locks, each room's
        in offset order (``tasks.publish_order``)."""
        for member in members:
            if member.event is not None:
                outbox.add(member.event)


def _is_deadlock(error: BaseException) -> bool:
    """PostgreSQL aborted the transaction to break a deadlock (SQLSTATE 40P01)."""
    return getattr(error, "sqlstate", None) == "40P01"
