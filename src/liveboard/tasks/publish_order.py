"""Hand each room's committed events to the publisher in offset order, within one process.

Why: the room's row lock (``store.eventlog``: ``UPDATE rooms … RETURNING``) serialises the writers
of a room, so they commit offsets n, n + 1, … in that order. But on PostgreSQL each writer awaits
its own COMMIT (or its one statement, ``tasks.single_write``), and once both are done the
coroutine of the later one may resume first and publish first. Subscribers would still be right
(the hub holds the later event until the earlier one comes, and reads the hole from the log if it
stays open ``GAP_WAIT``), at the cost of that wait on every instance, and of a log read when the
earlier publish comes late.

How: each write has an ``Outbox`` and takes a ``Ticket`` in the line of each room it appends to.
A ticket is *placed* at the offset of the first event its write appended to the room. A write in
a transaction places its ticket when it appends (``register``), while it holds the room's row
lock. A write that is one autocommitted statement (its row locks are gone when its answer comes
back) *reserves* its ticket before it sends the statement (``reserve``) and places it when the
answer names the offset (``place``). After its commit a write waits for its turn, hands its
events to the publisher, and releases its tickets. A write that fails (rolls back, its commit
fails, it is cancelled, its statement changed nothing) releases its tickets without publishing.

A placed ticket T at offset n has its turn when no unreleased ticket of its room is placed below
n, and none is still reserved that was reserved before T was placed. Those are the only tickets
that can end up below n: a write that sends its statement (or appends) after T was placed waits
for the room's row lock, which T's write holds until it commits (a transaction) or has already
let go of after committing (a statement), so its offset is above n (or T rolled back, and T is
released, never published).

Guarantees (per ``PublishOrder``, that is per service instance; events committed by other
instances never enter it, and the hub orders those by offset as before):

* Handed in offset order: of two events of one room committed through this ``PublishOrder``,
  the earlier one's ``publish`` call begins, and runs to its first suspension, before the
  later one's begins: the later write is woken by a future, which resumes it only once the
  event loop runs again, and the earlier one calls ``publish`` right after releasing, without
  suspending in between. (Not "returns before": that would chain every writer of a room
  behind the previous one's broker round trip, up to ``PUBLISH_TIMEOUT`` each during a Redis
  outage. The node delivers to its own hub before its first suspension, so its hub gets its
  own events in offset order.)
* No deadlock, and no ticket waits forever. A reserved ticket waits for nothing: its statement
  is answered whatever this process does (it holds no row lock across the answer; a transaction
  of this process whose lock it may queue behind commits without waiting for any turn), and
  then it is placed or released. A placed ticket waits only for reserved tickets (finitely many:
  those reserved before it was placed) and for tickets placed at a lower offset of its room,
  each of whose writes ended (committed or rolled back) before T's; the waits follow the offset
  order, across rooms too (a transaction holding two rooms' locks commits both offsets
  together), so they cannot form a cycle. A write that has ended waits for nothing but its
  turns before it releases its tickets, and it releases them in a ``finally``, so also when it
  fails or is cancelled.
* Cost: in the usual case (nobody ahead) a mutation costs a few list operations and no
  suspension; nothing on the fan-out path.
"""

from __future__ import annotations

import asyncio

from liveboard.events import EventPublisher
from liveboard.protocol import BrokerEvent, Position

__all__ = ["Outbox", "PublishOrder", "Ticket"]


class Ticket:
    """One write's place in one room's line: reserved (``offset`` None) or placed."""

    __slots__ = ("offset", "released", "room", "stamp", "waiter")

    def __init__(self, room: str, offset: int | None, stamp: int) -> None:
        self.room = room
        #: The offset of the write's first event in the room; None while reserved.
        self.offset = offset
        #: When it was reserved (while reserved), or placed (after): this order's clock.
        self.stamp = stamp
        self.released = False
        self.waiter: asyncio.Future[None] | None = None


