"""The Redis broker: events travel between instances over Redis pub/sub, one channel per room.

Each room ``R`` is the channel ``liveboard:room:R``; a message is one event's
``encode_broker_event`` bytes, received as a ``WireEvent`` (``decode_wire_event``: only the
fields sequencing uses are parsed, and the hub writes the message's client JSON to the sockets as
it came; see ``protocol.events`` for the layout). Guarantees, on top of those of ``base.Broker``:

* ``publish`` first hands the events to the local handler, so subscribers on this instance get
  them whatever the state of Redis (CONTRACT §5.4), then PUBLISHes them in one round trip
  (``brokers.redis_publisher``, on a pool of its own: ``brokers.redis_pools``). It
  never raises for an outage and waits at most ``PUBLISH_TIMEOUT`` for Redis: on failure the
  events are dropped (the log has them) and the broker is marked down. The instance also gets its
  own events back from Redis; the node drops those duplicates by offset.
* The last dropped event of each room is published again once Redis answers, so that other
  instances see the hole and fill it from the log even if their own connection never broke.
* ``subscribe`` returns once Redis has confirmed the SUBSCRIBE (at once for a channel still
  subscribed, see ``unsubscribe`` below), so an event published after it returns is received.
  While the subscriber connection is down it returns at once: the room is remembered,
  subscribed again on reconnection, and ``on_broker_restored`` follows.
* The subscriber connection is re-established forever, with jittered exponential backoff from
  ``BACKOFF_MIN`` to ``BACKOFF_MAX`` seconds. Once every wanted channel is subscribed again the
  broker is ``up`` and calls ``handler.on_broker_restored()``, after which the node reads what it
  missed from the log. An idle connection is PINGed, so a silent network failure is noticed too.
* Messages already received are delivered in one ``on_events`` call per socket read (at most
  ``MAX_BATCH`` events a call), without waiting for more: the subscriber connection is read by
  ``brokers.redis_subscriber`` (hiredis on the socket, no task woken per message). Malformed
  payloads are logged and skipped.
* ``unsubscribe`` lets go of a room's channel ``unsubscribe_delay`` seconds later (default
  ``UNSUBSCRIBE_DELAY``), unless the room is subscribed again meanwhile, which then costs no
  command and no wait: rooms that lose their last local subscriber and get one back soon (a
  reconnect, a board reopened, tabs coming and going) do not cost a SUBSCRIBE and UNSUBSCRIBE
  each time. Meanwhile its messages are dropped unread, as after an UNSUBSCRIBE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Final

import hiredis
import msgspec
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from liveboard.background import TaskSet
from liveboard.protocol import BrokerEvent, SequencedEvent, decode_wire_event
from liveboard.realtime.brokers.base import BrokerHandler
from liveboard.realtime.brokers.redis_pools import REDIS_ERRORS, connection_pool, describe
from liveboard.realtime.brokers.redis_publisher import (
    CHANNEL_PREFIX,
    PRESENCE_SIGNAL,
    RedisPublisher,
    channel_of,
)
from liveboard.realtime.brokers.redis_subscriber import SubscriberConnection, dispatch

log = logging.getLogger("liveboard.broker.redis")

__all__ = ["CHANNEL_PREFIX", "PRESENCE_SIGNAL", "RedisBroker", "channel_of"]

# Timeouts (seconds)
#: Longest a SUBSCRIBE/UNSUBSCRIBE waits for its confirmation before the link is deemed broken.
CONFIRM_TIMEOUT: Final = 2.0
#: An idle subscriber connection is PINGed this often (``redis_publisher`` has its own).
PING_INTERVAL: Final = 1.0
PING_TIMEOUT: Final = 2.0
#: ``start`` waits this long for the first connection (it never fails: Redis may come later).
START_TIMEOUT: Final = 1.0
#: How long a channel stays subscribed after ``unsubscribe`` (see the module docstring).
UNSUBSCRIBE_DELAY: Final = 5.0
#: ``aclose`` waits this long for publishes in progress.
CLOSE_TIMEOUT: Final = 2.0
BACKOFF_MIN: Final = 0.1
BACKOFF_MAX: Final = 2.0

# Limits
MAX_BATCH: Final = 1000


class RedisBroker:
    """Carries events between instances through Redis pub/sub; see the module docstring."""

    name = "redis"

    def __init__(
        self,
        redis_url: str,
        handler: BrokerHandler,
        *,
        instance_id: str,
        unsubscribe_delay: float = UNSUBSCRIBE_DELAY,
    ) -> None:
        self._handler = handler
        self._unsubscribe_delay = unsubscribe_delay
        self._publisher = RedisPublisher(redis_url, instance_id=instance_id, on_change=self._report)
        self._presence_payload = self._publisher.presence_payload
        # Only the factory of the subscriber connection (``make_connection``, which no pool
        # limit applies to; one at a time: ``_session``). No hidden retries: every reconnect goes
        # through the supervisor, which re-subscribes and calls ``on_broker_restored``.
        self._subscriber_pool = connection_pool(
            redis_url,
            max_connections=1,
            timeout=CONFIRM_TIMEOUT,
            client_name=f"liveboard:{instance_id}:sub",
            fixed={"protocol": 2, "retry": Retry(NoBackoff(), 0)},  # the reader parses RESP2
        )
        #: Times the subscriber connection was re-established after being up.
        self.reconnects = 0
        #: Messages on a room channel that were not a valid event.
        self.malformed_messages = 0

        self._closed = False
        self._closing = False
        self._wanted: set[bytes] = set()
        # Channels the current subscriber connection has confirmed (SUBSCRIBE answered).
        self._confirmed: set[bytes] = set()
        # Channels unsubscribed but not let go yet: their UNSUBSCRIBE is due at the timer.
        self._lingering: dict[bytes, asyncio.TimerHandle] = {}
        self._unsubscribing = TaskSet(log)
        self._conn: SubscriberConnection | None = None  # the subscriber connection, once open
        self._command_lock = asyncio.Lock()  # one SUBSCRIBE/UNSUBSCRIBE in flight at a time
        self._waiter: tuple[bytes, bytes, asyncio.Future[None]] | None = None
        self._subscriber_up = False
        self._session_was_up = False
        self._ever_up = False
        self._started = asyncio.Event()
        self._reported_up: bool | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        """True when both the subscriber connection and the last publish (or PING) succeeded."""
        return self._subscriber_up and not self._publisher.down and not self._closed

    async def start(self) -> None:
        """Start the subscriber and health tasks; wait up to ``START_TIMEOUT`` to be ``up``."""
        if self._supervisor is not None or self._closed:
            return
        self._supervisor = asyncio.create_task(self._supervise(), name="redis-broker-supervisor")
        self._watcher = asyncio.create_task(self._publisher.watch(), name="redis-broker-watcher")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(START_TIMEOUT):
                await self._started.wait()

    # Publishing

    async def publish(self, events: Sequence[BrokerEvent]) -> None:
        """Deliver locally at once, then PUBLISH; never raises for an outage (see module doc)."""
        if self._closed or not events:
            return
        self._deliver(events)
        await self._publisher.send(events)

    async def publish_presence(self, rooms: Sequence[str]) -> None:
        """Signal a presence change of each of ``rooms`` to the other instances, in one
        pipeline (best effort)."""
        if self._closed or not rooms:
            return
        await self._publisher.publish_presence(rooms)

    async def flush(self, timeout: float) -> None:  # noqa: ASYNC109 (bounded by design)
        """Wait (at most ``timeout`` s) for publishes in progress and re-send dropped events."""
        await self._publisher.flush(timeout)

    @property
    def publish_failures(self) -> int:
        """``publish`` calls (and re-sends) whose PUBLISH failed."""
        return self._publisher.failures

    # Subscribing

    async def subscribe(self, room: str) -> None:
        """Returns once Redis confirmed the SUBSCRIBE, or at once while disconnected (or when
        the channel is still subscribed: see ``unsubscribe``)."""
        if self._closed:
            return
        channel = channel_of(room)
        lingering = self._lingering.pop(channel, None)
        if lingering is not None:
            lingering.cancel()
        if channel in self._wanted and channel in self._confirmed:
            return  # subscribed on the live connection already
        self._wanted.add(channel)
        # Shielded: a caller cancelled mid-command must not break the shared connection.
        await asyncio.shield(self._command(b"subscribe", channel))

    async def unsubscribe(self, room: str) -> None:
        """Let go of ``room``'s channel ``unsubscribe_delay`` seconds from now, unless it is
        subscribed again meanwhile; with no delay, returns once Redis confirmed the
        UNSUBSCRIBE, or at once while disconnected."""
        if self._closed:
            return
        channel = channel_of(room)
        if channel not in self._wanted or channel in self._lingering:
            return
        if self._unsubscribe_delay <= 0:
            await self._unsubscribe(channel)
            return
        loop = asyncio.get_running_loop()
        self._lingering[channel] = loop.call_later(self._unsubscribe_delay, self._let_go, channel)

    def _let_go(self, channel: bytes) -> None:
        del self._lingering[channel]
        # Neither wanted nor to be trusted as subscribed from this moment, though the
        # UNSUBSCRIBE's answer is still to come: a subscribe() made meanwhile sends its own
        # SUBSCRIBE, queued behind it (or makes it moot: see ``_command``), and waits for it.
        self._wanted.discard(channel)
        self._confirmed.discard(channel)
        self._unsubscribing.spawn(self._command(b"unsubscribe", channel))

    async def _unsubscribe(self, channel: bytes) -> None:
        self._wanted.discard(channel)
        self._confirmed.discard(channel)
        await asyncio.shield(self._command(b"unsubscribe", channel))

    async def _command(self, kind: bytes, channel: bytes) -> None:
        # Serialised, so the next confirmation read for ``channel`` is this command's.
        async with self._command_lock:
            if (kind == b"subscribe") != (channel in self._wanted):
                return  # overtaken by a later call for the same room, queued behind this one
            conn = self._conn
            if conn is None or not conn.is_connected:
                return  # the next session subscribes every wanted channel
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiter = (kind, channel, future)
            try:
                conn.send((kind.upper(), channel))
                await asyncio.wait_for(future, CONFIRM_TIMEOUT)
            except Exception:
                # Not sent (the reader may even have closed the connection meanwhile) or not
                # confirmed: the link is broken. End the session: a reconnect and a catch-up follow.
                if self._conn is conn and self._reader is not None:
                    self._reader.cancel()
            finally:
                self._waiter = None

    async def _supervise(self) -> None:
        """Run subscriber sessions forever, restarting a dead one after a jittered backoff."""
        delay = BACKOFF_MIN
        while not self._closed:
            reader = asyncio.create_task(self._session(), name="redis-broker-reader")
            self._reader = reader
            try:
                await asyncio.wait({reader})
            except asyncio.CancelledError:
                reader.cancel()
                raise
            if self._closed:
                return
            error = None if reader.cancelled() else reader.exception()
            if error is not None and not isinstance(error, REDIS_ERRORS):
                log.error("Redis subscriber failed unexpectedly", exc_info=error)
            if self._session_was_up:
                delay = BACKOFF_MIN
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _session(self) -> None:
        """One subscriber connection: subscribe every wanted channel, read until it breaks."""
        self._session_was_up = False
        pool = self._subscriber_pool
        pending: set[bytes] = set()
        restore = False
        sub: SubscriberConnection | None = None

        def on_replies(replies: list[object]) -> None:
            self._on_replies(replies, pending, restore)

        try:
            sub = await SubscriberConnection.open(
                pool.make_connection(),  # type: ignore[no-untyped-call]
                on_replies,
                ping_interval=PING_INTERVAL,
                ping_timeout=PING_TIMEOUT,
            )
            async with self._command_lock:
                # Snapshot and publication of ``_conn`` together: a later subscribe sends its own.
                channels = sorted(self._wanted)
                pending.update(channels)
                restore = self._ever_up or bool(channels)
                self._conn = sub
                if channels:
                    sub.send(("SUBSCRIBE", *channels))
            if not pending:
                self._session_up(restore)
            await sub.wait_closed()
        except REDIS_ERRORS as exc:
            self._end_session(sub, describe(exc))
            raise
        finally:
            self._end_session(sub, "subscriber connection closed")
            if sub is not None:
                sub.close()

    def _on_replies(self, replies: list[object], pending: set[bytes], restore: bool) -> None:
        """Every reply of one socket read. Raises (ending the session) on an error reply."""
        dispatch(replies, lambda r, ev: self._on_reply(r, ev, pending), self._deliver, MAX_BATCH)
        if not self._subscriber_up and not pending:
            self._session_up(restore)

    def _on_reply(self, reply: object, events: list[SequencedEvent], pending: set[bytes]) -> None:
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        if not isinstance(reply, list) or len(reply) != 3:
            return  # PONG
        kind, channel, payload = reply
        if kind == b"message":
            if channel not in self._wanted or channel in self._lingering:
                return  # arrived before our UNSUBSCRIBE took effect, or lingering
            if isinstance(payload, bytes) and payload.startswith(PRESENCE_SIGNAL):
                if payload != self._presence_payload:
                    room = channel.decode(errors="replace").removeprefix(CHANNEL_PREFIX)
                    try:
                        self._handler.on_presence_signal(room)
                    except Exception:
                        log.exception("on_presence_signal failed")
                return
            try:
                event = decode_wire_event(payload)
                if channel_of(event.room) != channel:
                    raise ValueError(f"an event of room {event.room!r}")
            except (msgspec.DecodeError, TypeError, ValueError) as exc:
                self.malformed_messages += 1
                log.warning("ignored a malformed message on %r: %s", channel, exc)
            else:
                events.append(event)
            return
        if kind == b"subscribe":
            pending.discard(channel)
            self._confirmed.add(channel)
        elif kind == b"unsubscribe":
            self._confirmed.discard(channel)
        waiter = self._waiter
        if waiter is not None and waiter[:2] == (kind, channel) and not waiter[2].done():
            waiter[2].set_result(None)

    def _session_up(self, restore: bool) -> None:
        if self._ever_up:
            self.reconnects += 1
        self._ever_up = self._session_was_up = self._subscriber_up = True
        self._started.set()
        self._report()
        if restore:
            try:
                self._handler.on_broker_restored()
            except Exception:
                log.exception("on_broker_restored failed")

    def _end_session(self, conn: SubscriberConnection | None, reason: str) -> None:
        if conn is not None and self._conn is conn:
            self._conn = None
            self._confirmed.clear()
            waiter = self._waiter
            if waiter is not None and not waiter[2].done():
                waiter[2].set_result(None)  # released: the room is subscribed on reconnection
        self._subscriber_up = False
        self._report(reason)

    # Shared

    def _deliver(self, events: Sequence[SequencedEvent]) -> None:
        try:
            self._handler.on_events(events)
        except Exception:
            log.exception("the broker handler failed on %d events", len(events))

    def _report(self, reason: str = "") -> None:
        """Log each change of ``up`` once: one warning per outage, one line when it ends."""
        up = self.up
        if self._closed or up == self._reported_up:
            return
        if up:
            log.info("Redis reachable: %d rooms subscribed", len(self._wanted))
        else:
            log.warning("Redis unreachable (%s); events are delivered locally only", reason)
        self._reported_up = up

    async def aclose(self) -> None:
        """Flush publishes in progress (at most ``CLOSE_TIMEOUT`` s), stop, close. Idempotent."""
        if self._closing:
            return
        self._closing = True
        await self.flush(CLOSE_TIMEOUT)
        self._closed = True
        for timer in self._lingering.values():
            timer.cancel()
        self._lingering.clear()
        self._unsubscribing.cancel()  # the connection closes below anyway
        await self._unsubscribing.wait()
        tasks = {t for t in (self._supervisor, self._watcher, self._reader) if t is not None}
        pending = {t for t in tasks if not t.done()}
        while pending:
            # Repeated: a cancellation can be swallowed by a library call that completes at the
            # same moment (``asyncio.wait_for`` on Python 3.11 does that).
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
        for task in tasks:
            if not task.cancelled():
                task.exception()  # retrieved: the supervisor may not have done it
        await self._publisher.aclose()
        await self._subscriber_pool.disconnect()
