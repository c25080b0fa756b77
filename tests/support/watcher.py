"""Watching a connection: everything one ``WsClient`` receives, with its arrival time.

``Watcher`` drains one client in the background so a test can wait for a condition (``until``,
``until_offset``, ``until_users``) and then check the whole stream: the events of a room, the
latest presence list, how many ``presence:update`` messages arrived. ``assert_sequence`` checks
events are exactly offsets first..last, in order, each once; ``event_of`` finds the arrival of
the event of one acknowledged write.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from liveboard.protocol import SERVER_MESSAGE_TYPES
from tests.support.contract import EVENT_TYPES, Json
from tests.support.timing import timeout
from tests.support.wsclient import WsClient


@dataclass
class Received:
    at: float  # time.monotonic() on arrival
    message: Json


@dataclass(eq=False)
class Watcher:
    """Records everything one ``WsClient`` receives, from the moment it is created."""

    client: WsClient
    name: str = ""
    received: list[Received] = field(default_factory=list)
    closed: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        while True:
            message = await self.client.queue.get()
            if message is None:
                self.closed = True
                self.client.queue.put_nowait(None)
                self._changed.set()
                return
            self.received.append(Received(time.monotonic(), message))
            self._changed.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    # Views

    def messages(self, type_: str | None = None, since: float = 0.0) -> list[Json]:
        return [
            r.message
            for r in self.received
            if r.at >= since and (type_ is None or r.message.get("type") == type_)
        ]

    def events(self, room: str) -> list[Json]:
        return [
            r.message
            for r in self.received
            if r.message.get("room") == room and _is_event(r.message)
        ]

    def offsets(self, room: str) -> list[int]:
        return [int(e["offset"]) for e in self.events(room)]

    def last_offset(self, room: str) -> int:
        offsets = self.offsets(room)
        return offsets[-1] if offsets else 0

    def presence_updates(self, room: str, since: float = 0.0) -> list[Received]:
        return [
            r
            for r in self.received
            if r.at >= since
            and r.message.get("type") == "presence:update"
            and r.message.get("room") == room
        ]

    def users(self, room: str) -> list[str] | None:
        """The user ids of the latest ``presence:update`` of ``room`` (None if none came)."""
        updates = self.presence_updates(room)
        if not updates:
            return None
        return [u["userId"] for u in updates[-1].message["users"]]

    # Waiting

    async def until(
        self, predicate: Callable[[], bool], wait: float, what: str = "condition"
    ) -> float:
        """Wait until ``predicate()`` holds (checked on every message); return the seconds taken."""
        started = time.monotonic()
        deadline = started + timeout(wait)
        while True:
            self._changed.clear()
            if predicate():
                return time.monotonic() - started
            if self.closed:
                raise AssertionError(
                    f"{self.name}: socket closed (code {self.client.close_code}) waiting for {what}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no {what} within {wait}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.25))

    async def until_offset(self, room: str, offset: int, wait: float) -> float:
        return await self.until(
            lambda: self.last_offset(room) >= offset, wait, f"event with offset {offset} in {room}"
        )

    async def until_users(self, room: str, users: list[str], wait: float) -> float:
        expected = sorted(users)
        try:
            return await self.until(
                lambda: self.users(room) == expected,
                wait,
                f"presence {len(expected)} users {expected[:5]}... in {room}",
            )
        except AssertionError as failed:
            # What the socket held instead, for the failure's diagnosis: each update's arrival
            # (relative to the wait's end) and its users.
            now = time.monotonic()
            seen = [
                (round(u.at - now, 3), [v["userId"] for v in u.message["users"]])
                for u in self.presence_updates(room)[-5:]
            ]
            raise AssertionError(f"{failed}; its last presence updates: {seen}") from None


def assert_sequence(events: list[Json], first: int, last: int, who: str = "") -> None:
    """``events`` are exactly offsets ``first``..``last``, in order, each once, one epoch."""
    got = [int(e["offset"]) for e in events]
    expected = list(range(first, last + 1))
    if got != expected:
        duplicates = sorted({o for o in got if got.count(o) > 1})
        missing = sorted(set(expected) - set(got))
        raise AssertionError(
            f"{who}: offsets {first}..{last} expected once each in order; got {len(got)} events, "
            f"missing {missing[:20]}, duplicated {duplicates[:20]}, "
            f"out of order: {got != sorted(got)}; first 30: {got[:30]}"
        )
    assert len({e["epoch"] for e in events}) <= 1, f"{who}: several epochs"


def event_of(watcher: Watcher, room: str, task_id: str, version: int) -> Received | None:
    """The arrival of the ``task:updated`` event that took ``task_id`` to ``version``."""
    for r in watcher.received:
        m = r.message
        if m.get("room") != room or m.get("type") != "task:updated":
            continue
        task = m["data"]["task"]
        if task["id"] == task_id and int(task["version"]) == version:
            return r
    return None


def _is_event(message: Json) -> bool:
    """liveboard's own event types, and any other type the server does not send for itself
    (an event another backend published: CONTRACT §6.3)."""
    kind = message.get("type")
    return kind in EVENT_TYPES or (kind not in SERVER_MESSAGE_TYPES and "offset" in message)
