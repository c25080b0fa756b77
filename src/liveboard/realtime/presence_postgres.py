"""Presence shared by every instance through PostgreSQL notifications (the postgres broker).

No table: each instance is the authority for its own connections, and tells the others what
they are by ``NOTIFY`` on the installation's presence channel (``presence_channel``), which the
broker's listening connection also ``LISTEN``s to. Every message is JSON, at most
``MAX_PAYLOAD`` bytes (PostgreSQL's limit is 8000), from one instance (``"i"``):

* ``"s"``: state, a list of ``[room, {userId: name}, part, parts]``: the users the sender shows
  present in ``room`` (all of them: a state replaces the last one, so a lost or reordered
  message is repaired by the next). A room whose users do not fit in one message is split in
  ``parts``; the receiver replaces the room's state once it holds every part.
* ``"a"``: rooms the sender asks about; every instance answers with its state of each (an
  empty one too, so that the asker knows it has heard from everyone).
* ``"b"``: the sender is stopping; its users leave at once.

Semantics, on top of ``presence``'s:

* A local join or leave reaches this instance's subscribers at once; the changes made during
  one ``FLUSH_DELAY`` go out in one round trip, and the other instances show them on arrival.
* A connection joining a room new to this instance asks the others about it and waits until
  every instance heard from in the last ``INSTANCE_TTL`` has answered (at most ``ASK_WAIT``),
  so its first list holds the users of every instance in most cases; a late answer follows as
  an update.
* Every ``HEARTBEAT_INTERVAL`` each instance sends its state of every room it has users in
  (and, with none, an empty message: it is alive). A state not refreshed within
  ``INSTANCE_TTL`` expires: a dead instance's users leave within ``INSTANCE_TTL`` plus one
  check (``HEARTBEAT_INTERVAL``), 10 s (the contract allows 15).
* While the listening connection is lost, remote users stay as last seen (nothing expires);
  once it listens again, this instance asks about every active room and sends its own state.
* Costs: every instance receives every instance's messages (one channel), about one state per
  room with users per instance every ``HEARTBEAT_INTERVAL``; fine for a task board's rooms of a
  few viewers, not for a room of thousands of users (use Redis: docs/operations.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import msgspec

from liveboard.background import TaskSet
from liveboard.realtime.presence import PresenceListener, SharedViews, User

log = logging.getLogger("liveboard.presence")

__all__ = [
    "ASK_WAIT",
    "HEARTBEAT_INTERVAL",
    "INSTANCE_TTL",
    "MAX_PAYLOAD",
    "PostgresPresence",
    "pack_states",
    "presence_channel",
]

HEARTBEAT_INTERVAL = 2.0
INSTANCE_TTL = 8.0
FLUSH_DELAY = 0.02
ASK_WAIT = 0.3
#: Bytes of one message at most (PostgreSQL refuses payloads of 8000 bytes or more).
MAX_PAYLOAD = 7000

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode

State = list[Any]  # [room, {user id: name}, part, parts]


def presence_channel(schema: str) -> str:
    """The presence channel of the installation in ``schema``."""
    return f"{schema}_presence"


def pack_states(
    instance: str,
    states: dict[str, dict[str, str]],
    asks: Sequence[str] = (),
    limit: int = MAX_PAYLOAD,
) -> list[str]:
    """Messages carrying ``states`` (room → users) and ``asks`` from ``instance``, each at most
    ``limit`` bytes; a room's users that do not fit in one are split in parts. Pure."""
    pieces: list[State] = []
    for room, users in states.items():
        chunks: list[dict[str, str]] = [{}]
        size = len(room) + 40
        for user, name in users.items():
            entry = len(_encode(user)) + len(_encode(name)) + 2
            if chunks[-1] and size + entry > limit - 100:
                chunks.append({})
                size = len(room) + 40
            chunks[-1][user] = name
            size += entry
        pieces += [[room, chunk, k, len(chunks)] for k, chunk in enumerate(chunks)]
    messages: list[str] = []
    current: dict[str, Any] = {"i": instance, "s": []}
    if asks:
        current["a"] = list(asks)
    for piece in pieces:
        current["s"].append(piece)
        if len(_encode(current)) > limit and len(current["s"]) > 1:
            current["s"].pop()
            messages.append(_encode(current).decode())
            current = {"i": instance, "s": [piece]}
    if current["s"] or "a" in current or not messages:
        messages.append(_encode(current).decode())
    return messages


