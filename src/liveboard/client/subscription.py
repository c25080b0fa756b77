"""One room's stream on the client: ordering, de-duplication, resync, presence, delivery.

Guarantees of a ``Subscription`` (across any number of reconnects):

* Events are delivered in offset order, each at most once: an event whose offset is at or below
  the last one delivered is dropped; one above ``last + 1`` (a gap, which the server never sends
  without ``resync``) or from another epoch is not delivered and starts the resync path.
* No event is lost silently: after a reconnect the SDK resubscribes with ``since`` = the last
  delivered position, and the server replays what was missed. When it cannot (``recovered:
  false``), or sends ``resync``, or the SDK saw a gap, exactly one ``Resync`` item is delivered
  *before* any event of the new stream: refetch the snapshot then.
* ``Revoked`` is the last item of a subscription the server ended for good (membership revoked,
  or the resubscribe after a reconnect was refused). ``async for`` stops after it.
* Items go, in the same order, to ``async for`` (unless ``buffer=False``) and to the callbacks.
  A callback may be a plain function (run at once, so it must not block) or return an awaitable
  (awaited in order, one at a time, on a task of this subscription). A failing callback is
  logged and does not affect the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from liveboard.client.errors import ClientClosedError
from liveboard.client.messages import Resync, Revoked, SubscriptionItem
from liveboard.protocol import (
    Event,
    MessageId,
    Position,
    PresenceUpdate,
    PresenceUser,
    Subscribed,
)

log = logging.getLogger("liveboard.client")

T = TypeVar("T")
Callback = Callable[[T], object]


class SubscriptionOwner(Protocol):
    """What a subscription needs from its client (implemented by ``client.rooms.Rooms``)."""

    def resubscribe(self, sub: Subscription) -> None: ...

    async def unsubscribe(self, sub: Subscription) -> None: ...

    async def join_presence(self, sub: Subscription) -> None: ...

    async def leave_presence(self, sub: Subscription) -> None: ...

    def is_live(self, sub: Subscription) -> bool: ...


class Subscription:
    """A subscription to ``room``: ``async for item in sub`` and/or ``sub.on_event(cb)``.

    ``position`` is the last delivered ``{offset, epoch}`` (what a reconnect resumes from).
    ``presence`` is the latest list of users viewing the room (kept current while subscribed;
    ``join_presence`` adds you to it). ``closed`` is True once the stream has ended.

    The methods under "driven by the client" are the SDK's internal interface (its rooms
    manager feeds frames and subscribe replies through them); applications do not call them.
    """

    def __init__(
        self,
        owner: SubscriptionOwner,
        room: str,
        since: Position | None = None,
        *,
        buffer: bool = True,
    ) -> None:
        self.room = room
        self.position: Position | None = since
        self.presence: list[PresenceUser] = []
        self.present = False
        self.closed = False
        self.revoked: Revoked | None = None
        self._owner = owner
        self._queue: deque[SubscriptionItem] | None = deque() if buffer else None
        self._wakeup = asyncio.Event()
        self._error: BaseException | None = None
        self._event_callbacks: list[Callback[Event]] = []
        self._resync_callbacks: list[Callback[Resync]] = []
        self._presence_callbacks: list[Callback[PresenceUpdate]] = []
        self._revoked_callbacks: list[Callback[Revoked]] = []
        self._pending_calls: deque[Awaitable[object]] = deque()
        self._call_task: asyncio.Task[None] | None = None
        # Stream control, driven by the client on the event loop.
        self._awaiting = True  # events are not ours until the `subscribed` reply
        self._request_id: MessageId = None
        self._since_sent: Position | None = None
        self._resync_reason: str | None = None
        self._synced_gen = -1
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Futures of `ready()` calls, resolved by the next `subscribed` applied, or the end.
        self._live_waiters: list[asyncio.Future[None]] = []
        # (future, user that must be present for it to be resolved, or None for any update)
        self._presence_waiters: list[tuple[asyncio.Future[None], str | None]] = []

    def __repr__(self) -> str:
        return f"<Subscription {self.room} at {self.position} closed={self.closed}>"

    # ------------------------------------------------------------------ public API

    def on_event(self, callback: Callback[Event]) -> None:
        """Call ``callback(event)`` for each event, in order."""
        self._event_callbacks.append(callback)

    def on_resync(self, callback: Callback[Resync]) -> None:
        """Call ``callback(resync)`` when the snapshot must be refetched."""
        self._resync_callbacks.append(callback)

    def on_presence(self, callback: Callback[PresenceUpdate]) -> None:
        """Call ``callback(update)`` when the room's present users change."""
        self._presence_callbacks.append(callback)

    def on_revoked(self, callback: Callback[Revoked]) -> None:
        """Call ``callback(revoked)`` when the server ends the subscription for good."""
        self._revoked_callbacks.append(callback)

    async def unsubscribe(self) -> None:
        """End the subscription (presence leaves with it); ``async for`` stops."""
        await self._owner.unsubscribe(self)

    async def join_presence(self) -> list[PresenceUser]:
        """Appear in the room's presence, now and after every reconnect; return who is there.

        Waits for the server's ``presence:update`` when connected; when not, returns at once
        (the SDK joins as soon as it is subscribed again).
        """
        self.present = True
        await self._owner.join_presence(self)
        return list(self.presence)

    async def leave_presence(self) -> None:
        """Stop appearing in the room's presence (the subscription goes on)."""
        self.present = False
        await self._owner.leave_presence(self)

    async def ready(self) -> None:
        """Wait until the subscription is live on the current connection: the server has
        answered its latest ``subscribe`` there, so every event after ``position`` will be
        delivered, in order, with no gap (or a ``Resync`` comes first).

        Returns at once when it already is, as right after ``subscribe()`` (which waits for
        the first answer). After a disconnect, or a resync, it waits for the answer to the
        ``subscribe`` the SDK sends again, across as many reconnects as it takes. Raises the
        error the stream ended with, or ``ClientClosedError`` once it has ended (after
        ``Revoked``, ``unsubscribe()`` or ``aclose()``). Bound the wait with ``asyncio.timeout``.
        Cancelling the wait does not affect the subscription.
        """
        await self.wait_until_subscribed()
        while True:
            if self.closed:
                raise self._error or ClientClosedError("the subscription has ended")
            if self._owner.is_live(self):
                return
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._live_waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._live_waiters.remove(waiter)

    async def get(self) -> SubscriptionItem:
        """The next item (one step of ``async for``); ``StopAsyncIteration`` at the end.

        Bound the wait with ``asyncio.timeout`` if need be."""
        return await self.__anext__()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> SubscriptionItem:
        if self._queue is None:
            raise RuntimeError("this subscription was made with buffer=False: use callbacks")
        while not self._queue:
            if self.closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._queue.popleft()

    # ------------------------------------------------------------------ driven by the client

    async def wait_until_subscribed(self) -> None:
        """Wait for the first ``subscribed`` reply; raise the error the stream ended with.

        Cancelling the wait does not cancel the subscription (the caller decides)."""
        await asyncio.shield(self._ready)

    @property
    def was_subscribed(self) -> bool:
        """True once the first ``subscribe`` was answered (or the stream ended before)."""
        return self._ready.done()

    def begin_subscribe(self, request_id: int, gen: int) -> Position | None:
        """A ``subscribe`` with ``request_id`` is being sent on connection ``gen``: until its
        reply, events are not delivered. Returns the ``since`` to send: the last delivered
        position, or None when a resync is due (subscribe afresh)."""
        since = None if self._resync_reason is not None else self.position
        self._awaiting = True
        self._request_id = request_id
        self._since_sent = since
        self._synced_gen = gen
        return since

    def synced_on(self, gen: int) -> bool:
        """True when the latest ``subscribe`` was sent on connection ``gen``."""
        return self._synced_gen == gen

    def live_on(self, gen: int) -> bool:
        """True when subscribed on connection ``gen`` with no ``subscribe`` awaiting a reply."""
        return not self._awaiting and self._synced_gen == gen

    def awaits_reply_to(self, request_id: int) -> bool:
        """True when ``request_id`` is the latest ``subscribe`` sent for this room."""
        return self._request_id == request_id

    def apply_subscribed(self, reply: Subscribed, gen: int) -> None:
        """Apply a ``subscribed`` reply received on connection ``gen``, if it answers the latest
        ``subscribe`` (sent on that connection); any other is ignored. Emits the ``Resync``
        that is due, before any event of the new stream."""
        if reply.id is None or self._synced_gen != gen or self._request_id != reply.id:
            return
        self._awaiting = False
        since, reason = self._since_sent, self._resync_reason
        self._resync_reason = None
        if since is not None and reply.recovered is True and since.epoch == reply.epoch:
            self.position = since  # the events after `since` follow, once, in order
        else:
            if since is not None and reason is None:
                reason = "not_recovered"
            self.position = Position(offset=reply.offset, epoch=reply.epoch)
            if reason is not None:
                self._emit(Resync(self.room, reason, reply.offset, reply.epoch))
        if not self._ready.done():
            self._ready.set_result(None)
        self._wake_live_waiters()

    def deliver_event(self, event: Event) -> None:
        """An event of this room arrived: deliver it if it is the next one (see the class's
        guarantees); a gap or another epoch starts the resync path instead."""
        if self._awaiting or self.closed:
            return
        position = self.position
        assert position is not None  # set by the `subscribed` reply
        if event.epoch != position.epoch:
            self._lost_continuity("epoch_mismatch")
            return
        if event.offset <= position.offset:
            return  # already delivered
        if event.offset != position.offset + 1:
            self._lost_continuity("gap")
            return
        self.position = Position(offset=event.offset, epoch=event.epoch)
        self._emit(event)

    def server_resync(self, reason: str) -> None:
        """The server ended the subscription with ``resync``: subscribe afresh."""
        if self.closed:
            return
        self._lost_continuity(reason)

    def _lost_continuity(self, reason: str) -> None:
        log.info("%s: continuity lost (%s); resubscribing", self.room, reason)
        self._awaiting = True
        self._resync_reason = reason
        self._owner.resubscribe(self)

    def deliver_presence(self, update: PresenceUpdate) -> None:
        """The room's presence changed: keep ``presence``, wake the waiters it answers, emit."""
        if self.closed:
            return
        self.presence = list(update.users)
        present = {u.user_id for u in update.users}
        waiting: list[tuple[asyncio.Future[None], str | None]] = []
        for waiter, user_id in self._presence_waiters:
            if waiter.done():
                continue
            if user_id is None or user_id in present:
                waiter.set_result(None)
            else:  # an update sent before our join took effect (someone else's join, say)
                waiting.append((waiter, user_id))
        self._presence_waiters = waiting
        self._emit(update)

    def presence_waiter(self, until_present: str | None = None) -> asyncio.Future[None]:
        """A future resolved by the next ``presence:update`` (that lists ``until_present``),
        or when the stream ends."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._presence_waiters.append((waiter, until_present))
        return waiter

    def revoke(self, reason: str) -> None:
        """The server ended the subscription for good: emit ``Revoked``, then end."""
        if self.closed:
            return
        self.revoked = Revoked(self.room, reason)
        self._emit(self.revoked)
        self.finish()

    def finish(self, error: BaseException | None = None) -> None:
        """End the stream (``async for`` stops, or raises ``error``); idempotent."""
        if self.closed:
            return
        self.closed = True
        self._error = error
        self._wakeup.set()
        if not self._ready.done():
            self._ready.set_exception(error or ClientClosedError("the subscription has ended"))
            self._ready.exception()  # retrieved: no "never retrieved" warning if unawaited
        for waiter, _user_id in self._presence_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._presence_waiters.clear()
        self._wake_live_waiters()

    def _wake_live_waiters(self) -> None:
        """Let every ``ready()`` look again (each checks for itself whether it is done)."""
        waiters, self._live_waiters = self._live_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------------ delivery

    def _emit(self, item: SubscriptionItem) -> None:
        if self._queue is not None:
            self._queue.append(item)
            self._wakeup.set()
        callbacks: list[Callback[Any]]
        if isinstance(item, Event):
            callbacks = list(self._event_callbacks)
        elif isinstance(item, Resync):
            callbacks = list(self._resync_callbacks)
        elif isinstance(item, PresenceUpdate):
            callbacks = list(self._presence_callbacks)
        else:
            callbacks = list(self._revoked_callbacks)
        for callback in callbacks:
            try:
                result = callback(item)
            except Exception:
                log.exception("%s: callback %r failed", self.room, callback)
                continue
            if inspect.isawaitable(result):
                self._pending_calls.append(result)
                if self._call_task is None or self._call_task.done():
                    self._call_task = asyncio.ensure_future(self._run_calls())

    async def _run_calls(self) -> None:
        while self._pending_calls:
            awaitable = self._pending_calls.popleft()
            try:
                await awaitable
            except Exception:
                log.exception("%s: async callback failed", self.room)

    async def _drain_callbacks(self) -> None:
        """Wait for the async callbacks already queued (used when closing)."""
        task = self._call_task
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await task
