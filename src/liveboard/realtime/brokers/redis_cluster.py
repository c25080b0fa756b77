"""The Redis Cluster broker: rooms over sharded pub/sub (SSUBSCRIBE/SPUBLISH), one connection
per shard.

Chosen for ``LIVEBOARD_REDIS_URL=redis+cluster://host:port[,host:port…]`` (any reachable node
is enough: the others are discovered). Room ``R``'s channel is ``liveboard:room:{R}``
(``redis_publisher.cluster_channel_of``): a sharded channel lives on the shard of its slot, so
each event crosses one shard, not every node as a classic PUBLISH on a cluster does, and the
room's presence key (``presence_layout.key_of``, same hash tag) is on that shard too.

It gives every guarantee of ``brokers.redis.RedisBroker`` (publish delivers locally first,
never raises for an outage, waits at most ``PUBLISH_TIMEOUT``, re-sends the last dropped event
per room; ``subscribe`` returns once the SSUBSCRIBE is confirmed or at once while that shard
is unreachable; lingering unsubscribes; malformed payloads skipped; ``on_broker_restored``
once every wanted channel is subscribed again after any outage), and on top:

* The slots are read (``CLUSTER SLOTS``) from any node that answers, the startup nodes and
  every node seen so far, at start, after any subscriber connection breaks, after Redis says a
  channel moved (an unsolicited ``sunsubscribe``: the slot was migrated or its node stopped
  being its master; or a ``MOVED`` answer), and every ``TOPOLOGY_INTERVAL`` seconds.
* One subscriber connection per master (``brokers.redis_subscriber``, as the single Redis's),
  subscribed to the wanted channels of that master's slots. A connection that breaks is
  re-established alone (the other shards keep delivering); when the slots map changes (a
  failover, a resharding), every connection is re-established on the new map, since channels
  may have changed shard.
* ``up`` is True when every master's connection is subscribed to all its wanted channels and
  the last publish succeeded. After any shard was down, ``on_broker_restored`` follows once all
  are up again, and the node reads every active room's missed events from the log: a failover
  costs clients nothing, since the log in PostgreSQL, not Redis, is the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Final

import hiredis
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from liveboard.protocol import SequencedEvent
from liveboard.realtime.brokers.base import BrokerHandler
from liveboard.realtime.brokers.redis import (
    BACKOFF_MIN,
    CONFIRM_TIMEOUT,
    MAX_BATCH,
    PING_INTERVAL,
    PING_TIMEOUT,
)
from liveboard.realtime.brokers.redis_base import UNSUBSCRIBE_DELAY, RedisBrokerBase
from liveboard.realtime.brokers.redis_pools import (
    REDIS_ERRORS,
    cluster_connection_options,
    describe,
    mapped_connection_class,
)
from liveboard.realtime.brokers.redis_publisher import cluster_channel_of
from liveboard.realtime.brokers.redis_slots import Address, Shard, SlotMap, ssubscribe_commands
from liveboard.realtime.brokers.redis_subscriber import SubscriberConnection, dispatch
from liveboard.redis_address_map import AddressMapping

log = logging.getLogger("liveboard.broker.redis")

__all__ = ["RedisClusterBroker"]

#: Longest wait between two attempts of a broken shard. Shorter than the single Redis's: the
#: attempt that matters is the first after the replica took over (``CLUSTER SLOTS`` is read
#: again each time), and a refused connect costs nothing.
BACKOFF_MAX: Final = 0.5
#: The slots map is read again this often even when nothing broke (a resharding that moved
#: no wanted channel is noticed this way).
TOPOLOGY_INTERVAL: Final = 5.0


class _MovedError(RedisConnectionError):
    """Redis unsubscribed a wanted channel by itself: its slot is no longer this node's."""


