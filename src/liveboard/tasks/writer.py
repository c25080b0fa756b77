"""Write transactions whose events are published after they commit (CONTRACT §5.1-2, §6.3).

``EventWriter`` is what every writer of the event log shares on one instance: the task
service's changes and the events other backends publish over HTTP go through the same one, so
a room's events are handed to the publisher in offset order whichever of them appended them
(``tasks.publish_order``). Guarantees:

* ``transaction`` is one write transaction; the events ``append`` adds to it are published
  after it commits, each room's after the earlier transactions of this instance that appended
  to it, and never when it rolls back.
* ``transaction`` returns once its events are handed to the publisher, not once the broker has
  them: an answer never waits on a broker round trip (up to the broker's publish timeout during
  an outage). The log is the truth: a publish that fails is repaired by the broker's re-send and
  by every instance's audit, as before. ``drain`` waits for the hand-overs still running (at
  shutdown, before the broker closes).
* ``append`` takes the room's next offset inside the transaction (``store.eventlog``); an event
  of a project room names its workspace room's head, so no instance releases it before the
  membership changes committed before it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard.auth import Actor
from liveboard.events import EventPublisher
from liveboard.protocol import BrokerEvent, workspace_room
from liveboard.store import eventlog
from liveboard.store.database import Database
from liveboard.tasks.publish_order import Outbox, PublishOrder

__all__ = ["EventWriter"]

log = logging.getLogger("liveboard.writer")


class EventWriter:
    """The instance's write transactions with events (see the module). One per process."""

    def __init__(self, db: Database, publisher: EventPublisher) -> None:
        self.db = db
        self.publisher = publisher
        self._order = PublishOrder()
        self._handing: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[tuple[AsyncConnection, Outbox]]:
        """A write transaction and the outbox of its events, handed to the publisher after it
        commits (returns without waiting for the broker: see the module)."""
        outbox = self.outbox()
        try:
            async with self.db.write() as conn:
                yield conn, outbox
            await self.hand_over(outbox)
        finally:
            outbox.abandon()  # rolled back, failed or cancelled: the room's line moves on

    def outbox(self) -> Outbox:
        """An outbox in this instance's publish order, for a write transaction run elsewhere
        (``tasks.publish_batch``): ``Outbox.add`` each event while the transaction holds its
        room's row lock, ``hand_over`` once it committed, ``Outbox.abandon`` in a ``finally``."""
        return Outbox(self._order)

    def statement(self) -> _Statement:
        """PostgreSQL: ``async with writer.statement() as (driver, outbox)``: a pooled asyncpg
        connection outside any transaction, for a write that is one statement
        (``tasks.single_write``), and the outbox of its events: ``reserve`` the room before
        sending it, ``add`` the event it appended. Handed to the publisher after the block, as
        ``transaction``'s."""
        return _Statement(self)

    async def hand_over(self, outbox: Outbox) -> None:
        """After ``outbox``'s transaction committed: wait for its turn in each room, then start
        handing its events to the publisher (not waiting for the broker: see the module)."""
        handing = await outbox.hand_over(self.publisher)
        if handing is not None:
            self._handing.add(handing)
            handing.add_done_callback(self._handed)

    def _handed(self, handing: asyncio.Task[None]) -> None:
        self._handing.discard(handing)
        if not handing.cancelled() and handing.exception() is not None:
            # Publishers do not raise for an outage; this is a bug. The events are in the log,
            # so every instance's audit still delivers them.
            log.error("publishing committed events failed", exc_info=handing.exception())

    @property
    def handing(self) -> int:
        """Hand-overs to the publisher still running."""
        return len(self._handing)

    async def drain(self) -> None:
        """Wait until every hand-over started so far has finished."""
        while self._handing:
            await asyncio.gather(*self._handing, return_exceptions=True)

    async def append(
        self,
        conn: AsyncConnection,
        outbox: Outbox,
        room: str,
        type_: str,
        actor: Actor,
        ts_ms: int,
        data: dict[str, Any],
        *,
        workspace_id: str | None = None,
        change: eventlog.Change | None = None,
    ) -> BrokerEvent:
        """Append an event, to be published after the commit; one of a project room names its
        workspace (``workspace_id``), so that no instance releases it before the membership
        changes committed before it. A service's event has no user (``userId: null``).
        ``change``: the row change the event describes, made by the same statement
        (``eventlog.append_event``: one round trip on PostgreSQL)."""
        event = await eventlog.append_event(
            conn,
            room=room,
            type=type_,
            user_id=actor.user_id,
            data=data,
            ts=ts_ms,
            origin=actor.origin,
            depends_on=None if workspace_id is None else workspace_room(workspace_id),
            change=change,
        )
        outbox.add(event)  # still holding the room's row lock: its place in the room's line
        return event


class _Statement:
    """``EventWriter.statement``'s block (a class, not ``asynccontextmanager``: a few µs less
    per write)."""

    __slots__ = ("_driver", "_outbox", "_writer")

    def __init__(self, writer: EventWriter) -> None:
        self._writer = writer
        self._outbox = Outbox(writer._order)
        self._driver: AbstractAsyncContextManager[Any] = writer.db.write_driver()

    async def __aenter__(self) -> tuple[Any, Outbox]:
        try:
            return await self._driver.__aenter__(), self._outbox
        except BaseException:
            self._outbox.abandon()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self._driver.__aexit__(exc_type, exc, traceback)
            if exc_type is None:
                await self._writer.hand_over(self._outbox)
        finally:
            self._outbox.abandon()  # failed, cancelled or changed nothing: the line moves on
