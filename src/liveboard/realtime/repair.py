"""Log repair: what the broker did not bring in order is read from the event log, or resynced.

The broker may bring a room's events late, out of order, or not at all (a lost publish, an
outage, a publisher that died between commit and publish). The hub reports each hole of a
room's stream (``Hub``'s ``on_gap``) and each loss of continuity (its ``on_resync``);
``LogRepair`` answers both from the log. What it guarantees:

* Gap fill: a hole is read from the log ``GAP_WAIT`` seconds after the hub reports it (events
  of one room published by concurrent requests or instances can arrive slightly out of order,
  so most holes close by themselves meanwhile). After the n-th read that leaves it open, the
  next one waits (n + 1) times ``GAP_WAIT``; after ``GAP_ATTEMPTS`` such reads (the log does not
  have the events), the room is resynced. At most one read is pending per room.
* Catch-up: after a broker outage (``catch_up_all``), every active room reads everything after
  what it has released, ``READ_BATCH`` events per query, until the log has no more.
* Audit: every ``AUDIT_INTERVAL`` seconds, one indexed query reads the log's head of every
  sequenced room here, and each room behind its head with no gap fill pending is caught up.
  This is what delivers an event whose publisher died between commit and publish (CONTRACT
  §5.5), and what a lost broker message carried, within about a period. A failing audit (the
  database is down) is logged once, tried again each period, and its recovery logged once.
* Workspace first: before events of a project room read from the log are released, its
  workspace room is brought up to date by a read made after theirs, so that a ``member:removed``
  committed before any of them ends the removed member's subscriptions first (CONTRACT §3):
  whatever the log held at the first read, the later read holds too.
* Wake-up (``wake``): an event committed by another backend (``liveboard_emit``, announced by
  ``realtime.brokers.wakeup``) is read from the log at once for a room active here, by
  ``catch_up``; at most one such read runs per room, and a wake-up arriving during it makes it
  read once more.
  A room whose first subscriber is still reading its position is read as soon as it has one
  (within ``WAKE_WAIT``; the audit covers a join slower than that).
* Resync (``resync_room``): when a hole cannot be filled or the room's epoch changed, the
  ``resync`` callback tells the room's subscribers here and ends their subscriptions. Of a
  workspace room, its project rooms here are resynced too (they relied on it to apply
  removals) and the events parked for it are dropped.

The decisions are pure and need no I/O to test: ``GapAttempts`` (when to read a hole again,
when to give up), ``needs_catch_up`` (which rooms the audit reads on) and ``projects_of`` (what
a workspace room's resync takes along). The module knows the hub and the log, not sessions:
the node passes the ``resync`` callback.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable

from liveboard.background import TaskSet
from liveboard.protocol import BrokerEvent, RoomName, workspace_room
from liveboard.realtime.hub import Hub, Room
from liveboard.realtime.metrics import Metrics
from liveboard.store import eventlog
from liveboard.store.database import Database

__all__ = [
    "AUDIT_INTERVAL",
    "GAP_ATTEMPTS",
    "GAP_WAIT",
    "READ_BATCH",
    "GapAttempts",
    "LogRepair",
    "needs_catch_up",
    "projects_of",
]

# The node's logger: operators find the audit's lines under it (docs/operations.md).
log = logging.getLogger("liveboard.node")

#: How long a hole may stay open before it is read from the log (events of one room published
#: by concurrent requests or instances can arrive slightly out of order).
GAP_WAIT = 0.05
#: How many log reads a hole gets before the room is told to resync.
GAP_ATTEMPTS = 5
#: Events read from the log per query (here, and by the node while recovering a subscriber).
READ_BATCH = 1000
#: How often each active room's released offset is compared with the log's head. This is what
#: delivers an event whose publisher died between commit and publish (CONTRACT §5.5), and what
#: catches up rooms whose broker messages were lost: one indexed query per period for all
#: active rooms of the instance.
AUDIT_INTERVAL = 1.0
#: How long a wake-up waits for a room's first subscriber to learn its position (seconds).
WAKE_WAIT = 1.0


class GapAttempts:
    """How many log reads each room's open hole has had: when to read it next, when to give up.

    Pure bookkeeping, by room name: no clock, no I/O."""

    __slots__ = ("_reads",)

    def __init__(self) -> None:
        self._reads: Counter[str] = Counter()

    def delay(self, room: str) -> float:
        """Seconds to wait before reading ``room``'s hole: ``GAP_WAIT`` after it opens, one
        ``GAP_WAIT`` more after each read that left it open."""
        return GAP_WAIT * (1 + self._reads[room])

    def left_open(self, room: str) -> bool:
        """A read left ``room``'s hole open. True when that was its last attempt (resync the
        room; its next hole starts the count over), False when it is to be read again."""
        self._reads[room] += 1
        if self._reads[room] >= GAP_ATTEMPTS:
            del self._reads[room]
            return True
        return False

    def closed(self, room: str) -> None:
        """``room`` has no hole any more: its next one starts the count over."""
        self._reads.pop(room, None)


def needs_catch_up(room: Room, head: int | None, filling: bool) -> bool:
    """Whether the audit reads ``room`` on: the log's ``head`` offset is past what the room has
    released, and no gap fill is pending (that read will bring it)."""
    return head is not None and head > room.released and not filling


def projects_of(workspace: Room, rooms: Iterable[Room]) -> list[Room]:
    """The project rooms among ``rooms`` that belong to the workspace of room ``workspace``."""
    workspace_id = RoomName.of(workspace.name).id
    return [r for r in rooms if not r.is_workspace and r.workspace_id == workspace_id]


class LogRepair:
    """Gap fill, catch-up, the audit and resyncs of this instance's rooms (see the module).

    ``resync`` tells one room's subscribers here that its continuity is lost and ends their
    subscriptions; ``tasks`` holds the reads it starts in the background."""

    def __init__(
        self,
        hub: Hub,
        db: Database,
        metrics: Metrics,
        tasks: TaskSet,
        resync: Callable[[Room], None],
    ) -> None:
        self._hub = hub
        self._db = db
        self._metrics = metrics
        self._tasks = tasks
        self._resync = resync
        self._gap_timers: dict[str, asyncio.TimerHandle] = {}
        self._attempts = GapAttempts()
        self._audit_task: asyncio.Task[None] | None = None
        # Rooms being read for a wake-up: True when another wake-up came during the read.
        self._waking: dict[str, bool] = {}

    def start(self) -> None:
        """Start the periodic audit."""
        self._audit_task = asyncio.ensure_future(self._audit_forever())

    def stop(self) -> None:
        """Cancel the pending gap fills and the audit (the instance is shutting down)."""
        for timer in self._gap_timers.values():
            timer.cancel()
        if self._audit_task is not None:
            self._audit_task.cancel()

    # Gap fill

    def fill_later(self, room: Room) -> None:
        """The hub found a hole in ``room``'s stream: read it from the log after a wait."""
        if room.name in self._gap_timers:
            return
        loop = asyncio.get_running_loop()
        self._gap_timers[room.name] = loop.call_later(
            self._attempts.delay(room.name), lambda: self._tasks.spawn(self._fill_gap(room))
        )

    async def _fill_gap(self, room: Room) -> None:
        self._gap_timers.pop(room.name, None)
        sequencer = room.sequencer
        if sequencer is None or self._hub.rooms.get(room.name) is not room:
            return
        missing = sequencer.missing
        if missing is None:
            self._attempts.closed(room.name)
            return
        low, high = missing
        events = await self.read_range(room.name, low, high)
        self._metrics.gap_fills.inc()
        await self.workspace_first(room)
        self._hub.fill(room, events)
        if room.sequencer is not None and room.sequencer.missing is not None:
            if self._attempts.left_open(room.name):
                self.resync_room(room)
            else:
                self.fill_later(room)
        else:
            self._attempts.closed(room.name)

    async def read_range(self, room: str, low: int, high: int) -> list[BrokerEvent]:
        """The log's events of ``room`` from offset ``low`` to ``high``, in order, at most
        ``READ_BATCH`` of them (none when the log no longer has them)."""
        async with self._db.read_one() as conn:
            return await eventlog.read_events(
                conn, room, after=low - 1, up_to=high, limit=READ_BATCH
            )

    # Catch-up and the audit

    def catch_up_all(self) -> None:
        """Read every active room's missed events from the log (after a broker outage)."""
        for room in list(self._hub.rooms.values()):
            self._metrics.catch_ups.inc()
            self._tasks.spawn(self.catch_up(room))

    async def catch_up(self, room: Room) -> None:
        """Read everything after what the room has released, from the log."""
        while room.sequencer is not None and self._hub.rooms.get(room.name) is room:
            async with self._db.read_one() as conn:
                events = await eventlog.read_events(
                    conn, room.name, after=room.released, limit=READ_BATCH
                )
            if not events:
                return
            await self.workspace_first(room)
            self._hub.fill(room, events)
            if len(events) < READ_BATCH:
                return

    async def workspace_first(self, room: Room) -> None:
        """Before events of project ``room`` read from the log are released: bring its workspace
        room up to date with a read made after theirs, so that a removal committed before any of
        them is applied first (it is in this later read, whatever its publish became)."""
        if room.is_workspace or room.workspace_id is None:
            return
        workspace = self._hub.rooms.get(workspace_room(room.workspace_id))
        if workspace is not None and workspace.sequencer is not None:
            await self.catch_up(workspace)

    async def _audit_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(AUDIT_INTERVAL)
            try:
                await self.audit()
            except Exception:  # the database may be unavailable; try again next period
                if not failing:
                    log.warning("room audit failed", exc_info=True)
                failing = True
            else:
                if failing:
                    log.info("room audit works again")
                failing = False

    async def audit(self) -> None:
        """Deliver from the log whatever an active room has not released yet (timed in
        ``audit_duration`` when there is a room to audit, failed audits included)."""
        rooms = [r for r in self._hub.rooms.values() if r.sequencer is not None]
        if not rooms:
            return
        with self._metrics.audit_duration.time():
            await self._audit(rooms)

    async def _audit(self, rooms: list[Room]) -> None:
        async with self._db.read_one() as conn:
            heads = await eventlog.room_positions(conn, [r.name for r in rooms])
        for room in rooms:
            # Decided room by room: catching one up may bring another (its workspace) forward.
            head = heads.get(room.name)
            offset = None if head is None else head.offset
            if needs_catch_up(room, offset, room.name in self._gap_timers):
                self._metrics.catch_ups.inc()
                await self.catch_up(room)

    # Wake-ups

    def wake(self, name: str, offset: int) -> None:
        """Room ``name`` has a new event at ``offset`` in the log: read it now if it is active
        here and not yet released (see the module)."""
        room = self._hub.rooms.get(name)
        if room is None or (room.sequencer is not None and offset <= room.released):
            return
        if name in self._waking:
            self._waking[name] = True
            return
        self._waking[name] = False
        self._metrics.wakeups.inc()
        self._tasks.spawn(self._read_awake(room), name=f"wake {name}")

    async def _read_awake(self, room: Room) -> None:
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAKE_WAIT
            while room.sequencer is None and loop.time() < deadline:
                if self._hub.rooms.get(room.name) is not room:
                    return
                await asyncio.sleep(0.005)
            while True:
                await self.catch_up(room)
                if not self._waking.get(room.name):
                    return
                self._waking[room.name] = False
        finally:
            self._waking.pop(room.name, None)

    # Resync

    def resync_room(self, room: Room) -> None:
        """Continuity of ``room`` is lost here: tell its subscribers and end their subscriptions.

        Of a workspace room, the subscriptions of its project rooms here end too: they relied on
        it to apply removals, and a removal in what it cannot continue would never be applied
        (CONTRACT §3). The events parked for it are dropped with them."""
        self._resync(room)
        if room.is_workspace:
            for project in projects_of(room, self._hub.rooms.values()):
                self._resync(project)
            self._hub.drop_waiting(room)
