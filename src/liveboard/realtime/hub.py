"""The hub: this instance's rooms, their subscribers, and ordered, pre-encoded fan-out.

Guarantees:

* Each room's events are released in offset order, each once, with no gap (``RoomSequencer``);
  a hole is reported (``on_gap``), and the log repair (``repair.LogRepair``) waits briefly
  and fills it from the log.
* Per released event: one JSON encode and one frame encode. No per-socket task, await or encode.
* The frames a room releases during one ``deliver`` call (one broker read) are joined once into
  one buffer, and that buffer is written to each live subscriber in one ``transport.write``, at
  the end of the call, without waiting for anything else: the cost per socket is one write per
  broker read, however many events it carried.
* Each subscriber gets a room's events in offset order: frames queued for a joiner before it goes
  live are written before the room's buffer.
* A socket whose unsent bytes pass the bound is handed to ``on_slow_consumer`` (closed with 4008)
  and gets nothing more; memory per socket stays bounded. The hub asks no socket for its buffer
  size or state: per socket it reads two flags of the ``Outlet`` (``closed``, ``blocked``) that
  the connection keeps up to date from the transport's own ``pause_writing`` /
  ``resume_writing`` and its end (``outlet_for``); only a connection that cannot do that (one
  aiohttp upgraded) gets a ``PolledOutlet``, which asks the transport as before.
* A subscriber that is joining (its snapshot or history is being read) is not written to: the
  events released meanwhile are held for it, and the node merges them with what it read.
* Membership first: a project room's live event that names a workspace offset
  (``workspace_offset``) is not released before its workspace room has released that
  offset. It waits (``Room.waiting``), the workspace room reports the hole (``on_gap``), and
  it is filled from the log; the ``member:removed`` events among them end subscriptions
  (``on_workspace_events``, called as each is released) before the waiting events go out.
  So a removal whose publish was lost or is late still ends the subscription before anything
  committed after it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from liveboard.protocol import RoomName, SequencedEvent, client_json
from liveboard.protocol.rooms import WORKSPACE_ROOM_PREFIX
from liveboard.realtime.metrics import Metrics
from liveboard.realtime.ordering import OfferResult, RoomSequencer
from liveboard.realtime.outlet import Outlet
from liveboard.realtime.transport.frames import text_frame

#: Events held for a room before its position is known (first subscriber still reading).
MAX_PREBUFFER = 10_000
#: Project rooms' events waiting for one workspace room to catch up. Past it they are dropped:
#: the project room is told of the hole at once and reads them from the log (after its
#: workspace room). A count, not bytes: each holds one event already decoded.
MAX_WAITING = 10_000
#: Events a sequenced room keeps of what it released last (``Room.recent``): what a reconnect
#: whose ``since`` is that close to the head is sent without reading the log.
RECENT = 16


class Joiner:
    """A subscriber whose first events are being read from the log.

    While ``ready_at`` is None, released events are held in ``held`` for the node to merge
    with what it reads. Once the node has sent everything up to ``ready_at``, released events
    above it are written directly; the joiner becomes live as soon as the room's sequencer has
    released ``ready_at`` itself (the log can run ahead of the broker).
    """

    __slots__ = ("held", "ready_at")

    def __init__(self) -> None:
        self.held: list[SequencedEvent] = []
        self.ready_at: int | None = None


class Room:
    """One room on this instance: its sequencer and its local subscribers."""

    __slots__ = (
        "is_workspace",
        "joining",
        "live",
        "members",
        "members_read",
        "name",
        "prebuffer",
        "recent",
        "sequencer",
        "waiting",
        "watchers",
        "workspace_id",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_workspace = RoomName.of(name).is_workspace
        # References held by the node on a workspace room whose project rooms have subscribers
        # here: it is sequenced and audited like any room, so no member:removed is missed.
        self.watchers = 0
        self.workspace_id: str | None = None  # known once the first subscriber is admitted
        self.sequencer: RoomSequencer | None = None  # None until the log's position is known
        self.prebuffer: list[SequencedEvent] = []
        # Of a workspace room: its project rooms' events that depend on an offset it has not
        # released yet, in arrival order (see the module docstring).
        self.waiting: list[tuple[Room, SequencedEvent]] = []
        self.live: dict[Outlet, None] = {}  # an ordered set
        self.joining: dict[Outlet, Joiner] = {}
        # The last ``RECENT`` events released (in the sequencer's epoch), from the first
        # released (or read with the position) on; None until sequenced. See ``admit_cache``.
        self.recent: deque[SequencedEvent] | None = None
        # Of a workspace room: users known to be members (``admit_cache``), None when none.
        self.members: set[str] | None = None
        # Of a workspace room: its members were read all at once (``admit_cache``).
        self.members_read = False

    @property
    def empty(self) -> bool:
        return not self.live and not self.joining and not self.watchers

    @property
    def released(self) -> int:
        """The last offset released to subscribers (-1 while the position is unknown)."""
        return -1 if self.sequencer is None else self.sequencer.next_offset - 1


class Hub:
    """Rooms of this instance. Synchronous: every method runs to completion on the loop."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        on_slow_consumer: Callable[[Outlet], None],
        on_gap: Callable[[Room], None],
        on_resync: Callable[[Room], None],
        on_workspace_events: Callable[[Room, list[SequencedEvent]], None] = lambda room, events: (
            None
        ),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rooms: dict[str, Room] = {}
        self._metrics = metrics
        self._tally = metrics.fan_out
        self._on_slow_consumer = on_slow_consumer
        self._on_gap = on_gap
        self._on_resync = on_resync
        self._on_workspace_events = on_workspace_events
        self._clock = clock

    # Membership of rooms

    def join(self, name: str, outlet: Outlet) -> Room:
        """Register a joining subscriber: events released from now on are held for it."""
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name)
        room.live.pop(outlet, None)
        room.joining[outlet] = Joiner()
        return room

    def take_held(self, room: Room, outlet: Outlet) -> list[SequencedEvent]:
        """The events held for a joining subscriber since the last call."""
        joiner = room.joining.get(outlet)
        if joiner is None:
            return []
        held, joiner.held = joiner.held, []
        return held

    def complete_join(self, room: Room, outlet: Outlet, sent_up_to: int) -> None:
        """The node has sent the joiner every event up to ``sent_up_to``: go live from there."""
        joiner = room.joining.get(outlet)
        if joiner is None:
            return
        joiner.ready_at = sent_up_to
        if room.released >= sent_up_to:
            del room.joining[outlet]
            room.live[outlet] = None

    def watch(self, name: str) -> Room:
        """Keep a room sequenced without a subscriber here (see ``Room.watchers``)."""
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name)
        room.watchers += 1
        return room

    def unwatch(self, name: str) -> None:
        room = self.rooms.get(name)
        if room is None:
            return
        room.watchers = max(0, room.watchers - 1)
        if room.empty:
            del self.rooms[name]

    @staticmethod
    def forget_recent(room: Room) -> None:
        """The room's continuity is lost (a resync): what it remembers for reconnects and
        whom it knows as members may be wrong; keep only what it releases from now on."""
        if room.recent is not None:
            room.recent.clear()
        room.members = None
        room.members_read = False

    def drop_waiting(self, workspace: Room) -> None:
        """Forget the events parked for ``workspace`` (its continuity is lost; the node has
        ended the subscriptions they were for). A project room that still has subscribers
        reads them from the log: the next event or the audit finds them missing."""
        workspace.waiting = []

    def leave(self, name: str, outlet: Outlet) -> bool:
        """Remove a subscriber; True when the room has no subscriber left (and is dropped)."""
        room = self.rooms.get(name)
        if room is None:
            return False
        room.live.pop(outlet, None)
        room.joining.pop(outlet, None)
        if room.empty:
            del self.rooms[name]
            return True
        return False

    def start_sequence(
        self, room: Room, epoch: str, last_offset: int, recent: Sequence[SequencedEvent] = ()
    ) -> None:
        """Set a new room's position from the log; release what arrived meanwhile, in order.

        ``recent``: events of ``epoch`` read with the position, ending at ``last_offset``
        without a hole (the caller checks), kept as the start of ``Room.recent``."""
        if room.sequencer is not None:
            return
        room.sequencer = RoomSequencer(epoch, last_offset + 1)
        room.recent = deque(recent, maxlen=RECENT)
        early, room.prebuffer = room.prebuffer, []
        if early:
            now = self._clock()
            early = [event for event in early if not self._waits(room, event, now)]
            self._release(room, room.sequencer.fill(early, now=now))

    # Delivery

    def deliver(self, events: Sequence[SequencedEvent]) -> None:
        """Events from the broker (any rooms, any order): release each room's in order."""
        batch: dict[Room, list[bytes]] = {}
        dirty: list[Outlet] = []
        released: list[SequencedEvent] = []
        now = self._clock()
        try:
            for event in events:
                room = self.rooms.get(event.room)
                if room is None:
                    continue
                if room.sequencer is None:
                    if len(room.prebuffer) < MAX_PREBUFFER:
                        room.prebuffer.append(event)
                    continue
                if event.workspace_offset and self._waits(room, event, now):
                    continue
                if not room.joining and not room.is_workspace and room.sequencer.take_next(event):
                    # The common case, as ``_fan_out`` would queue it: the next event of a room
                    # whose subscribers are all live, no hole, nothing waiting on this room.
                    if room.recent is not None:
                        room.recent.append(event)
                    if room.live:
                        frames = batch.get(room)
                        if frames is None:
                            frames = batch[room] = []
                        frames.append(text_frame(client_json(event)))
                    released.append(event)
                    continue
                result = room.sequencer.offer(event, now=now)
                released += self._fan_out(room, result, batch, dirty)
        finally:
            # Even if a callback raised: the sequencer has moved past what is queued here.
            self._flush(batch, dirty, released)

    def fill(self, room: Room, events: Iterable[SequencedEvent]) -> None:
        """Events read from the log to close a hole of ``room``.

        They are not held for their workspace room: the caller reads a project room's events
        from the log before it brings the workspace room up to date (``LogRepair``), so every
        membership change committed before them has been applied when they are released."""
        if room.sequencer is None or self.rooms.get(room.name) is not room:
            return
        self._release(room, room.sequencer.fill(events, now=self._clock()))

    def send_to_room(self, name: str, payload: bytes) -> None:
        """One server message (e.g. ``presence:update``) to every live subscriber of a room."""
        room = self.rooms.get(name)
        if room is None:
            return
        self._count(*self._write_room(room, [text_frame(payload)]))

    def _release(self, room: Room, result: OfferResult) -> None:
        batch: dict[Room, list[bytes]] = {}
        dirty: list[Outlet] = []
        released = result.deliver
        try:
            released = self._fan_out(room, result, batch, dirty)
        finally:
            self._flush(batch, dirty, released)

    def _waits(self, room: Room, event: SequencedEvent, now: float) -> bool:
        """Whether a project room's live ``event`` must wait for its workspace room: True when
        it was parked there (or dropped past ``MAX_WAITING``: the log has it)."""
        need = event.workspace_offset
        if not need or room.is_workspace or room.workspace_id is None:
            return False
        workspace = self.rooms.get(WORKSPACE_ROOM_PREFIX + room.workspace_id)
        if workspace is None or workspace.sequencer is None or workspace.released >= need:
            # (No sequenced workspace room: no subscription of the project was admitted here.)
            return False
        if len(workspace.waiting) < MAX_WAITING:
            workspace.waiting.append((room, event))
        elif room.sequencer is not None:
            # Dropped: the project room learns of the hole now, and its gap fill reads it from
            # the log after the workspace room (``LogRepair._fill_gap``), not at the next audit.
            room.sequencer.expect(event.offset, now=now)
            self._on_gap(room)
        workspace.sequencer.expect(need, now=now)
        self._on_gap(workspace)
        return True

    def _release_waiting(
        self, workspace: Room, batch: dict[Room, list[bytes]], dirty: list[Outlet]
    ) -> list[SequencedEvent]:
        """Offer to their project rooms the waiting events the workspace room has now reached."""
        released = workspace.released
        ready = [pair for pair in workspace.waiting if pair[1].workspace_offset <= released]
        if not ready:
            return []
        workspace.waiting = [p for p in workspace.waiting if p[1].workspace_offset > released]
        now = self._clock()
        delivered: list[SequencedEvent] = []
        for room, event in ready:
            sequencer = room.sequencer
            if sequencer is None or self.rooms.get(room.name) is not room:
                continue  # the room was dropped or reset meanwhile
            delivered += self._fan_out(room, sequencer.offer(event, now=now), batch, dirty)
        return delivered

    def _fan_out(
        self, room: Room, result: OfferResult, batch: dict[Room, list[bytes]], dirty: list[Outlet]
    ) -> list[SequencedEvent]:
        """Queue ``result``'s events: in ``batch`` for the live subscribers, per outlet for
        joiners that are ready for them. Returns the events released, with those of project
        rooms that were waiting for this (workspace) room."""
        frames = batch.get(room)
        workspace = room.is_workspace
        if room.recent is not None:
            room.recent.extend(result.deliver)  # (a resync clears it: ``forget_recent``)
        for event in result.deliver:
            frame = text_frame(client_json(event))
            if room.live:
                if frames is None:
                    frames = batch[room] = []
                frames.append(frame)
            for outlet, joiner in room.joining.items():
                if joiner.ready_at is None:
                    joiner.held.append(event)
                elif event.offset > joiner.ready_at:
                    if not outlet.pending:
                        dirty.append(outlet)
                    outlet.pending.append(frame)
            if workspace:
                # Now, before a later event is queued: a removed member's outlets leave the
                # rooms, so nothing after the removal is queued for them.
                self._on_workspace_events(room, [event])
        if room.joining and result.deliver:
            # The live set is about to grow: what it had so far goes to the subscribers that
            # were live when it was released, not to the joiners promoted now (which have it).
            self._count(*self._write_room(room, batch.pop(room, [])))
            self._promote(room)
        released = result.deliver
        if workspace and room.waiting and result.deliver:
            released = released + self._release_waiting(room, batch, dirty)
        sequencer = room.sequencer
        if result.resync:
            self._metrics.resyncs.inc()
            self._on_resync(room)
        elif sequencer is not None and sequencer.missing is not None:
            self._on_gap(room)
        return released

    def _promote(self, room: Room) -> None:
        released = room.released
        ready = [
            o for o, j in room.joining.items() if j.ready_at is not None and j.ready_at <= released
        ]
        for outlet in ready:
            # What was queued for it as a joiner leaves first: from now on it gets the room's
            # buffer, which may be written before this call ends (another joiner's promotion).
            pending = outlet.pending
            if pending and not outlet.closed:
                self._count(len(pending), sum(map(len, pending)))
                outlet.flush()
                if outlet.blocked:
                    self._on_slow_consumer(outlet)
            pending.clear()
            del room.joining[outlet]
            room.live[outlet] = None

    def _write_room(self, room: Room, frames: list[bytes]) -> tuple[int, int]:
        """Write ``frames``, joined once, to each live subscriber of ``room``; the frames and
        the bytes written (each times sockets)."""
        if not frames:
            return 0, 0
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        live = room.live
        written = len(live)  # less the closed ones, counted as skipped (rare)
        slow: list[Outlet] = []
        for outlet in live:
            if outlet.closed:
                written -= 1
                continue
            outlet.transport.write(data)
            # Set by the transport's pause_writing during that write when it went past the
            # bound (the connection's high-water mark is the bound: ``watch_writes``).
            if outlet.blocked:
                slow.append(outlet)
        for outlet in slow:  # after the loop: closing one may change the room
            self._on_slow_consumer(outlet)
        return written * len(frames), written * len(data)

    def _count(self, frames: int, size: int) -> None:
        """Count frames and bytes written (once per call that wrote, never per socket)."""
        tally = self._tally
        tally.frames += frames
        tally.bytes += size

    def _flush(
        self, batch: dict[Room, list[bytes]], dirty: list[Outlet], released: list[SequencedEvent]
    ) -> None:
        sent = size = 0
        # Joiners' own frames first: a joiner promoted during this call also gets the room's
        # buffer below, which holds only events released after its own.
        for outlet in dirty:
            pending = outlet.pending
            if outlet.closed:
                pending.clear()
                continue
            sent += len(pending)
            size += sum(map(len, pending))
            outlet.flush()
            if outlet.blocked:
                self._on_slow_consumer(outlet)
        for room, frames in batch.items():
            room_sent, room_size = self._write_room(room, frames)
            sent += room_sent
            size += room_size
        tally = self._tally
        tally.frames += sent
        tally.bytes += size
        if released:
            tally.delivered(time.time() * 1000.0, released)

    # Introspection

    def subscription_count(self) -> int:
        return sum(len(r.live) + len(r.joining) for r in self.rooms.values())

    def by_kind(self) -> tuple[dict[str, int], dict[str, int]]:
        """Rooms here (a workspace room kept for its project rooms' revocations counts), and
        subscriptions, by room kind (``project``, ``workspace``)."""
        rooms = {"project": 0, "workspace": 0}
        subscriptions = {"project": 0, "workspace": 0}
        for room in self.rooms.values():
            kind = "workspace" if room.is_workspace else "project"
            rooms[kind] += 1
            subscriptions[kind] += len(room.live) + len(room.joining)
        return rooms, subscriptions
