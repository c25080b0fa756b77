"""Presence shared by every instance through Redis.

The layout in Redis (a hash per room, the live instances, a marker per instance) and what a
read of a room means are ``presence_layout``'s. The connections are a pool of this manager's own
(``brokers.redis_pools`` says why it is not the broker's).

Semantics, on top of ``presence``'s:

* A local join or leave is shown to this instance's subscribers at once (from the local entries
  and the last view of the other instances). Writes to Redis are batched: every change made
  during one ``FLUSH_DELAY`` goes out in one pipeline, followed by one re-read of the touched
  rooms and one signal per room to the other instances (through the broker, all in one
  pipeline). The others coalesce
  signals of a room (``COALESCE``) before re-reading it. So a thousand joins cost a handful of
  round trips and updates, not a million messages, and every instance converges well within
  the contract's 1 s.
* Every active room is also re-read every ``REFRESH_INTERVAL`` seconds: a lost signal is
  repaired, and a dead instance's users leave within ``INSTANCE_TTL + REFRESH_INTERVAL`` (12 s;
  the contract allows 15).
* An instance seen alive within ``INSTANCE_TTL`` keeps its users in the view even when Redis
  forgets them (a restart empties it): they are not shown leaving and joining again while every
  instance rewrites its entries at its next heartbeat.
* While Redis is unreachable, local changes still reach local subscribers; remote users stay as
  last seen; the missed writes are made once Redis answers again, and the heartbeat and a
  refresh follow within ``UNAVAILABLE_POLL`` of the broker being up again.
* Self-healing: every read of a room also compares this instance's own fields in it with the
  entries it holds (``_check_own``). Any difference, whoever or whatever made it, has the room's
  entries written exactly again at once, and the other instances signalled. The usual cause:
  a stall or a partition longer than ``INSTANCE_TTL`` (SIGSTOP, a long GC or swap, a VM pause,
  a network cut); the others took this instance for dead and removed its entries, and its
  marker, younger than its TTL, does not show it. Others: eviction, a failover that lost
  writes, a write delivered late after its timeout (a ghost entry). So after any stall or
  partition, whatever its length, every instance shows this one's users again once it has
  read its rooms after its return: at once after a stall (its first refresh is due), after a
  partition once the broker is up again. The comparison costs no command: it uses the
  ``HGETALL`` the refresh makes anyway. A room written to while the read was on its way is
  not compared, so a write in progress is never taken for a loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, cast

import redis.asyncio as aioredis

from liveboard.background import TaskSet
from liveboard.realtime.brokers.redis_pools import (
    REDIS_ERRORS,
    cluster_client,
    connection_pool,
    is_cluster_url,
)
from liveboard.realtime.presence import PresenceListener, SharedViews, User
from liveboard.realtime.presence_layout import (
    INSTANCE_TTL,
    INSTANCES_KEY,
    KEY_PREFIX,
    MARKER_PREFIX,
    PRUNE_AFTER,
    Entry,
    encode_entry,
    field_of,
    key_of,
    read_room,
    text,
)
from liveboard.redis_address_map import AddressMapping

log = logging.getLogger("liveboard.presence")

__all__ = ["INSTANCES_KEY", "INSTANCE_TTL", "KEY_PREFIX", "MARKER_PREFIX", "RedisPresence"]

HEARTBEAT_INTERVAL = 2.0
REFRESH_INTERVAL = 2.0
UNAVAILABLE_POLL = 0.2
START_TIMEOUT = 1.0
FLUSH_DELAY = 0.02
COALESCE = 0.05
MAX_CONNECTIONS = 8


class RedisPresence(SharedViews):
    """A ``PresenceManager`` for many instances."""

    def __init__(
        self,
        redis_url: str,
        listener: PresenceListener,
        *,
        instance_id: str,
        active_rooms: Callable[[], Iterable[str]],
        signal: Callable[[Sequence[str]], Awaitable[None]],
        available: Callable[[], bool] = lambda: True,
        address_map: Sequence[AddressMapping] = (),
    ) -> None:
        """``address_map`` (``LIVEBOARD_REDIS_ADDRESS_MAP``): where a Redis Cluster's nodes are
        reached."""
        # As before: no client name, and redis-py's protocol and retries (none) unless the URL
        # sets them.
        self._redis: aioredis.Redis | aioredis.RedisCluster
        self._cluster = is_cluster_url(redis_url)
        if self._cluster:
            # Pipelines are split per shard by the client; each room is one key on one shard.
            self._redis = cluster_client(
                redis_url, max_connections=MAX_CONNECTIONS, address_map=address_map
            )
        else:
            pool = connection_pool(redis_url, max_connections=MAX_CONNECTIONS, timeout=2.0)
            self._redis = aioredis.Redis(connection_pool=pool)
        super().__init__(listener)
        self._instance = instance_id
        self._active_rooms = active_rooms
        self._signal = signal
        # While the broker knows Redis is down, skip Redis instead of waiting on timeouts.
        self._available = available
        # room → field → JSON entry: the same entries as Redis should hold them (to compare)
        self._own: dict[str, dict[str, bytes]] = {}
        # room → instance → user id → name: the other instances' entries as last read
        self._remote: dict[str, dict[str, dict[str, str]]] = {}
        # instance → its last heartbeat (unix time) seen in the instances set
        self._seen: dict[str, float] = {}
        # Writes not made yet: room → field → JSON entry (None: delete)
        self._writes: dict[str, dict[str, bytes | None]] = {}
        # Rooms whose entries in Redis must be made exact again: writes lost while Redis was
        # down, or entries found missing or wrong by a read (see ``_check_own``).
        self._unsynced: set[str] = set()
        # So that a read does not take a write in progress for a loss: the flushes on their way
        # per room, and for each read in flight the rooms written to since it began.
        self._flushing: Counter[str] = Counter()
        self._reads: dict[int, set[str]] = {}
        self._read_ids = itertools.count()
        self._healing: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()  # one pipeline of writes at a time (see ``_flush``)
        self._flush_handle: asyncio.TimerHandle | None = None
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self._tasks = TaskSet(log)
        self._loop_task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Start the heartbeat; return once the first one is made (at most ``START_TIMEOUT``).

        Until its first heartbeat an instance is not in the live set, and the others would take
        entries written meanwhile for a dead instance's and remove them: shown leaving, then
        written back by the instance's next read. Waiting here, before the node serves anyone,
        means a join never comes first (unless Redis is down at start, or that slow)."""
        if self._available():
            try:
                async with asyncio.timeout(START_TIMEOUT):
                    await self._heartbeat()
            except REDIS_ERRORS:
                log.debug("first presence heartbeat failed; the loop tries again", exc_info=True)
        self._loop_task = asyncio.ensure_future(self._heartbeat_forever())

    # PresenceManager

    async def join(
        self, room: str, connection_id: str, user_id: str, name: str
    ) -> tuple[list[User], bool]:
        self._local.setdefault(room, {})[connection_id] = (user_id, name)
        entry = encode_entry(Entry(user_id, name))
        self._own.setdefault(room, {})[self._field(connection_id)] = entry
        self._write(room, connection_id, entry)
        if room not in self._remote:
            await self._read_rooms([room])  # a room new to this instance: learn the others
        changed = self._show(room)
        return sorted(self._views.get(room, {}).items()), changed

    async def leave(self, room: str, connection_id: str) -> None:
        entries = self._local.get(room)
        if entries is None or connection_id not in entries:
            return
        del entries[connection_id]
        del self._own[room][self._field(connection_id)]
        if not entries:
            del self._local[room]
            del self._own[room]
        self._write(room, connection_id, None)
        self._show(room)

    async def aclose(self) -> None:
        """Remove this instance's entries and stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
        for timer in (self._flush_handle, *self._pending.values()):
            if timer is not None:
                timer.cancel()
        try:
            # After the writes on their way (the lock): a join applied after this removal would
            # leave the instance in presence after it left.
            async with (
                asyncio.timeout(2.0),
                self._write_lock,
                self._redis.pipeline(transaction=False) as pipe,
            ):
                rooms = set(self._local) | set(self._writes)
                for room in rooms:
                    fields = [self._field(c) for c in self._local.get(room, {})]
                    fields += list(self._writes.get(room, {}))
                    if fields:
                        pipe.hdel(self._key(room), *fields)
                pipe.zrem(INSTANCES_KEY, self._instance)
                pipe.delete(MARKER_PREFIX + self._instance)
                await pipe.execute()
            await self._notify(sorted(rooms))
        except REDIS_ERRORS:
            log.info("could not remove presence entries on shutdown; they expire on their own")
        finally:
            self._tasks.cancel()  # re-reads, flushes and repairs under way: none is wanted now
            await self._redis.aclose()

    # Signals from other instances

    def on_signal(self, room: str) -> None:
        """Another instance changed ``room``: re-read it soon (coalesced)."""
        if self._closed or room in self._pending:
            return
        if room not in self._views and room not in self._active_rooms():
            return
        loop = asyncio.get_running_loop()
        self._pending[room] = loop.call_later(COALESCE, self._reread_soon, room)

    def _views_or_active(self) -> set[str]:
        return set(self._active_rooms()) | set(self._views)

    def _reread_soon(self, room: str) -> None:
        self._pending.pop(room, None)
        self._spawn(self._refresh([room]))

    # Writing

    def _key(self, room: str) -> str:
        return key_of(room, cluster=self._cluster)

    def _field(self, connection_id: str) -> str:
        return field_of(self._instance, connection_id)

    def _touch(self, rooms: Iterable[str]) -> None:
        """``rooms`` were written to (queued, or answered): tell the reads in flight."""
        for written in self._reads.values():
            written.update(rooms)

    def _write(self, room: str, connection_id: str, entry: bytes | None) -> None:
        self._writes.setdefault(room, {})[self._field(connection_id)] = entry
        self._touch((room,))
        if self._flush_handle is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(FLUSH_DELAY, self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_handle = None
        self._spawn(self._flush())

    async def _flush(self) -> None:
        """Send the batched writes in one pipeline, re-read those rooms, signal them once."""
        # One pipeline of writes at a time: two on two connections may be applied by Redis in
        # either order, and a leave applied before the join it follows leaves a ghost entry.
        # Writes queued meanwhile wait in ``_writes`` and go out together in the next one.
        async with self._write_lock:
            if self._closed:
                return  # ``aclose`` removed every entry, those of pending writes included
            writes, self._writes = self._writes, {}
            if not writes:
                return
            if not self._available():
                self._unsynced.update(writes)
                return
            self._flushing.update(writes.keys())
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for room, fields in writes.items():
                        deleted = [f for f, entry in fields.items() if entry is None]
                        written = {f: entry for f, entry in fields.items() if entry is not None}
                        if deleted:
                            pipe.hdel(self._key(room), *deleted)
                        if written:
                            pipe.hset(self._key(room), mapping=cast(Any, written))
                    await pipe.execute()
            except REDIS_ERRORS:
                self._unsynced.update(writes)
                log.debug("presence writes not made; they are redone when Redis is back")
                return
            finally:
                self._flushing.subtract(writes.keys())
                for room in writes:
                    if self._flushing[room] <= 0:
                        del self._flushing[room]
                self._touch(writes)
        await self._refresh(list(writes))
        await self._notify(list(writes))

    async def _notify(self, rooms: Sequence[str]) -> None:
        try:
            await self._signal(rooms)  # one round trip for all of them
        except Exception:  # a lost signal is repaired by the periodic refresh
            log.debug("presence signal failed", exc_info=True)

    # Reading the merged view

    async def _refresh(self, rooms: list[str]) -> None:
        await self._read_rooms(rooms)
        for room in rooms:
            self._show(room)

    def _show(self, room: str) -> bool:
        """Recompute ``room``'s view; tell local subscribers if it changed; True if it did."""
        changed = self._show_view(room, self._remote.get(room, {}).values())
        if room not in self._views and room not in self._local:
            self._remote.pop(room, None)
        return changed

    async def _read_rooms(self, rooms: list[str]) -> None:
        """Read the other instances' entries of ``rooms`` (one round trip)."""
        if not rooms or not self._available():
            return
        now = time.time()
        read_id = next(self._read_ids)
        written: set[str] = set()
        self._reads[read_id] = written
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrangebyscore(INSTANCES_KEY, now - INSTANCE_TTL, "+inf", withscores=True)
                for room in rooms:
                    pipe.hgetall(self._key(room))
                alive, *hashes = await pipe.execute()
        except REDIS_ERRORS:
            return
        finally:
            del self._reads[read_id]
        alive_ids = set()
        for instance, heartbeat in alive:
            alive_ids.add(text(instance))
            self._seen[text(instance)] = float(heartbeat)
        stale: list[tuple[str, list[Any]]] = []
        drifted: list[str] = []
        for room, fields in zip(rooms, hashes, strict=True):
            remote, dead_fields, own = read_room(
                self._instance,
                fields,
                alive=alive_ids,
                seen=self._seen,
                previous=self._remote.get(room, {}),
                now=now,
            )
            self._remote[room] = remote
            stale.append((room, dead_fields))
            if not self._check_own(room, own, written):
                drifted.append(room)
        if drifted:
            self._heal(drifted)
        dead = [(room, fields) for room, fields in stale if fields]
        if dead:
            with contextlib.suppress(*REDIS_ERRORS):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for room, fields in dead:
                        pipe.hdel(self._key(room), *fields)
                    await pipe.execute()

    def _check_own(self, room: str, own: dict[str, bytes], written: set[str]) -> bool:
        """Whether Redis held exactly this instance's entries of ``room`` (``own``, as a read
        found them); True too when that cannot be told, because the room was written to while
        the read was on its way (``written``), a write of it is queued or on its way now, or
        it is to be made exact again anyway."""
        if (
            room in written
            or room in self._writes
            or room in self._flushing
            or room in self._unsynced
        ):
            return True
        return own == self._own.get(room, {})

    def _heal(self, rooms: Iterable[str]) -> None:
        """Write ``rooms``' entries again (now, once per batch): another instance removed them
        (it took this one for dead: a stall or a partition longer than ``INSTANCE_TTL``), or
        Redis lost or kept some (eviction, a failover, a late write delivered after a timeout)."""
        if self._closed:
            return  # a read answered after ``aclose``: the entries are gone on purpose
        rooms = set(rooms)
        log.info(
            "presence entries of %d room(s) were missing or stale in Redis; writing them again",
            len(rooms),
        )
        self._unsynced |= rooms
        if self._healing is None or self._healing.done():
            self._healing = self._tasks.spawn(self._reassert(restarted=False))

    # Liveness

    async def _heartbeat_forever(self) -> None:
        last_refresh = 0.0
        # Until ``aclose``, not forever: a cancellation that a Redis call turned into an error
        # must not keep the loop running after the manager closed.
        while not self._closed:
            if not self._available():
                # Redis is away: look again soon, so that the heartbeat and a refresh (which
                # finds the entries removed meanwhile) follow within ``UNAVAILABLE_POLL`` of
                # its return, not up to a heartbeat later.
                last_refresh = 0.0
                await asyncio.sleep(UNAVAILABLE_POLL)
                continue
            try:
                await self._heartbeat()
            except REDIS_ERRORS:
                log.debug("presence heartbeat failed", exc_info=True)
            now = time.monotonic()
            if now - last_refresh >= REFRESH_INTERVAL:
                last_refresh = now
                await self._refresh(sorted(self._views_or_active()))
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def _heartbeat(self) -> None:
        # The marker first, the instances set last: after a Redis restart this instance's
        # entries must be written again before it shows itself alive. Alive with no entries,
        # it would have its users read as gone by the others, who keep the users of an instance
        # missing from the set (for ``INSTANCE_TTL``), not of one present with none.
        previous = await self._redis.set(
            MARKER_PREFIX + self._instance, b"1", ex=int(INSTANCE_TTL * 3), get=True
        )
        if previous is None or self._unsynced:
            await self._reassert(restarted=previous is None)
        now = time.time()
        await self._redis.zadd(INSTANCES_KEY, {self._instance: now})
        # Kept small: instances dead for long leave the set (each restart is a new id).
        await self._redis.zremrangebyscore(INSTANCES_KEY, "-inf", now - PRUNE_AFTER)

    async def _reassert(self, *, restarted: bool) -> None:
        """Make Redis hold exactly our local entries again: after a first start or a Redis
        restart (every room), or for the rooms whose writes were lost while it was down."""
        rooms = set(self._local) | self._unsynced if restarted else set(self._unsynced)
        self._unsynced = set()
        ours = f"{self._instance}:"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                ordered = sorted(rooms)
                for room in ordered:
                    pipe.hkeys(self._key(room))
                keys = await pipe.execute()
        except REDIS_ERRORS:
            self._unsynced |= rooms
            return
        for room, fields in zip(ordered, keys, strict=True):
            wanted = self._own.get(room, {})
            pending = self._writes.setdefault(room, {})
            for field in map(text, fields):
                if field.startswith(ours) and field not in wanted:
                    pending.setdefault(field, None)
            for field, entry in wanted.items():
                pending.setdefault(field, entry)
        await self._flush()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._tasks.spawn(coro)
