"""The Redis broker's sending side: PUBLISH of events and presence signals, and their repair.

Guarantees (``RedisBroker`` relies on them for its own, see ``brokers.redis``):

* ``send`` never raises for an outage and waits at most ``PUBLISH_TIMEOUT`` for Redis, for a
  free connection included. Several events go out in one round trip (a pipeline).
* After a failed send, ``down`` is True until a send or a PING succeeds; each change of ``down``
  is reported once to ``on_change``. While down, ``watch`` PINGs every ``PING_INTERVAL``, so that
  ``down`` ends without traffic.
* The last failed event of each room (of at most ``MAX_UNSENT_ROOMS`` rooms) is kept and sent
  again once Redis answers (by ``watch``, or by ``flush``), so that other instances see the hole
  and fill it from the log even if their own connection never broke.
* ``publish_presence`` is best effort: a lost signal is repaired by presence's periodic refresh.

On a Redis Cluster (``redis+cluster://``) the same holds with SPUBLISH on each room's sharded
channel (``cluster_channel_of``: the room is the hash tag, so a room's channel and its presence
key live on one shard), through a ``RedisCluster`` client that routes each to its shard, follows
MOVED after a slot moved and learns the new master after a failover; a pipeline of several
rooms' events is split per shard, each shard's part in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Final

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from liveboard.protocol import BrokerEvent, encode_broker_event
from liveboard.realtime.brokers.redis_direct import DirectCommands
from liveboard.realtime.brokers.redis_pools import (
    REDIS_ERRORS,
    cluster_client,
    connection_pool,
    describe,
    is_cluster_url,
)
from liveboard.redis_address_map import AddressMapping

log = logging.getLogger("liveboard.broker.redis")

#: Channel of room ``R``: ``liveboard:room:R``.
CHANNEL_PREFIX: Final = "liveboard:room:"
#: Payloads on a room's channel that start with this are presence signals, not events (events
#: are JSON objects and start with ``{``); the instance id follows.
PRESENCE_SIGNAL: Final = b"presence:"
#: Connections the publisher may open at once (concurrent requests share them).
PUBLISH_CONNECTIONS: Final = 16
#: Longest a ``publish`` waits for Redis (a REST request is waiting on it).
PUBLISH_TIMEOUT: Final = 1.0
#: A publisher known to be down is PINGed this often.
PING_INTERVAL: Final = 1.0
MAX_UNSENT_ROOMS: Final = 10_000
#: The publisher's connections have no socket timeout of their own (unless the URL sets one):
#: every command it sends is bounded by ``PUBLISH_TIMEOUT``, shorter, which cancels it and
#: drops the connection as the socket timeout would. With one, redis-py wraps each write in
#: ``asyncio.wait_for`` and each read in a timeout: a task and two timers per PUBLISH, about
#: 20 µs of CPU per ``PATCH`` (docs/benchmarks.md).
PUBLISH_SOCKET_TIMEOUT: Final = None


def channel_of(room: str) -> bytes:
    """The pub/sub channel that carries ``room``'s events."""
    return (CHANNEL_PREFIX + room).encode()


def cluster_channel_of(room: str) -> bytes:
    """The sharded channel that carries ``room``'s events on a Redis Cluster:
    ``liveboard:room:{R}``, whose slot is the room's (the hash tag)."""
    return f"{CHANNEL_PREFIX}{{{room}}}".encode()


def room_of(channel: bytes, *, cluster: bool) -> str:
    """The room whose channel (``channel_of`` or ``cluster_channel_of``) is ``channel``."""
    room = channel.decode(errors="replace").removeprefix(CHANNEL_PREFIX)
    return room[1:-1] if cluster and room.startswith("{") and room.endswith("}") else room


