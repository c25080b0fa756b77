"""Write transactions whose events are published after they commit (CONTRACT §5.1-2, §6.3).

``EventWriter`` is what every writer of the event log shares on one instance: the task
service's changes and the events other backends publish over HTTP go through the same one, so
a room's events are handed to the publisher in offset order whichever of them appended them
(``tasks.publish_order``). Guarantees:

* ``transaction`` is one write transaction; the events ``append`` adds to it are published
  after it commits, each room's after the earlier transactions of this instance that appended
  to it, and never when it rolls back.
* ``append`` takes the room's next offset inside the transaction (``store.eventlog``); an event
  of a project room names its workspace room's head, so no instance releases it before the
  membership changes committed before it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from liveboard.auth import Actor
from liveboard.events import EventPublisher
from liveboard.protocol import BrokerEvent, workspace_room
from liveboard.store import eventlog
from liveboard.store.database import Database
from liveboard.tasks.publish_order import Outbox, PublishOrder

__all__ = ["EventWriter"]


class EventWriter:
    """The instance's write transactions with events (see the module). One per process."""

    def __init__(self, db: Database, publisher: EventPublisher) -> None:
        self.db = db
        self.publisher = publisher
        self._order = PublishOrder()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[tuple[AsyncConnection, Outbox]]:
        """A write transaction and the outbox of its events, published after it commits."""
        outbox = Outbox(self._order)
        try:
            async with self.db.write() as conn:
                yield conn, outbox
            await outbox.publish(self.publisher)
        finally:
            outbox.abandon()  # rolled back, failed or cancelled: the room's line moves on

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
    ) -> BrokerEvent:
        """Append an event, to be published after the commit; one of a project room names its
        workspace (``workspace_id``), so that no instance releases it before the membership
        changes committed before it. A service's event has no user (``userId: null``)."""
        event = await eventlog.append_event(
            conn,
            room=room,
            type=type_,
            user_id=actor.user_id,
            data=data,
            ts=ts_ms,
            origin=actor.origin,
            depends_on=None if workspace_id is None else workspace_room(workspace_id),
        )
        outbox.add(event)  # still holding the room's row lock: its place in the room's line
        return event