class PostgresPresence(SharedViews):
    """A ``PresenceManager`` for many instances on the postgres broker (see the module).

    ``send(payloads)`` sends messages on the presence channel (False: not sent);
    ``available()`` says whether the broker listens; ``active_rooms`` are the rooms this
    instance has subscribers in."""

    def __init__(
        self,
        listener: PresenceListener,
        *,
        instance_id: str,
        active_rooms: Callable[[], Iterable[str]],
        send: Callable[[Sequence[str]], Awaitable[bool]],
        available: Callable[[], bool],
    ) -> None:
        super().__init__(listener)
        self._instance = instance_id
        self._active_rooms = active_rooms
        self._send = send
        self._available = available
        # room → instance → (user id → name, when it expires (monotonic))
        self._remote: dict[str, dict[str, tuple[dict[str, str], float]]] = {}
        # (room, instance) → parts received of a split state
        self._parts: dict[tuple[str, str], dict[int, dict[str, str]]] = {}
        # instance → when it was last heard from (monotonic)
        self._seen: dict[str, float] = {}
        # rooms asked about → instances that answered, and the waiters
        self._asked: dict[str, set[str]] = {}
        self._answered: dict[str, asyncio.Event] = {}
        self._dirty: set[str] = set()
        self._asking: set[str] = set()  # rooms to ask the others about
        self._answers: set[str] = set()  # rooms the others asked about
        self._flush_handle: asyncio.TimerHandle | None = None
        self._was_available = True
        self._tasks = TaskSet(log)
        self._loop_task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        self._loop_task = asyncio.ensure_future(self._heartbeat_forever())

    # PresenceManager

    async def join(
        self, room: str, connection_id: str, user_id: str, name: str
    ) -> tuple[list[User], bool]:
        new_here = room not in self._local and room not in self._remote
        self._local.setdefault(room, {})[connection_id] = (user_id, name)
        self._changed(room)
        if new_here and self._available():
            await self._ask(room)
        changed = self._show(room)
        return sorted(self._views.get(room, {}).items()), changed

    async def leave(self, room: str, connection_id: str) -> None:
        entries = self._local.get(room)
        if entries is None or connection_id not in entries:
            return
        del entries[connection_id]
        if not entries:
            del self._local[room]
        self._changed(room)
        self._show(room)

    def on_signal(self, room: str) -> None:
        return None  # the broker carries no presence signal: messages come on their channel

    async def aclose(self) -> None:
        """Tell the others this instance's users leave, and stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._tasks.cancel()
        message = _encode({"i": self._instance, "b": True}).decode()
        try:
            await asyncio.wait_for(self._send([message]), 2.0)
        except Exception:
            log.info("could not tell the other instances this one's users leave; they expire")

    # Messages from the other instances

    def on_message(self, payload: str) -> None:
        """A message of the presence channel (from any instance, this one included)."""
        if self._closed:
            return
        try:
            message = _decode(payload)
            sender = str(message["i"])
        except (msgspec.DecodeError, KeyError, TypeError):
            log.warning("ignored a malformed presence message %r", payload[:200])
            return
        if sender == self._instance:
            return
        now = time.monotonic()
        self._seen[sender] = now
        if message.get("b"):
            self._seen.pop(sender, None)
            for room, states in list(self._remote.items()):
                if states.pop(sender, None) is not None:
                    self._show(room)
            return
        wanted = self._views_or_active()
        for piece in message.get("s") or ():
            try:
                room, users, part, parts = str(piece[0]), piece[1], int(piece[2]), int(piece[3])
            except (IndexError, TypeError, ValueError):
                continue
            if room in self._asked:
                self._asked[room].add(sender)
                self._check_answers(room)
            if room not in wanted or not isinstance(users, dict):
                continue
            if parts > 1:
                held = self._parts.setdefault((room, sender), {})
                held[part] = users
                if len(held) < parts:
                    continue
                users = {u: n for chunk in held.values() for u, n in chunk.items()}
                del self._parts[(room, sender)]
            self._remote.setdefault(room, {})[sender] = (
                {str(u): str(n) for u, n in users.items()},
                now + INSTANCE_TTL,
            )
            self._show(room)
        asks = message.get("a") or ()
        if asks:
            self._answers.update(str(room) for room in asks)
            self._flush_later()

    def _check_answers(self, room: str) -> None:
        alive = {i for i, seen in self._seen.items() if time.monotonic() - seen < INSTANCE_TTL}
        event = self._answered.get(room)
        if event is not None and alive <= self._asked.get(room, set()):
            event.set()

    async def _ask(self, room: str) -> None:
        """Ask the others about ``room`` and wait for every live instance's answer (at most
        ``ASK_WAIT``)."""
        self._asked[room] = set()
        event = self._answered[room] = asyncio.Event()
        self._asking.add(room)
        self._flush_later()
        self._check_answers(room)
        try:
            await asyncio.wait_for(event.wait(), ASK_WAIT)
        except TimeoutError:
            pass
        finally:
            self._asked.pop(room, None)
            self._answered.pop(room, None)

    def on_listening(self) -> None:
        """The broker listens again: what the others sent meanwhile was lost to this instance,
        so ask them about every room shown here, and tell them ours."""
        if self._closed:
            return
        self._asking |= self._views_or_active()
        self._dirty |= set(self._local)
        now = time.monotonic()
        for states in self._remote.values():  # kept while away: renewed until they answer
            for instance, (users, _expires) in list(states.items()):
                states[instance] = (users, now + INSTANCE_TTL)
        self._flush_later()

    # Sending

    def _changed(self, room: str) -> None:
        self._dirty.add(room)
        self._flush_later()

    def _flush_later(self) -> None:
        if self._flush_handle is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(FLUSH_DELAY, self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_handle = None
        self._tasks.spawn(self._flush())

    async def _flush(self, every_room: bool = False) -> None:
        rooms = set(self._local) if every_room else set()
        rooms |= self._dirty | self._answers
        asking = sorted(self._asking)
        self._dirty, self._answers, self._asking = set(), set(), set()
        states = {room: self._own_users(room) for room in sorted(rooms)}
        messages = pack_states(self._instance, states, asking)
        if not await self._send(messages):
            # Not sent (the database is away): kept for the next try (the heartbeat's).
            self._dirty |= rooms
            self._asking |= set(asking)

    def _own_users(self, room: str) -> dict[str, str]:
        return {user: name for user, name in self._local.get(room, {}).values()}

    # The merged view

    def _views_or_active(self) -> set[str]:
        return set(self._active_rooms()) | set(self._views) | set(self._local) | set(self._asked)

    def _show(self, room: str) -> bool:
        """Recompute ``room``'s view; tell local subscribers if it changed; True if it did."""
        states = self._remote.get(room, {})
        changed = self._show_view(room, [users for users, _expires in states.values()])
        if room not in self._views and room not in self._local and not any(states.values()):
            self._remote.pop(room, None)
        return changed

    def _expire(self, now: float) -> None:
        for room, states in list(self._remote.items()):
            gone = [i for i, (_users, expires) in states.items() if expires <= now]
            for instance in gone:
                del states[instance]
            if gone:
                self._show(room)
        wanted = self._views_or_active()
        for room in [r for r in self._remote if r not in wanted]:
            del self._remote[room]  # nobody here cares any more
        # A split state arrives within one message batch; parts left from a lost one are
        # dropped here (its sender sends it whole again at its next heartbeat).
        self._parts.clear()
        for instance in [i for i, seen in self._seen.items() if now - seen > 10 * INSTANCE_TTL]:
            del self._seen[instance]  # gone long ago (every restart is a new instance id)

    # Liveness

    async def _heartbeat_forever(self) -> None:
        while True:
            available = self._available()
            try:
                if available and not self._was_available:
                    self.on_listening()  # (the broker's hook does it too, at once)
                if available:
                    self._expire(time.monotonic())
                    await self._flush(every_room=True)
            except Exception:
                log.warning("presence heartbeat failed", exc_info=True)
            self._was_available = available
            await asyncio.sleep(HEARTBEAT_INTERVAL if available else 0.2)