class PublishOrder:
    """Per room, the writes that appended to it (or are about to) and have not yet published.

    One per service instance, shared by all its writes. A room with nobody in line has no entry.
    """

    def __init__(self) -> None:
        self._lines: dict[str, list[Ticket]] = {}
        self._clock = 0

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _join(self, ticket: Ticket) -> Ticket:
        line = self._lines.get(ticket.room)
        if line is None:
            self._lines[ticket.room] = [ticket]
        else:
            line.append(ticket)
        return ticket

    def register(self, room: str, offset: int) -> Ticket:
        """A ticket placed at ``offset``, the offset of the first event the write appended to
        ``room``.

        Call it only inside the write transaction that appended to ``room``, after the append
        returned (so while the transaction holds the room's row lock, until it ends): that is
        what makes the wait in ``turn`` finite.
        """
        return self._join(Ticket(room, offset, self._tick()))

    def reserve(self, room: str) -> Ticket:
        """A ticket for a write that is one autocommitted statement appending to ``room``:
        call it before the statement is sent, then ``place`` the ticket at the offset its
        answer names, or ``release`` it (no event, or the statement failed)."""
        return self._join(Ticket(room, None, self._tick()))

    def place(self, ticket: Ticket, offset: int) -> None:
        """A reserved ticket's write appended its first event to the room at ``offset``."""
        ticket.offset = offset
        ticket.stamp = self._tick()
        self._wake(ticket.room)

    @staticmethod
    def _ahead(other: Ticket, ticket: Ticket) -> bool:
        """Whether ``other`` must publish (or be released) before placed ``ticket`` may."""
        if other.released or other is ticket:
            return False
        if other.offset is None:
            return other.stamp < ticket.stamp  # reserved before ticket was placed
        assert ticket.offset is not None
        return other.offset < ticket.offset

    def is_first(self, ticket: Ticket) -> bool:
        """Whether ``ticket`` is placed and no ticket of its room must go before it."""
        if ticket.released or ticket.offset is None:
            return False
        line = self._lines[ticket.room]
        if len(line) == 1:  # alone in its line (the usual case): nobody can be ahead
            return True
        return not any(self._ahead(other, ticket) for other in line)

    async def turn(self, ticket: Ticket) -> None:
        """Return once ``ticket`` (placed) is first in its line (at once, without suspending,
        if it is).

        Call it after the ticket's write committed: publishing sooner would announce a change
        that may still roll back. If the caller is cancelled while waiting it must still
        ``release`` the ticket.
        """
        if ticket.offset is None:
            raise RuntimeError("a reserved ticket has no turn before it is placed")
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
        line.remove(ticket)
        if not line:
            del self._lines[ticket.room]
            return
        self._wake(ticket.room)

    def _wake(self, room: str) -> None:
        """Wake the waiter whose turn has come, if any (at most one: the lowest placed)."""
        for ticket in self._lines.get(room, ()):
            waiter = ticket.waiter
            if waiter is not None and not waiter.done() and self.is_first(ticket):
                waiter.set_result(None)

    def waiting_rooms(self) -> int:
        """How many rooms have somebody in line (for tests: 0 once every ticket is released)."""
        return len(self._lines)


class Outbox:
    """The events one write appended, and its tickets (one per room).

    ``add`` each event as it is appended (``reserve`` its room before, for a write that is one
    autocommitted statement); after the commit, ``publish``; in a ``finally``, ``abandon`` (a
    no-op after ``publish``), so a write that fails leaves every line.
    """

    __slots__ = ("_events", "_order", "_tickets")

    def __init__(self, order: PublishOrder) -> None:
        self._order = order
        self._events: list[BrokerEvent] = []
        self._tickets: dict[str, Ticket] = {}

    def reserve(self, room: str) -> None:
        """Before sending a statement that appends to ``room`` and commits by itself: reserve
        the room's ticket (``PublishOrder.reserve``); ``add`` places it."""
        if room not in self._tickets:
            self._tickets[room] = self._order.reserve(room)

    def add(self, event: BrokerEvent) -> None:
        """Record an event just appended to the log (see ``PublishOrder.register``), placing
        the room's reserved ticket at its offset if there is one."""
        ticket = self._tickets.get(event.room)
        if ticket is None:
            self._tickets[event.room] = self._order.register(event.room, event.offset)
        elif ticket.offset is None:
            self._order.place(ticket, event.offset)
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
            if ticket.offset is None:  # reserved for a room it appended nothing to
                self._order.release(ticket)
            else:
                await self._order.turn(ticket)
        handing = asyncio.ensure_future(publisher.publish(self._events))
        self.abandon()
        return handing

    def abandon(self) -> None:
        """Release every ticket (idempotent)."""
        for ticket in self._tickets.values():
            self._order.release(ticket)