class RedisPublisher:
    """PUBLISHes (SPUBLISHes on a cluster) on the rooms' channels through a pool of its own;
    see the module docstring."""

    def __init__(
        self,
        redis_url: str,
        *,
        instance_id: str,
        on_change: Callable[[str], None],
        address_map: Sequence[AddressMapping] = (),
    ) -> None:
        self._redis: Redis | RedisCluster
        #: A single event's PUBLISH goes here (not on a cluster: its client routes per shard).
        self._direct: DirectCommands | None = None
        if is_cluster_url(redis_url):
            self._redis = cluster_client(
                redis_url,
                max_connections=PUBLISH_CONNECTIONS,
                client_name=f"liveboard:{instance_id}:pub",
                fixed={"protocol": 2},
                address_map=address_map,
            )
            self._command = "SPUBLISH"
            self._channel_of = cluster_channel_of
        else:
            pool = connection_pool(
                redis_url,
                max_connections=PUBLISH_CONNECTIONS,
                # Blocking: a burst of publishes waits for a free connection (bounded by the
                # publish timeout) instead of failing when the pool is exhausted.
                timeout=PUBLISH_TIMEOUT,
                client_name=f"liveboard:{instance_id}:pub",
                # One retry on a fresh connection: a pooled connection may be stale after a
                # restart.
                fixed={"protocol": 2, "retry": Retry(NoBackoff(), 1)},
                socket_timeout=PUBLISH_SOCKET_TIMEOUT,
            )
            self._redis = Redis(connection_pool=pool)
            self._direct = DirectCommands(self._redis, pool)
            self._command = "PUBLISH"
            self._channel_of = channel_of
        self._on_change = on_change
        #: What this instance's presence signals carry (the broker ignores its own on receipt).
        self.presence_payload = PRESENCE_SIGNAL + instance_id.encode()
        #: True from a failed send until a send or PING succeeds.
        self.down = False
        #: ``send`` calls (and re-sends) whose PUBLISH failed.
        self.failures = 0
        self._unsent: dict[str, BrokerEvent] = {}  # room → last event whose PUBLISH failed
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    async def send(self, events: Sequence[BrokerEvent]) -> None:
        """PUBLISH ``events`` on their rooms' channels; never raises for an outage."""
        self._inflight += 1
        self._idle.clear()
        try:
            await self._send(events)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def publish_presence(self, rooms: Sequence[str]) -> None:
        """Signal a presence change of each of ``rooms``, in one pipeline (best effort)."""
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                if len(rooms) == 1:
                    await self._redis.execute_command(
                        self._command, self._channel_of(rooms[0]), self.presence_payload
                    )
                else:
                    pipe = self._redis.pipeline(transaction=False)
                    for room in rooms:
                        pipe.execute_command(
                            self._command, self._channel_of(room), self.presence_payload
                        )
                    await pipe.execute()
        except REDIS_ERRORS:
            pass  # the presence manager's periodic refresh repairs it

    async def flush(self, timeout: float) -> None:  # noqa: ASYNC109 (bounded by design)
        """Wait (at most ``timeout`` s) for sends in progress and re-send dropped events."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()
                if self._unsent and not self.down:
                    await self._send_unsent()

    async def _send(self, events: Sequence[BrokerEvent]) -> bool:
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                if len(events) == 1:
                    direct = self._direct
                    await (self._redis.execute_command if direct is None else direct.execute)(
                        self._command,
                        self._channel_of(events[0].room),
                        encode_broker_event(events[0]),
                    )
                else:
                    pipe = self._redis.pipeline(transaction=False)
                    for event in events:
                        pipe.execute_command(
                            self._command,
                            self._channel_of(event.room),
                            encode_broker_event(event),
                        )
                    await pipe.execute()
        except REDIS_ERRORS as exc:
            self.failures += 1
            for event in events:
                self._remember_unsent(event)
            if not self.down:
                self.down = True
                self._on_change(f"publish failed: {describe(exc)}")
            return False
        if self.down:
            self.down = False
            self._on_change("")
        return True

    def _remember_unsent(self, event: BrokerEvent) -> None:
        previous = self._unsent.pop(event.room, None)
        if previous is not None and previous.offset > event.offset:
            event = previous
        elif previous is None and len(self._unsent) >= MAX_UNSENT_ROOMS:
            del self._unsent[next(iter(self._unsent))]
        self._unsent[event.room] = event

    async def _send_unsent(self) -> None:
        unsent, self._unsent = self._unsent, {}
        sent = False
        try:
            sent = await self._send(list(unsent.values()))
        finally:
            if not sent:  # failed or cancelled: keep them, unless a newer one came meanwhile
                for room, event in unsent.items():
                    self._unsent.setdefault(room, event)

    async def watch(self) -> None:
        """Forever (until ``aclose``): while down, PING so that ``down`` ends without traffic;
        once up, send the events kept from failed sends."""
        while not self._closed:
            await asyncio.sleep(PING_INTERVAL)
            try:
                if self.down:
                    async with asyncio.timeout(PUBLISH_TIMEOUT):
                        await self._redis.ping()
                    self.down = False
                    self._on_change("")
                if self._unsent and not self.down:
                    await self._send_unsent()
            except REDIS_ERRORS:
                continue
            except Exception:
                log.exception("Redis publisher health check failed")

    async def aclose(self) -> None:
        """Close the pool; sends still in progress fail. Idempotent."""
        self._closed = True
        if self._direct is not None:
            await self._direct.aclose()
        if isinstance(self._redis, Redis):
            await self._redis.aclose(close_connection_pool=True)
        else:
            await self._redis.aclose()
