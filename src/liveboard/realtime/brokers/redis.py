"""The Redis broker: events travel between instances over Redis pub/sub, one channel per room.

Each room ``R`` is the channel ``liveboard:room:R``; a message is one event's
``encode_broker_event`` bytes. Guarantees, on top of those of ``base.Broker``:

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
import logging
import random
from typing import Final

import hiredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from liveboard.protocol import BrokerEvent
from liveboard.realtime.brokers.base import BrokerHandler
from liveboard.realtime.brokers.redis_base import (
    CLOSE_TIMEOUT,
    START_TIMEOUT,
    UNSUBSCRIBE_DELAY,
    RedisBrokerBase,
)
from liveboard.realtime.brokers.redis_pools import REDIS_ERRORS, connection_pool, describe
from liveboard.realtime.brokers.redis_publisher import CHANNEL_PREFIX, PRESENCE_SIGNAL, channel_of
from liveboard.realtime.brokers.redis_subscriber import SubscriberConnection, dispatch

log = logging.getLogger("liveboard.broker.redis")

__all__ = [
    "CHANNEL_PREFIX",
    "CLOSE_TIMEOUT",
    "PRESENCE_SIGNAL",
    "START_TIMEOUT",
    "UNSUBSCRIBE_DELAY",
    "RedisBroker",
    "channel_of",
]

# Timeouts (seconds)
#: Longest a SUBSCRIBE/UNSUBSCRIBE waits for its confirmation before the link is deemed broken.
CONFIRM_TIMEOUT: Final = 2.0
#: An idle subscriber connection is PINGed this often (``redis_publisher`` has its own).
PING_INTERVAL: Final = 1.0
PING_TIMEOUT: Final = 2.0
BACKOFF_MIN: Final = 0.1
BACKOFF_MAX: Final = 2.0

# Limits
MAX_BATCH: Final = 1000


class RedisBroker(RedisBrokerBase):
    """Carries events between instances through Redis pub/sub; see the module docstring."""

    SUBSCRIBE = b"subscribe"
    UNSUBSCRIBE = b"unsubscribe"
    CLUSTER = False

    def __init__(
        self,
        redis_url: str,
        handler: BrokerHandler,
        *,
        instance_id: str,
        unsubscribe_delay: float = UNSUBSCRIBE_DELAY,
    ) -> None:
        super().__init__(
            redis_url, handler, instance_id=instance_id, unsubscribe_delay=unsubscribe_delay
        )
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
        # Channels the current subscriber connection has confirmed (SUBSCRIBE answered).
        self._confirmed: set[bytes] = set()
        self._conn: SubscriberConnection | None = None  # the subscriber connection, once open
        self._command_lock = asyncio.Lock()  # one SUBSCRIBE/UNSUBSCRIBE in flight at a time
        self._waiter: tuple[bytes, bytes, asyncio.Future[None]] | None = None
        self._subscriber_up = False
        self._session_was_up = False
        self._ever_up = False
        self._reader: asyncio.Task[None] | None = None

    def _subscribers_up(self) -> bool:
        return self._subscriber_up

    def _tasks(self) -> list[asyncio.Task[None] | None]:
        return [self._reader]

    async def _close_connections(self) -> None:
        await self._subscriber_pool.disconnect()

    def _up_message(self) -> str:
        return f"Redis reachable: {len(self._wanted)} rooms subscribed"

    # Subscribing

    def _channel_of(self, room: str) -> bytes:
        return channel_of(room)

    def _is_confirmed(self, channel: bytes) -> bool:
        return channel in self._confirmed

    def _forget(self, channel: bytes) -> None:
        self._wanted.discard(channel)
        self._confirmed.discard(channel)

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

    def _on_reply(self, reply: object, events: list[BrokerEvent], pending: set[bytes]) -> None:
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        if not isinstance(reply, list) or len(reply) != 3:
            return  # PONG
        kind, channel, payload = reply
        if kind == b"message":
            self._message(channel, payload, events)
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
            self._restored()

    def _end_session(self, conn: SubscriberConnection | None, reason: str) -> None:
        if conn is not None and self._conn is conn:
            self._conn = None
            self._confirmed.clear()
            waiter = self._waiter
            if waiter is not None and not waiter[2].done():
                waiter[2].set_result(None)  # released: the room is subscribed on reconnection
        self._subscriber_up = False
        self._report(reason)