class RedisClusterBroker(RedisBrokerBase):
    """Carries events between instances over a Redis Cluster's sharded pub/sub; see the module
    docstring."""

    # /readyz's "broker" names the kind (CONTRACT §3: memory|redis), its "redisMode" the topology.
    redis_mode = "cluster"
    SUBSCRIBE = b"ssubscribe"
    UNSUBSCRIBE = b"sunsubscribe"
    CLUSTER = True

    def __init__(
        self,
        redis_url: str,
        handler: BrokerHandler,
        *,
        instance_id: str,
        unsubscribe_delay: float = UNSUBSCRIBE_DELAY,
        address_map: Sequence[AddressMapping] = (),
    ) -> None:
        """``address_map`` (``LIVEBOARD_REDIS_ADDRESS_MAP``): every node address this broker and
        its publisher connect to, the URL's and the announced ones, is mapped through it."""
        super().__init__(
            redis_url,
            handler,
            instance_id=instance_id,
            unsubscribe_delay=unsubscribe_delay,
            address_map=address_map,
        )
        # No hidden retries: every reconnect goes through the supervisor.
        self._seeds, self._options = cluster_connection_options(
            redis_url,
            client_name=f"liveboard:{instance_id}:sub",
            fixed={"protocol": 2, "retry": Retry(NoBackoff(), 0)},  # the reader parses RESP2
        )
        # The slots map and the shards keep the announced addresses (what CLUSTER SLOTS and the
        # nodes' replies name); only the connections dial the mapped ones.
        self._connection_class = mapped_connection_class(
            SSLConnection if redis_url.startswith("rediss+") else Connection, address_map
        )
        #: Times the slots map was found changed (a failover, a resharding).
        self.topology_changes = 0
        self._slots: SlotMap | None = None
        self._known: list[Address] = list(self._seeds)  # nodes to ask for the slots map
        self._shards: dict[Address, Shard] = {}
        self._changed = asyncio.Event()  # a shard broke or saw a channel move
        self._needs_restore = False  # events may have been missed since the last time all up
        self._all_up = False
        self._progress = False  # a shard came up since the supervisor last looked
        self._ever_up = False

    def _subscribers_up(self) -> bool:
        """Every master's subscriber connection is up and subscribed to its wanted channels."""
        return self._all_up

    def _tasks(self) -> list[asyncio.Task[None] | None]:
        return [s.task for s in self._shards.values()]

    async def _close_connections(self) -> None:
        """Nothing left: each shard's session closes its own connection when cancelled."""

    def _up_message(self) -> str:
        return (
            f"Redis Cluster reachable: {len(self._wanted)} rooms subscribed on "
            f"{len(self._shards)} shards"
        )

    # Subscribing

    def _channel_of(self, room: str) -> bytes:
        return cluster_channel_of(room)

    def _shard_of(self, channel: bytes) -> Shard | None:
        address = self._slots.address_of(channel) if self._slots is not None else None
        return self._shards.get(address) if address is not None else None

    def _is_confirmed(self, channel: bytes) -> bool:
        shard = self._shard_of(channel)
        return shard is not None and channel in shard.confirmed

    def _forget(self, channel: bytes) -> None:
        self._wanted.discard(channel)
        for shard in self._shards.values():
            shard.confirmed.discard(channel)

    async def _command(self, kind: bytes, channel: bytes) -> None:
        shard = self._shard_of(channel)
        if shard is None:
            if kind == b"ssubscribe":
                self._needs_restore = True  # subscribed by the next session, then caught up
            return
        async with shard.lock:
            if (kind == b"ssubscribe") != (channel in self._wanted):
                return  # overtaken by a later call for the same room, queued behind this one
            conn = shard.conn
            if conn is None or not conn.is_connected or self._shard_of(channel) is not shard:
                if kind == b"ssubscribe":
                    self._needs_restore = True
                return  # the next session of the channel's shard subscribes it
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            shard.waiter = (kind, channel, future)
            try:
                conn.send((kind.upper(), channel))
                await asyncio.wait_for(future, CONFIRM_TIMEOUT)
            except Exception:
                # Not sent or not confirmed: the link is broken. End the session: a reconnect
                # and a catch-up follow.
                if shard.conn is conn and shard.task is not None:
                    shard.task.cancel()
            finally:
                shard.waiter = None

    # The slots map and the shards' sessions

    async def _supervise(self) -> None:
        """Forever: read the slots map, keep one session per master, wait for a change."""
        delay = BACKOFF_MIN
        while not self._closed:
            try:
                slots = await self._discover()
            except REDIS_ERRORS as exc:
                self._set_all_up(False, f"no cluster node answered: {describe(exc)}")
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            if slots != self._slots:
                if self._slots is not None:
                    self.topology_changes += 1
                    log.info("Redis Cluster slots changed; subscribing again on the new map")
                # Channels may have changed shard: every session starts again on the new map.
                await self._stop_shards(list(self._shards.values()))
                self._shards = {a: s for a, s in self._shards.items() if a in slots.masters}
                self._slots = slots
            self._changed.clear()
            for address in slots.masters:
                shard = self._shards.setdefault(address, Shard(address))
                if shard.task is None or shard.task.done():
                    shard.task = asyncio.create_task(
                        self._session(shard), name=f"redis-cluster-shard-{address[1]}"
                    )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TOPOLOGY_INTERVAL):
                    await self._changed.wait()
            if self._changed.is_set():
                if self._progress:  # a shard came up since: this is a new outage
                    self._progress = False
                    delay = BACKOFF_MIN
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF_MAX)

    async def _discover(self) -> SlotMap:
        """``CLUSTER SLOTS`` from the first node that answers (masters first)."""
        known = list(dict.fromkeys([*sorted(self._shards), *self._known, *self._seeds]))
        error: BaseException = RedisConnectionError("no Redis Cluster node to ask")
        for host, port in known:
            conn = self._connection_class(host=host, port=port, **self._options)
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                await conn.send_command("CLUSTER", "SLOTS")
                reply = await conn.read_response()
                slots = SlotMap.parse(reply)
                if not slots.ranges:
                    raise RedisConnectionError(f"{host}:{port} serves no slot yet")
                nodes = [
                    (n[0].decode() if isinstance(n[0], bytes) else str(n[0]), int(n[1]))
                    for r in reply
                    for n in r[2:]
                ]
                self._known = list(dict.fromkeys([*nodes, *self._seeds]))
                return slots
            except REDIS_ERRORS as exc:
                error = exc
            finally:
                with contextlib.suppress(*REDIS_ERRORS):
                    await conn.disconnect(nowait=True)
        raise error

    async def _stop_shards(self, shards: list[Shard]) -> None:
        tasks = [s.task for s in shards if s.task is not None and not s.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _session(self, shard: Shard) -> None:
        """One master's subscriber connection: subscribe its wanted channels, read until it
        breaks."""
        host, port = shard.address
        reason = "subscriber connection closed"
        pending: set[bytes] = set()
        sub: SubscriberConnection | None = None

        def on_replies(replies: list[object]) -> None:
            self._on_replies(shard, replies, pending)

        try:
            sub = await SubscriberConnection.open(
                self._connection_class(host=host, port=port, **self._options),
                on_replies,
                ping_interval=PING_INTERVAL,
                ping_timeout=PING_TIMEOUT,
            )
            async with shard.lock:
                # Snapshot and publication of ``sub`` together: a later subscribe sends its own.
                channels = sorted(c for c in self._wanted if self._shard_of(c) is shard)
                pending.update(channels)
                shard.conn = sub
                if channels:  # all sent in one write
                    sub.send(*ssubscribe_commands(channels))
            if not pending:
                self._shard_up(shard)
            await sub.wait_closed()
        except REDIS_ERRORS as exc:
            reason = f"{host}:{port}: {describe(exc)}"
        finally:
            self._end_session(shard, sub, reason)
            if sub is not None:
                sub.close()

    def _on_replies(self, shard: Shard, replies: list[object], pending: set[bytes]) -> None:
        """Every reply of one socket read. Raises (ending the session) on an error reply or a
        moved channel."""
        dispatch(
            replies, lambda r, ev: self._on_reply(shard, r, ev, pending), self._deliver, MAX_BATCH
        )
        if not shard.up and not pending:
            self._shard_up(shard)

    def _on_reply(
        self, shard: Shard, reply: object, events: list[SequencedEvent], pending: set[bytes]
    ) -> None:
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))  # MOVED among others: the slots map is read again
        if not isinstance(reply, list) or len(reply) != 3:
            return  # PONG
        kind, channel, payload = reply
        if kind == b"smessage":
            self._message(channel, payload, events)
            return
        waiter = shard.waiter
        answers = waiter is not None and waiter[:2] == (kind, channel)
        if kind == b"ssubscribe":
            pending.discard(channel)
            shard.confirmed.add(channel)
        elif kind == b"sunsubscribe":
            shard.confirmed.discard(channel)
            if not answers and channel in self._wanted:
                # Not ours: Redis dropped it (its slot moved, or this node is no longer its
                # master). Read the slots map again and subscribe it where it lives now.
                raise _MovedError(f"channel {channel!r} left {shard.address[0]}:{shard.address[1]}")
        if answers and waiter is not None and not waiter[2].done():
            waiter[2].set_result(None)

    def _shard_up(self, shard: Shard) -> None:
        if shard.ever_up:
            self.reconnects += 1
        shard.up = shard.ever_up = self._progress = True
        slots = self._slots
        if slots is None or not all(
            a in self._shards and self._shards[a].up for a in slots.masters
        ):
            return
        self._set_all_up(True)
        self._started.set()
        if self._needs_restore or (not self._ever_up and self._wanted):
            self._needs_restore = False
            self._ever_up = True
            self._restored()
        self._ever_up = True

    def _end_session(self, shard: Shard, conn: SubscriberConnection | None, reason: str) -> None:
        log.debug("Redis Cluster subscriber session ended: %s", reason)
        if conn is not None and shard.conn is conn:
            shard.conn = None
        shard.confirmed.clear()
        waiter = shard.waiter
        if waiter is not None and not waiter[2].done():
            waiter[2].set_result(None)  # released: the room is subscribed on reconnection
        if shard.up or self._ever_up:
            self._needs_restore = True
        shard.up = False
        self._set_all_up(False, reason)
        if not self._closed:
            self._changed.set()

    def _set_all_up(self, up: bool, reason: str = "") -> None:
        self._all_up = up
        self._report(reason)
