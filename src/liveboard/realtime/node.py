"""The node: ties the hub, the broker, presence and the event log. What the app calls.

The node is the task service's ``EventPublisher`` (committed events go to the broker), the
broker's ``BrokerHandler`` (events from the broker go to the hub), the presence listener, and the
WebSocket sessions' way into rooms. Guarantees, on top of the hub's:

* Subscribing: the subscriber is registered in the hub *before* the log is read, and the read
  (membership, position, history) is one snapshot, so no event committed after the snapshot can
  be missed and none before it is sent twice. With ``since``, every event after ``since.offset``
  is sent, in order, once, then live events (CONTRACT §5.3), for the last
  ``settings.history_size`` events; beyond that the reply says ``recovered: false``.
* What the broker did not bring in order is read from the log, or the room is resynced
  (``repair.LogRepair``: gap fill, catch-up, the audit); a resync ends the subscriptions of the
  room here with ``resync``.
* Removing a member ends that user's subscriptions to the workspace's rooms on every session of
  this instance (``unsubscribed`` with reason ``forbidden``), right after the ``member:removed``
  event is delivered, and before any event committed after the removal is sent to them, by
  whichever path it comes:

  - live (the broker): the hub holds a project room's event until its workspace room has
    released the offset the event names (``BrokerEvent.workspace_offset``), filling that
    room's hole from the log if the removal's publish was lost;
  - from the log (gap fill, catch-up after an outage, the periodic audit, the rest of a
    history): a project room's events are read first, then its workspace room is brought up
    to date from a later read, then the events are released. Whatever the log held when the
    project's events were read, the workspace's later read holds too (CONTRACT §3);
  - the history of a ``since``: read in the same snapshot as the membership check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from liveboard import protocol
from liveboard.background import TaskSet
from liveboard.config import Settings
from liveboard.protocol import (
    MEMBER_REMOVED,
    BrokerEvent,
    CloseCode,
    Position,
    ProtocolError,
    RoomName,
    SequencedEvent,
    WireEvent,
    client_json,
    workspace_room,
)
from liveboard.realtime import admit_cache, repair, wiring
from liveboard.realtime.brokers import Broker
from liveboard.realtime.cold_reads import ColdReads
from liveboard.realtime.hub import Hub, Room
from liveboard.realtime.metrics import Metrics
from liveboard.realtime.ordering import RecoveryBuffer
from liveboard.realtime.outlet import Outlet
from liveboard.realtime.presence import PresenceDiff, PresenceManager
from liveboard.realtime.session import Session
from liveboard.realtime.shutdown import SHUTDOWN_BATCH, SHUTDOWN_SPREAD, shutdown_pauses
from liveboard.realtime.subscribe_read import SubscribeRead, SubscribeReader
from liveboard.store.database import Database

log = logging.getLogger("liveboard.node")


@dataclass(frozen=True, slots=True)
class _Admitted:
    """A subscription ``Node._admit`` has registered: where its stream starts, the history
    read with it, and the workspace room it began to watch (whose broker interest to take)."""

    start: Position
    history: Sequence[SequencedEvent]
    watches: str | None


class Node:
    """This instance's real-time layer."""

    def __init__(self, settings: Settings, db: Database, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.db = db
        self.metrics = metrics or Metrics()
        self.hub = Hub(
            self.metrics,
            on_slow_consumer=self.close_slow_consumer,
            on_gap=lambda room: self.repair.fill_later(room),
            on_resync=lambda room: self.repair.resync_room(room),
            on_workspace_events=self._on_workspace_events,
        )
        self.broker: Broker = wiring.make_broker(self, settings, db)
        self.presence: PresenceManager = wiring.make_presence(self, settings)
        self.sessions: dict[str, Session] = {}
        # user → their sessions: a list, since most users have one (a dict of one is 224 bytes)
        self.by_user: dict[str, list[Session]] = {}
        self._reserved: dict[str, int] = {}  # see ``reservation``
        self.accepting = True
        #: Subscribes under way: what ``max_handshakes`` caps (admission refuses upgrades with
        #: 503 at the cap).
        self.handshakes = 0
        self._interest: Counter[str] = Counter()
        self._tasks = TaskSet(log)
        self.repair = repair.LogRepair(
            self.hub, db, self.metrics, self._tasks, resync=self._resync_subscribers
        )
        self.reader = SubscribeReader(db, settings.history_size)
        self.cold_reads = ColdReads(self.hub, db, self._tasks)
        self.metrics.watch_node(self)

    # Lifecycle

    async def start(self) -> None:
        await self.broker.start()
        await self.presence.start()
        self.repair.start()

    async def shutdown(self) -> None:
        """Refuse new connections, close every socket with 1012 (spread out), stop the broker.

        Idempotent."""
        if not self.accepting:
            return
        self.accepting = False
        sessions = list(self.sessions.values())
        if sessions:
            pauses = shutdown_pauses(len(sessions), SHUTDOWN_SPREAD, SHUTDOWN_BATCH)
            for session, pause in zip(sessions, pauses, strict=True):
                session.close(CloseCode.RESTARTING, "server restarting")
                if pause:
                    await asyncio.sleep(pause)
            await asyncio.sleep(0.2)
        self.repair.stop()
        await self.presence.aclose()  # before the broker: it signals the other instances
        await self.broker.aclose()

    # EventPublisher: the task service hands committed events here

    async def publish(self, events: Sequence[BrokerEvent]) -> None:
        self.metrics.events_published.inc(len(events))
        await self.broker.publish(events)

    # BrokerHandler

    def on_events(self, events: Sequence[SequencedEvent]) -> None:
        self.hub.deliver(events)

    def on_broker_restored(self) -> None:
        """After a broker outage, read every active room's missed events from the log."""
        self.metrics.broker_reconnects.labels(self.broker.name).inc()
        self.repair.catch_up_all()

    def on_presence_signal(self, room: str) -> None:
        self.presence.on_signal(room)

    # PresenceListener

    def presence_changed(self, diff: PresenceDiff) -> None:
        self.hub.send_to_room(
            diff.room,
            protocol.encode_presence_update(diff.room, diff.users, diff.joined, diff.left),
        )

    # Sessions

    def register(self, session: Session) -> None:
        self.sessions[session.connection_id] = session
        mine = self.by_user.get(session.user_id)
        if mine is None:
            self.by_user[session.user_id] = [session]  # exactly one slot
        else:
            mine.append(session)
        self.metrics.connections_opened.inc()

    def connections_of(self, user_id: str) -> int:
        """Sessions of ``user_id``, counting upgrades admitted but not yet registered."""
        return len(self.by_user.get(user_id, ())) + self._reserved.get(user_id, 0)

    @contextlib.contextmanager
    def reservation(self, user_id: str) -> Iterator[None]:
        """Count one more connection of ``user_id`` until the block ends: for an upgrade that
        awaits between admission and ``register`` (aiohttp's handshake), so that upgrades of
        one user arriving together cannot all pass the per-user limit."""
        self._reserved[user_id] = self._reserved.get(user_id, 0) + 1
        try:
            yield
        finally:
            left = self._reserved[user_id] - 1
            if left:
                self._reserved[user_id] = left
            else:
                del self._reserved[user_id]

    async def disconnect(self, session: Session) -> None:
        """Forget a closed session (counted by how it ended): leave its rooms and presence."""
        if self.sessions.pop(session.connection_id, None) is not None:
            self.metrics.connections_closed.labels(session.ended_with).inc()
        mine = self.by_user.get(session.user_id)
        if mine is not None and session in mine:
            mine.remove(session)  # at most max_connections_per_user entries
            if not mine:
                del self.by_user[session.user_id]
        session.outlet.closed = True
        for room, workspace_id in session.drop_all_subscriptions():
            self._leave_room(room, workspace_id, session.outlet)
        present = session.leave_all_presence()
        await self.presence.leave_rooms(present, session.connection_id)

    # Subscriptions

    async def subscribe(self, session: Session, message: protocol.Subscribe) -> None:
        """Answer a ``subscribe``: ``subscribed``, then history if asked, then live events.

        Counted in ``handshakes`` while under way."""
        self.handshakes += 1
        try:
            await self._subscribe(session, message)
        finally:
            self.handshakes -= 1

    async def _subscribe(self, session: Session, message: protocol.Subscribe) -> None:
        name = message.room
        kind, rid = protocol.parse_room(name)
        again = session.is_subscribed(name)
        if not again and session.subscription_count() >= self.settings.max_subscriptions:
            raise ProtocolError(
                "too_many_subscriptions",
                f"at most {self.settings.max_subscriptions} rooms per connection",
                message.id,
            )
        outlet = session.outlet
        room = self.hub.join(name, outlet)
        if not again:
            await self._want(name)
        try:
            admitted = await self._admit(session, room, kind, rid, message)
        except BaseException:
            if not again:
                self._leave_room(name, None, outlet)
            raise
        if admitted is False:
            if not again:
                self._leave_room(name, None, outlet)
            elif session.is_subscribed(name):  # (a revocation may have ended it meanwhile)
                self._leave_room(name, session.drop_subscription(name), outlet)
                await self._leave_presence(session, name)
            raise ProtocolError("forbidden", f"you may not subscribe to {name}", message.id)
        if admitted is True:
            return
        # Registered: from here a failure ends the subscription as an unsubscribe does (its
        # workspace room's watch and broker interest included), unless a revocation or a
        # resync has ended it meanwhile, so that nothing is left or undone twice.
        try:
            if admitted.watches is not None:
                await self._want(admitted.watches)
            await self._stream_from(session, room, admitted.start, admitted.history)
        except BaseException:
            if session.is_subscribed(name):
                self._end_subscription(session, name, None)
            raise

    async def _admit(
        self,
        session: Session,
        room: Room,
        kind: str,
        rid: str,
        message: protocol.Subscribe,
    ) -> _Admitted | bool:
        """Check membership, read the position (and history) and register the subscription.

        Returns what its stream starts from once registered; False when refused; True when
        there is nothing more to do (the session closed, or the room was reset, meanwhile).

        A reconnect is answered from memory when it can be; one that finds its room's first
        read under way waits for it and asks memory again (``cold_reads``)."""
        since = message.since
        if since is None:
            return await self._admit_read(session, room, kind, rid, message, None)
        size = self.settings.history_size
        read = await self.cold_reads.from_memory(room, session.user_id, since, size)
        if read is not None:
            return await self._admit_read(session, room, kind, rid, message, read)
        claimed = self.cold_reads.claim(room.name)
        try:
            return await self._admit_read(session, room, kind, rid, message, None)
        finally:
            if claimed is not None:
                self.cold_reads.release(room, claimed)

    async def _admit_read(
        self,
        session: Session,
        room: Room,
        kind: str,
        rid: str,
        message: protocol.Subscribe,
        read: SubscribeRead | None,
    ) -> _Admitted | bool:
        """``_admit`` with what memory answered (``read``), or reading the database."""
        since = message.since
        cached = read is not None
        if read is None:
            read = await self.reader.read(kind, rid, room.name, session.user_id, since)
        if read is None:
            return False
        if since is not None:
            self.metrics.recoveries.labels("memory" if cached else "database").inc()
        admission, recovered, history = read.admission, read.recovered, read.history
        position = admission.position
        workspace_id, workspace_head = admission.workspace_id, admission.workspace_head
        workspace_name = workspace_room(workspace_id)
        after = since.offset if recovered and since is not None else position.offset
        if session.closing:
            # Closed while we read: the session will not be told, and disconnect() only knows
            # the rooms the session is subscribed to, so leave this one here.
            if not session.is_subscribed(room.name):
                self._leave_room(room.name, None, session.outlet)
            return True
        if session.revoked_after(workspace_id, workspace_head.offset):
            # Removed from the workspace after our snapshot was taken (first: the revocation
            # also ended the subscription this one renews, which is not a reset).
            return False
        if self.hub.rooms.get(room.name) is not room or session.outlet not in room.joining:
            # The room was reset while we read (resync): the client must start over.
            session.send(protocol.encode_resync(room.name, "continuity_lost"))
            return True
        # From here to the first await, nothing else runs: a revocation released later finds
        # the subscription recorded in the session.
        first = session.subscribe_to(room.name, workspace_id)
        if room.workspace_id is None:
            room.workspace_id = workspace_id
        if first and kind == "project":
            watched = self.hub.watch(workspace_name)
            self.hub.start_sequence(watched, workspace_head.epoch, workspace_head.offset)
        self.hub.start_sequence(room, position.epoch, position.offset, read.recent)
        if not cached:
            admit_cache.remember_member(self.hub.rooms, session.user_id, admission)
        session.send(
            protocol.encode_subscribed(
                room.name, position.offset, position.epoch, id=message.id, recovered=recovered
            )
        )
        return _Admitted(
            start=Position(offset=after, epoch=position.epoch),
            history=history,
            watches=workspace_name if first and kind == "project" else None,
        )

    async def _stream_from(
        self, session: Session, room: Room, start: Position, history: Sequence[SequencedEvent]
    ) -> None:
        """Send ``history`` and the events held meanwhile, merged; then make the subscriber live."""
        outlet = session.outlet
        merger = RecoveryBuffer(start)
        pending: Sequence[SequencedEvent] = history
        while True:
            for event in self.hub.take_held(room, outlet):
                merger.add_live(event)
            result = merger.merge(pending)
            session.send_many([client_json(e) for e in result.deliver])
            if result.resync:
                self._end_subscription(session, room.name, None)
                session.send(protocol.encode_resync(room.name, "epoch_changed"))
                return
            if result.missing is None:
                break
            low, high = result.missing
            pending = await self.repair.read_range(room.name, low, high)
            await self.repair.workspace_first(room)  # may end this subscription
            if session.closing or outlet not in room.joining:
                return
            if not pending:  # the log no longer has it
                self._end_subscription(session, room.name, None)
                session.send(protocol.encode_resync(room.name, "history_unavailable"))
                return
        self.hub.complete_join(room, outlet, merger.position.offset)

    async def unsubscribe(self, session: Session, message: protocol.Unsubscribe) -> None:
        if not session.is_subscribed(message.room):
            raise ProtocolError(
                "not_subscribed", f"not subscribed to {message.room}", message.id, abusive=False
            )
        self._end_subscription(session, message.room, None)
        await self._leave_presence(session, message.room)
        session.send(protocol.encode_unsubscribed(message.room, id=message.id))

    def _end_subscription(self, session: Session, room: str, reason: str | None) -> None:
        workspace_id = session.drop_subscription(room)
        self._leave_room(room, workspace_id, session.outlet)
        if reason is not None:
            session.send(protocol.encode_unsubscribed(room, reason=reason))
        if session.is_present(room):
            self._spawn(self._leave_presence(session, room))

    def _leave_room(self, room: str, workspace_id: str | None, outlet: Outlet) -> None:
        self.hub.leave(room, outlet)
        self._spawn(self._unwant(room))
        if workspace_id is not None and not RoomName.of(room).is_workspace:
            self.hub.unwatch(workspace_room(workspace_id))
            self._spawn(self._unwant(workspace_room(workspace_id)))

    # Presence

    async def presence_action(self, session: Session, message: protocol.Presence) -> None:
        room = message.room
        if not session.is_subscribed(room):
            leaving = message.action == "leave"  # nothing to undo: not abuse
            raise ProtocolError(
                "not_subscribed", f"subscribe to {room} first", message.id, abusive=not leaving
            )
        if message.action == "leave":
            await self._leave_presence(session, room)
            return
        session.mark_present(room)
        users, changed = await self.presence.join(
            room, session.connection_id, session.user_id, session.principal.name
        )
        if not changed:
            session.send(protocol.encode_presence_update(room, users, [], []))

    async def _leave_presence(self, session: Session, room: str) -> None:
        if session.mark_absent(room):
            await self.presence.leave(room, session.connection_id)

    # Revocation

    def _on_workspace_events(self, room: Room, events: list[SequencedEvent]) -> None:
        """Released events of a workspace room (in order, once, each as it is released, before
        anything after it): apply revocations."""
        for event in events:
            if event.type == MEMBER_REMOVED:
                self._revoke(room, event)

    def _revoke(self, workspace: Room, event: SequencedEvent) -> None:
        if isinstance(event, WireEvent):
            event = event.full()  # (a membership change: the one kind of event read whole)
        user_id = event.data.get("userId")
        if not isinstance(user_id, str):
            return
        admit_cache.forget_member(workspace, user_id)  # first: no subscribe from memory after it
        workspace_id = RoomName.of(event.room).id
        for session in list(self.by_user.get(user_id, ())):
            # Remembered so that a subscription being admitted from an older snapshot is refused.
            session.note_revocation(workspace_id, event.offset)
            for room in session.rooms_of_workspace(workspace_id):
                self._end_subscription(session, room, "forbidden")

    # Broker interest: rooms with local subscribers, plus their workspaces (for revocations)

    async def _want(self, room: str) -> None:
        self._interest[room] += 1
        if self._interest[room] == 1:
            await self.broker.subscribe(room)

    async def _unwant(self, room: str) -> None:
        self._interest[room] -= 1
        if self._interest[room] <= 0:
            del self._interest[room]
            await self.broker.unsubscribe(room)

    # Resyncs (``LogRepair`` decides which rooms), slow consumers

    def _resync_subscribers(self, room: Room) -> None:
        """``LogRepair``'s resync: send ``room``'s subscribers here ``resync`` and end their
        subscriptions."""
        payload = protocol.encode_resync(room.name, "continuity_lost")
        self.hub.forget_recent(room)
        outlets = [*room.live, *room.joining]
        for outlet in outlets:
            session = self.sessions.get(outlet.connection_id)
            if session is not None and session.is_subscribed(room.name):
                self._end_subscription(session, room.name, None)
                session.send(payload)

    def close_slow_consumer(self, outlet: Outlet) -> None:
        """Close with 4008 the connection whose unsent bytes passed ``slow_consumer_bytes``
        (its events from the hub, or its pongs), counted once in ``slow_consumer_closes``."""
        session = self.sessions.get(outlet.connection_id)
        if session is not None and not session.closing:
            self.metrics.slow_consumer_closes.inc()
            ids = {"connection_id": outlet.connection_id, "user_id": outlet.user_id}
            log.info("closing slow consumer %s", outlet.connection_id, extra=ids)
            session.close_now(CloseCode.SLOW_CONSUMER, "slow consumer")

    # Housekeeping

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.spawn(coro)
