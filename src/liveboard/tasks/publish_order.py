"""Hand each room's committed events to the publisher in offset order, within one process.

Why: the room's row lock (``store.eventlog``: ``UPDATE rooms … RETURNING``) serialises the writers
of a room, so they commit offsets n, n + 1, … in that order. But on PostgreSQL each writer awaits
its own COMMIT, and once both commits are done the coroutine of the later one may resume first
and publish first. Subscribers would still be right (the hub holds the later event until the
earlier one comes, and reads the hole from the log if it stays open ``GAP_WAIT``), at the cost of
that wait on every instance, and of a log read when the earlier publish comes late.

How: each write transaction has an ``Outbox``. When it appends an event to a room it takes a
``Ticket`` in that room's line (``PublishOrder.register``), right after the append returned and
while it still holds the room's row lock, so a room's tickets are taken in offset order. After
its commit it waits until its tickets are first in their lines, hands its events to the
publisher, and releases them. A transaction that fails (rolls back, its commit fails, it is
cancelled) releases its tickets without publishing: the line moves on past them.

Guarantees (per ``PublishOrder``, that is per service instance; events committed by other
instances never enter it, and the hub orders those by offset as before):

* Handed in offset order: of two events of one room committed through this ``PublishOrder``,
  the earlier one's ``publish`` call begins, and runs to its first suspension, before the
  later one's begins: the later transaction is woken by a future, which resumes it only once
  the event loop runs again, and the earlier one calls ``publish`` right after releasing,
  without suspending in between. (Not "returns before": that would chain every writer of a
  room behind the previous one's broker round trip, up to ``PUBLISH_TIMEOUT`` each during a
  Redis outage. The node delivers to its own hub before its first suspension, so its hub gets
  its own events in offset order.)
* No deadlock, and no ticket waits forever. A transaction T waits only for tickets taken before
  its own in a room. Such a ticket was taken by a transaction U while U held the room's row
  lock (on SQLite, the database's write lock), which U keeps until it commits or rolls back; T
  took its ticket under the same lock, so U had ended (committed or rolled back) before T took
  its ticket, hence before T ended. Every wait therefore points at a transaction that ended
  strictly earlier: the waits cannot form a cycle (across rooms too, for a transaction with
  events in several). And a transaction that has ended waits for nothing but its turns before
  it releases its tickets (the COMMIT's reply and the connection's return to the pool need
  nothing another transaction holds), and it releases them in a ``finally``, so also when it
  fails or is cancelled: by induction on the order in which transactions end, every ticket is
  released. All this needs is the rule that ``register`` states.
* Cost: in the usual case (nobody ahead) a mutation costs a few dict and deque operations and
  no suspension; nothing on the fan-out path.
"""

from __future__ import annotations

import asyncio
from collections import deque

from liveboard.events import EventPublisher
from liveboard.protocol import BrokerEvent, Position

__all__ = ["Outbox", "PublishOrder", "Ticket"]


class Ticket:
    """One transaction's place in one room's line."""

    __slots__ = ("released", "room", "waiter")

    def __init__(self, room: str) -> None:
        self.room = room
        self.released = False
        self.waiter: asyncio.Future[None] | None = None


class PublishOrder:
    """Per room, the line of transactions that appended to it and have not yet published.

    One per service instance, shared by all its transactions. A room with nobody in line has
    no entry.
    """

    def __init__(self) -> None:
        self._lines: dict[str, deque[Ticket]] = {}

    def register(self, room: str) -> Ticket:
        """A place at the end of ``room``'s line.

        Call it only inside the write transaction that appended to ``room``, after the append
        returned (so while the transaction holds the room's row lock, until it ends): that is
        what makes the line the room's offset order, and the wait in ``turn`` finite.
        """
        ticket = Ticket(room)
        line = self._lines.get(room)
        if line is None:
            self._lines[room] = deque((ticket,))
        else:
            line.append(ticket)
        return ticket

    def is_first(self, ticket: Ticket) -> bool:
        """Whether every ticket before ``ticket`` in its room's line has been released."""
        return not ticket.released and self._lines[ticket.room][0] is ticket

    async def turn(self, ticket: Ticket) -> None:
        """Return once ``ticket`` is first in its line (at once, without suspending, if it is).

        Call it after the ticket's transaction committed: publishing sooner would announce a
        change that may still roll back. If the caller is cancelled while waiting it must still
        ``release`` the ticket.
        """
        if self.is_first(ticket):
            return
        ticket.waiter = asyncio.get_running_loop().create_future()
        await ticket.waiter

    def release(self, ticket: Ticket) -> None:
        """Leave the line (published, or given up). Idempotent; wakes whoever is first next."""
        if ticket.released:
            return
        ticket.released = True
        line = self._lines[ticket.room]
        while line and line[0].released:
            line.popleft()
        if not line:
            del self._lines[ticket.room]
            return
        waiter = line[0].waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def waiting_rooms(self) -> int:
        """How many rooms have somebody in line (for tests: 0 once every ticket is released)."""
        return len(self._lines)


class Outbox:
    """The events one write transaction appended, and its tickets (one per room).

    ``add`` each event as it is appended; after the commit, ``publish``; in a ``finally``,
    ``abandon`` (a no-op after ``publish``), so a transaction that fails leaves every line.
    """

    __slots__ = ("_events", "_order", "_tickets")

    def __init__(self, order: PublishOrder) -> None:
        self._order = order
        self._events: list[BrokerEvent] = []
        self._tickets: dict[str, Ticket] = {}

    def add(self, event: BrokerEvent) -> None:
        """Record an event just appended to the log (see ``PublishOrder.register``)."""
        if event.room not in self._tickets:
            self._tickets[event.room] = self._order.register(event.room)
        self._events.append(event)

    def first_position(self) -> Position | None:
        """Where the first event appended landed (None before any): what an answer names."""
        if not self._events:
            return None
        return Position(offset=self._events[0].offset, epoch=self._events[0].epoch)

    async def publish(self, publisher: EventPublisher) -> None:
        """Wait for this transaction's turn in each room, then hand its events over (if any)
        and wait until the publisher is done with them."""
        handing = await self.hand_over(publisher)
        if handing is not None:
            await handing

    async def hand_over(self, publisher: EventPublisher) -> asyncio.Task[None] | None:
        """Wait for this transaction's turn in each room, then start handing its events over
        and return that hand-over, running (None: no events).

        The hand-over's task is created before the tickets are released, so its first step is
        scheduled before the next transaction's wake-up (the event loop runs ready callbacks
        in the order they were scheduled): its ``publish`` call still runs to its first
        suspension before the next one's begins.
        """
        if not self._events:
            return None
        for ticket in self._tickets.values():
            await self._order.turn(ticket)
        handing = asyncio.ensure_future(publisher.publish(self._events))
        self.abandon()
        return handing

    def abandon(self) -> None:
        """Release every ticket (idempotent)."""
        for ticket in self._tickets.values():
            self._order.release(ticket)
