"""The PostgreSQL broker: ``NOTIFY`` wakes the other instances, the event log is the payload.

For a deployment with PostgreSQL and no Redis that runs several instances or ``--workers``
(``LIVEBOARD_BROKER=postgres``). How it works:

* Publishing: the events go to this instance's handler at once (CONTRACT §5.4), then one
  ``pg_notify`` per room names the room's highest offset and this instance
  (``"<room> <offset> <instance>"``) on the installation's channel
  (``open_log_sql.wakeup_channel``), the one ``liveboard_emit`` notifies. Publishes made while a
  notification is on its way go out together in the next one (one round trip), on a connection
  of the broker's own (not the pool's). A notification that cannot be sent (the database is
  unreachable) is kept and sent with the next one that can, so the other instances see the
  room's head move and read what they missed; meanwhile ``publish`` returns at once.
* Receiving: one connection per instance ``LISTEN``s (``brokers.wakeup.LogWakeup``: pings,
  reconnects).
  A notification of a subscribed room, from another instance or from ``liveboard_emit``, has
  the room read from the log (``eventlog.read_events_held``), from the last offset read for it
  to the offset named. One read per room at a time: notifications arriving meanwhile make it
  read once more, up to the highest offset named, so a busy room costs a read per round trip,
  not per event. A project room's events name the head of its workspace room read in the same
  snapshot, so the hub holds them until every membership change before them is applied
  (CONTRACT §3). The instance's own notifications are ignored: it delivered those events.
* Outages: when the listening connection is lost, events are missed until it is back; then
  ``on_broker_restored`` has the node read every active room's log (the Redis broker's rule).
  ``up`` is whether a connection listens.
* Presence signals: carried on the presence channel (``presence_postgres``), not by
  ``publish_presence``, which does nothing here.

Costs and limits, for choosing a broker (docs/operations.md): every instance receives every
notification of the installation (``NOTIFY`` has no per-room channels worth having: a channel
per room would need a ``LISTEN`` per room on one connection), and reads the log once per
busy room per round trip; PostgreSQL serialises the commits of notifying transactions on one
queue lock. The notifications are sent outside the write transaction, so a process that dies
between commit and notify leaves the event to the audit (``repair.AUDIT_INTERVAL``), exactly
as a lost Redis publish does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # (no type information shipped)

from liveboard.background import TaskSet
from liveboard.protocol import BrokerEvent
from liveboard.realtime.brokers.base import BrokerHandler
from liveboard.realtime.brokers.wakeup import (
    CONNECT_TIMEOUT,
    RETRY_MAX,
    RETRY_MIN,
    LogWakeup,
    parse_sender,
)
from liveboard.store import eventlog
from liveboard.store.database import Database
from liveboard.store.database_url import parse_database_url

__all__ = ["PUBLISH_TIMEOUT", "READ_BATCH", "START_TIMEOUT", "PostgresBroker", "payload_of"]

log = logging.getLogger("liveboard.broker")

#: How long a notification may take before it is given up (kept to be sent again).
PUBLISH_TIMEOUT = 1.0
#: How long ``start`` waits for the first ``LISTEN`` before it returns anyway.
START_TIMEOUT = 1.0
#: Events read from the log per query.
READ_BATCH = 1000

#: The notifying connection's name in ``pg_stat_activity``.
NOTIFY_SETTINGS = {"application_name": "liveboard notify"}
_NOTIFY = "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload"


def payload_of(room: str, first: int, offset: int, instance: str) -> str:
    """A notification of this broker: ``instance`` published ``room``'s events ``first`` to
    ``offset``."""
    return f"{room} {offset} {instance} {first}"


class PostgresBroker:
    """See the module. ``db`` is the instance's pool (the log is read through it); the
    broker's two connections (listening, notifying) are opened from ``database_url``."""

    name = "postgres"

    def __init__(
        self,
        database_url: str,
        handler: BrokerHandler,
        *,
        db: Database,
        channel: str,
        instance_id: str,
        extra_channels: dict[str, Callable[[str], None]] | None = None,
    ) -> None:
        self._url = database_url
        self._connect_args = parse_database_url(database_url).asyncpg_arguments()
        self._connect_args.pop("timeout", None)  # (the broker's own, shorter: see ``_execute``)
        # (The URL's own startup parameters, and the connection's name.)
        self._server_settings = {
            **self._connect_args.pop("server_settings", {}),
            **NOTIFY_SETTINGS,
        }
        self._handler = handler
        self._db = db
        self._channel = channel
        self._instance = instance_id
        self._wakeup = LogWakeup(
            database_url,
            channel,
            on_wake=lambda _room, _offset: None,
            on_listening=self._listening,
            on_payload=self._notified,
            extra=extra_channels,
        )
        self._rooms: set[str] = set()
        #: room → the highest offset read from the log for it (what was handed on).
        self._handed: dict[str, int] = {}
        #: room → the highest offset a notification named (what is to be read).
        self._wanted: dict[str, int] = {}
        self._reading: set[str] = set()
        #: room → (first, last) offset: notifications not sent yet (for the next round trip).
        self._pending: dict[str, tuple[int, int]] = {}
        #: room → the lowest offset named since the last read (where an unread room starts).
        self._from: dict[str, int] = {}
        self._batch: asyncio.Future[None] | None = None
        self._resend: asyncio.TimerHandle | None = None
        self._sender: asyncio.Task[None] | None = None
        self._conn: Any = None
        self._conn_lock = asyncio.Lock()
        self._retry_at = 0.0
        self._retry_delay = RETRY_MIN
        self._send_failing = False
        self._listened_before = False
        self._tasks = TaskSet(log)
        self._closed = False
        #: Called each time a connection listens again (presence asks about its rooms then).
        self.listening_hooks: list[Callable[[], None]] = []
        #: Counters for tests and metrics.
        self.publish_failures = 0
        self.reconnects = 0
        self.malformed_messages = 0
        self.log_reads = 0

    @property
    def up(self) -> bool:
        return not self._closed and self._wakeup.listening.is_set()

    async def start(self) -> None:
        self._wakeup.start()
        try:
            await asyncio.wait_for(self._wakeup.listening.wait(), START_TIMEOUT)
        except TimeoutError:
            log.warning("not listening to PostgreSQL yet; events from other instances wait")

    # Publishing

    async def publish(self, events: Sequence[BrokerEvent]) -> None:
        if self._closed or not events:
            return
        self._handler.on_events(events)
        for event in events:
            # Contiguous with what was read: this instance's own events need no read later.
            handed = self._handed.get(event.room)
            if handed is not None and event.offset == handed + 1:
                self._handed[event.room] = event.offset
            self._keep(event.room, event.offset, event.offset)
        await self._send_soon()

    def _keep(self, room: str, first: int, last: int) -> None:
        held = self._pending.get(room)
        self._pending[room] = (
            (first, last) if held is None else (min(held[0], first), max(held[1], last))
        )

    async def publish_presence(self, rooms: Sequence[str]) -> None:
        return None  # presence has its own channel (``presence_postgres``)

    async def notify(self, channel: str, payloads: Sequence[str]) -> bool:
        """Send ``payloads`` on ``channel`` (another channel of the installation: presence) in
        one round trip on the notifying connection. False when it could not be sent."""
        if self._closed or not payloads:
            return False
        return await self._execute(channel, list(payloads))

    async def _send_soon(self) -> None:
        """Wait until the pending notifications (this publish's among them) went out, or were
        kept for later: one round trip carries every publish made while the last was on its
        way."""
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
        batch = self._batch
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send_batches())
        await asyncio.shield(batch)

    async def _send_batches(self) -> None:
        while self._batch is not None:
            batch, self._batch = self._batch, None
            pending, self._pending = self._pending, {}
            try:
                if pending:
                    payloads = [
                        payload_of(room, first, last, self._instance)
                        for room, (first, last) in pending.items()
                    ]
                    if not await self._execute(self._channel, payloads):
                        self.publish_failures += 1
                        for room, (first, last) in pending.items():  # kept for the next one
                            self._keep(room, first, last)
                        self._resend_later()
            finally:
                if not batch.done():
                    batch.set_result(None)

    def _resend_later(self) -> None:
        """Try the kept notifications again once the retry delay has passed, without waiting
        for another publish (a room may have no more events to publish for a while)."""
        if self._resend is None and not self._closed:
            loop = asyncio.get_running_loop()
            delay = max(self._retry_at - loop.time(), 0.0) + 0.001
            self._resend = loop.call_later(delay, self._resend_now)

    def _resend_now(self) -> None:
        self._resend = None
        if self._pending and not self._closed:
            self._tasks.spawn(self._send_soon())

    async def _execute(self, channel: str, payloads: list[str]) -> bool:
        # One command at a time on the connection (publishes and presence share it).
        async with self._conn_lock:
            return await self._execute_locked(channel, payloads)

    async def _execute_locked(self, channel: str, payloads: list[str]) -> bool:
        loop = asyncio.get_running_loop()
        if self._conn is None:
            if loop.time() < self._retry_at:
                return False  # failing fast during an outage
            try:
                self._conn = await asyncpg.connect(
                    **self._connect_args,
                    timeout=min(CONNECT_TIMEOUT, PUBLISH_TIMEOUT),
                    server_settings=self._server_settings,
                )
            except Exception as error:
                self._failed(loop.time(), error)
                return False
        try:
            await self._conn.execute(_NOTIFY, channel, payloads, timeout=PUBLISH_TIMEOUT)
        except Exception as error:
            conn, self._conn = self._conn, None
            conn.terminate()
            self._failed(loop.time(), error)
            return False
        if self._send_failing:
            log.info("sending notifications to PostgreSQL works again")
        self._send_failing = False
        self._retry_delay = RETRY_MIN
        return True

    def _failed(self, now: float, error: Exception) -> None:
        if not self._send_failing:
            log.warning("cannot send notifications to PostgreSQL: %s", error)
        self._send_failing = True
        self._retry_at = now + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)

    # Receiving

    async def subscribe(self, room: str) -> None:
        # One LISTEN covers every room: the room is wanted from now on. (While nothing
        # listens, ``on_broker_restored`` follows the return of the connection.)
        if not self._closed:
            self._rooms.add(room)

    async def unsubscribe(self, room: str) -> None:
        self._rooms.discard(room)
        self._handed.pop(room, None)
        self._wanted.pop(room, None)
        self._from.pop(room, None)

    def _listening(self) -> None:
        again = self._listened_before
        self._listened_before = True
        if again:
            self.reconnects += 1
        # Notifications sent while nothing listened are lost to this instance: read the log
        # of every room wanted, the first time too if rooms were wanted before it listened.
        if again or self._rooms:
            self._handler.on_broker_restored()
        for hook in self.listening_hooks:
            hook()
        if self._pending and (self._sender is None or self._sender.done()):
            # Kept notifications: the database answers again, send them now.
            self._tasks.spawn(self._send_soon())

    def _notified(self, payload: str) -> None:
        parsed = parse_sender(payload)
        if parsed is None:
            self.malformed_messages += 1
            log.warning("ignored a malformed notification %r", payload[:200])
            return
        room, offset, sender, first = parsed
        if self._closed or sender == self._instance or room not in self._rooms:
            return
        handed = self._handed.get(room)
        if handed is not None and offset <= handed:
            return
        if offset > self._wanted.get(room, 0):
            self._wanted[room] = offset
        if first < self._from.get(room, first + 1):
            self._from[room] = first
        if room not in self._reading:
            self._reading.add(room)
            self._tasks.spawn(self._read(room), name=f"read {room}")

    async def _read(self, room: str) -> None:
        """Read ``room``'s log up to the highest offset named, until no more is wanted."""
        try:
            while not self._closed and room in self._rooms:
                wanted = self._wanted.get(room)
                handed = self._handed.get(room)
                if wanted is None or (handed is not None and wanted <= handed):
                    return
                # A room not read yet starts at the first offset named since it was wanted.
                start = self._from.pop(room, wanted)
                after = start - 1 if handed is None else handed
                self.log_reads += 1
                async with self._db.read_one() as conn:
                    events = await eventlog.read_events_held(
                        conn, room, after=after, up_to=wanted, limit=READ_BATCH
                    )
                if self._closed or room not in self._rooms:
                    return
                read_to = events[-1].offset if len(events) == READ_BATCH else wanted
                # (Never behind: a local publish may have moved it on meanwhile.)
                self._handed[room] = max(read_to, self._handed.get(room, read_to))
                if events:
                    self._handler.on_events(events)
        except Exception:
            # The database is unreachable: the hub finds the hole, or the audit the head.
            log.warning("could not read %s from the log after a notification", room, exc_info=True)
        finally:
            self._reading.discard(room)

    async def aclose(self) -> None:
        if self._closed:
            return
        if self._batch is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._batch), PUBLISH_TIMEOUT * 2)
        self._closed = True
        if self._resend is not None:
            self._resend.cancel()
        self._tasks.cancel()
        await self._wakeup.aclose()
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        if self._batch is not None and not self._batch.done():
            self._batch.set_result(None)  # nobody waits on a closed broker
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await asyncio.wait_for(conn.close(), PUBLISH_TIMEOUT)
            except Exception:
                conn.terminate()
