"""Presence shared by every instance through Redis.

Layout in Redis:

* ``liveboard:presence:{room}`` — a hash, one field per connection present in the room:
  ``{instance}:{connectionId}`` → ``{"userId", "name"}`` (JSON).
* ``liveboard:instances`` — a sorted set of instance ids scored by their last heartbeat (unix
  seconds). An instance whose heartbeat is older than ``INSTANCE_TTL`` is dead: its entries are
  ignored and removed by whichever instance notices first.
* ``liveboard:instance:{id}`` — a marker with a TTL; when a heartbeat finds it gone, Redis lost its
  data (restart), and the instance writes all its local entries again.

Semantics (on top of ``presence``'s): eventually consistent. A change made on one instance is
signalled to the others (through the broker), which re-read the room's hash; re-reads of one room
are coalesced (``COALESCE`` seconds), so a thousand joins cause a handful of updates, not a
million messages. Every active room is also re-read every ``REFRESH_INTERVAL`` seconds, which
bounds how long a dead instance's users stay present (``INSTANCE_TTL + REFRESH_INTERVAL`` < 15 s)
and rebuilds presence after Redis restarts empty. While Redis is unreachable, local changes are
still shown to local subscribers, and remote users stay as last seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from liveboard.realtime.presence import PresenceListener, User, diff_users

log = logging.getLogger("liveboard.presence")

KEY_PREFIX = "liveboard:presence:"
INSTANCES_KEY = "liveboard:instances"
MARKER_PREFIX = "liveboard:instance:"
HEARTBEAT_INTERVAL = 2.0
INSTANCE_TTL = 10.0
REFRESH_INTERVAL = 2.0
COALESCE = 0.05

_encode = msgspec.json.Encoder().encode


class _Entry(msgspec.Struct, frozen=True, rename="camel"):
    user_id: str
    name: str


_decode_entry = msgspec.json.Decoder(_Entry).decode


class RedisPresence:
    """A ``PresenceManager`` for many instances."""

    def __init__(
        self,
        redis_url: str,
        listener: PresenceListener,
        *,
        instance_id: str,
        active_rooms: Callable[[], Iterable[str]],
        signal: Callable[[str], Awaitable[None]],
        available: Callable[[], bool] = lambda: True,
    ) -> None:
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            redis_url, socket_connect_timeout=1.0, socket_timeout=2.0
        )
        self._listener = listener
        self._instance = instance_id
        self._active_rooms = active_rooms
        self._signal = signal
        # While the broker knows Redis is down, skip Redis here instead of waiting on timeouts;
        # the heartbeat re-asserts every local entry once Redis is back.
        self._available = available
        # room → connection id → (user id, name): this instance's entries, the authority for them
        self._local: dict[str, dict[str, tuple[str, str]]] = {}
        # room → user id → name: the merged view this instance last showed its subscribers
        self._views: dict[str, dict[str, str]] = {}
        # room → remote users as last read, kept while Redis is unreachable
        self._remote: dict[str, dict[str, str]] = {}
        # Writes Redis missed (it was down): re-done by the next successful heartbeat.
        self._dirty = False
        self._stale: dict[str, set[str]] = {}  # room → our fields to delete
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        self._loop_task = asyncio.ensure_future(self._heartbeat_forever())

    # PresenceManager

    async def join(
        self, room: str, connection_id: str, user_id: str, name: str
    ) -> tuple[list[User], bool]:
        self._local.setdefault(room, {})[connection_id] = (user_id, name)
        field = f"{self._instance}:{connection_id}"
        self._stale.get(room, set()).discard(field)
        if not self._available():
            self._dirty = True
            changed = await self.refresh(room)
            return sorted(self._views.get(room, {}).items()), changed
        try:
            await self._redis.hset(KEY_PREFIX + room, field, _encode(_Entry(user_id, name)))
        except (RedisError, OSError):
            self._dirty = True
            log.debug("presence join not written to Redis", exc_info=True)
        changed = await self.refresh(room)
        await self._notify(room)
        return sorted(self._views.get(room, {}).items()), changed

    async def leave(self, room: str, connection_id: str) -> None:
        entries = self._local.get(room)
        if entries is None or connection_id not in entries:
            return
        del entries[connection_id]
        if not entries:
            del self._local[room]
        field = f"{self._instance}:{connection_id}"
        if not self._available():
            self._stale.setdefault(room, set()).add(field)
            self._dirty = True
            await self.refresh(room)
            return
        try:
            await self._redis.hdel(KEY_PREFIX + room, field)
        except (RedisError, OSError):
            self._stale.setdefault(room, set()).add(field)
            self._dirty = True
            log.debug("presence leave not written to Redis", exc_info=True)
        await self.refresh(room)
        await self._notify(room)

    async def leave_rooms(self, rooms: Iterable[str], connection_id: str) -> None:
        for room in list(rooms):
            await self.leave(room, connection_id)

    def users(self, room: str) -> list[User]:
        return sorted(self._views.get(room, {}).items())

    def room_count(self) -> int:
        return len(self._views)

    async def aclose(self) -> None:
        """Remove this instance's entries and stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
        for timer in self._pending.values():
            timer.cancel()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for room, entries in self._local.items():
                    fields = [f"{self._instance}:{c}" for c in entries]
                    if fields:
                        pipe.hdel(KEY_PREFIX + room, *fields)
                pipe.zrem(INSTANCES_KEY, self._instance)
                pipe.delete(MARKER_PREFIX + self._instance)
                await pipe.execute()
            for room in list(self._local):
                await self._notify(room)
        except (RedisError, OSError):
            log.info("could not remove presence entries on shutdown; they expire on their own")
        finally:
            await self._redis.aclose()

    # Signals from other instances

    def on_signal(self, room: str) -> None:
        """Another instance changed ``room``: re-read it soon (coalesced)."""
        if self._closed or room in self._pending or room not in set(self._active_rooms()):
            return
        loop = asyncio.get_running_loop()
        self._pending[room] = loop.call_later(COALESCE, self._refresh_soon, room)

    def _refresh_soon(self, room: str) -> None:
        self._pending.pop(room, None)
        task = asyncio.ensure_future(self.refresh(room))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(self, room: str) -> None:
        try:
            await self._signal(room)
        except Exception:  # a lost signal is repaired by the periodic refresh
            log.debug("presence signal failed", exc_info=True)

    # Reading the merged view

    async def refresh(self, room: str) -> bool:
        """Re-read ``room`` and tell local subscribers if its users changed; True if they did."""
        remote = await self._read_remote(room)
        merged = dict(remote)
        for user_id, name in self._local.get(room, {}).values():
            merged[user_id] = name
        before = self._views.get(room, {})
        if merged:
            self._views[room] = merged
        else:
            self._views.pop(room, None)
        change = diff_users(room, before, merged)
        if change is not None:
            self._listener.presence_changed(change)
        return change is not None

    async def _read_remote(self, room: str) -> dict[str, str]:
        now = time.time()
        if not self._available():
            return self._remote.get(room, {})
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(KEY_PREFIX + room)
                pipe.zrangebyscore(INSTANCES_KEY, now - INSTANCE_TTL, "+inf")
                fields, alive = await pipe.execute()
        except (RedisError, OSError):
            return self._remote.get(room, {})
        alive_ids = {_text(i) for i in alive}
        users: dict[str, str] = {}
        dead: list[Any] = []
        for field, value in fields.items():
            instance = _text(field).split(":", 1)[0]
            if instance == self._instance:
                continue  # our own entries come from self._local
            if instance not in alive_ids:
                dead.append(field)
                continue
            try:
                entry = _decode_entry(value)
            except msgspec.DecodeError:
                dead.append(field)
                continue
            users[entry.user_id] = entry.name
        if dead:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.hdel(KEY_PREFIX + room, *dead)
        self._remote[room] = users
        return users

    # Liveness

    async def _heartbeat_forever(self) -> None:
        last_refresh = 0.0
        while True:
            try:
                await self._heartbeat()
            except (RedisError, OSError):
                log.debug("presence heartbeat failed", exc_info=True)
            now = time.monotonic()
            if now - last_refresh >= REFRESH_INTERVAL:
                last_refresh = now
                for room in set(self._active_rooms()) | set(self._views):
                    await self.refresh(room)
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def _heartbeat(self) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(INSTANCES_KEY, {self._instance: time.time()})
            pipe.set(MARKER_PREFIX + self._instance, b"1", ex=int(INSTANCE_TTL * 3), get=True)
            _, previous = await pipe.execute()
        if previous is None or self._dirty:
            await self._reassert()

    async def _reassert(self) -> None:
        """Make Redis hold exactly our local entries again (first start, Redis restarted empty,
        or writes missed while it was unreachable)."""
        self._dirty = False
        stale, self._stale = self._stale, {}
        if not self._local and not stale:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for room, fields in stale.items():
                    pipe.hdel(KEY_PREFIX + room, *fields)
                for room, entries in self._local.items():
                    mapping = {
                        f"{self._instance}:{c}": _encode(_Entry(u, n))
                        for c, (u, n) in entries.items()
                    }
                    pipe.hset(KEY_PREFIX + room, mapping=cast(Any, mapping))
                await pipe.execute()
        except BaseException:
            self._dirty = True
            for room, fields in stale.items():
                self._stale.setdefault(room, set()).update(fields)
            raise
        for room in set(self._local) | set(stale):
            await self._notify(room)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
