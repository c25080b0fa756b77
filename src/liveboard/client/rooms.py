"""The client's rooms: subscribe, resubscribe after every reconnect or resync, presence.

Guarantees of ``Rooms`` (the per-room stream guarantees are ``Subscription``'s):

* At most one ``Subscription`` per room. ``subscribe`` returns once the server answered
  ``subscribed`` (waiting across reconnects if need be) or raises its refusal.
* After each new link every live subscription is subscribed again, with ``since`` = its last
  delivered position, or without it when a resync is due. Only the reply to the *latest*
  subscribe of a subscription on the *current* link is applied; older ones are ignored.
* A resubscribe refused with ``rate_limited`` is retried after ``RATE_LIMITED_RETRY``
  seconds; refused otherwise, the subscription ends with ``Revoked(reason=code)``.
* Presence is joined again after every (re)subscribe of a room where it was joined.
* When the client stops, every subscription ends (with the fatal error, if there is one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Final, cast

from liveboard.client.connection import ConnectionManager
from liveboard.client.errors import ConnectionLostError, LiveboardClientError
from liveboard.client.link import CLOSE_WAIT, Link
from liveboard.client.requests import Requests
from liveboard.client.subscription import Subscription
from liveboard.protocol import (
    ErrorReply,
    Position,
    Presence,
    ProtocolError,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    parse_room,
)

log = logging.getLogger("liveboard.client")

#: Retry delay of a resubscribe refused with ``rate_limited``.
RATE_LIMITED_RETRY: Final = 1.0


class Rooms:
    """The client's subscriptions by room, kept subscribed on whatever link is current."""

    def __init__(self, connection: ConnectionManager, requests: Requests) -> None:
        self._connection = connection
        self._requests = requests
        self._subs: dict[str, Subscription] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def get(self, room: str) -> Subscription | None:
        """The live subscription to ``room``, if any."""
        return self._subs.get(room)

    def all(self) -> dict[str, Subscription]:
        """The live subscriptions by room (a copy)."""
        return dict(self._subs)

    # ------------------------------------------------------------------ the public calls

    async def subscribe(self, room: str, since: Position | None, *, buffer: bool) -> Subscription:
        """Subscribe to ``room`` (see ``LiveboardClient.subscribe``)."""
        self._connection.check_open()
        try:
            parse_room(room)
        except ProtocolError as exc:
            raise LiveboardClientError(exc.code, exc.message) from None
        if room in self._subs:
            raise LiveboardClientError("already_subscribed", f"already subscribed to {room}")
        sub = Subscription(self, room, since, buffer=buffer)
        self._subs[room] = sub
        self._connection.start()
        self._start_sync(sub)
        try:
            await sub.wait_until_subscribed()
        except BaseException:
            if self._subs.get(room) is sub:
                await self.unsubscribe(sub)
            raise
        return sub

    # ------------------------------------------------------------------ a subscription's owner

    def resubscribe(self, sub: Subscription) -> None:
        """Subscribe ``sub`` afresh on the current link (continuity was lost)."""
        self._start_sync(sub, force=True)

    async def unsubscribe(self, sub: Subscription) -> None:
        """End ``sub`` now; tell the server if it is subscribed on the current link."""
        self._drop(sub)
        sub.finish()
        link = self._connection.link
        if link is None or not sub.synced_on(link.gen):
            return
        rid = self._requests.new_id()
        with contextlib.suppress(LiveboardClientError, TimeoutError):
            await self._requests.request(
                link, Unsubscribe(room=sub.room, id=rid), rid, Unsubscribed, within=CLOSE_WAIT
            )

    async def join_presence(self, sub: Subscription) -> None:
        """Join ``sub``'s room's presence; return once an update lists this user."""
        link = self._connection.link
        if link is None or sub.closed:
            return  # joined after the next (re)subscribe
        # Resolved by an update that lists us: one already on its way (another user's join)
        # must not pass for the answer to ours.
        waiter = sub.presence_waiter(until_present=link.user_id)
        if not sub.live_on(link.gen):
            # A subscribe is in flight; `_sync` joins once it is answered.
            await waiter
            return
        rid = self._requests.new_id()
        request: asyncio.Future[ErrorReply] = asyncio.ensure_future(
            self._requests.request(
                link, Presence(action="join", room=sub.room, id=rid), rid, ErrorReply
            )
        )
        try:
            await asyncio.wait(
                [waiter, cast("asyncio.Future[None]", request)],
                return_when=asyncio.FIRST_COMPLETED,
            )
            if request.done():
                with contextlib.suppress(ConnectionLostError):
                    request.result()  # raises the server's error (e.g. not_subscribed)
        finally:
            request.cancel()
            with contextlib.suppress(BaseException):
                await request

    async def leave_presence(self, sub: Subscription) -> None:
        """Leave ``sub``'s room's presence (nothing to do while not subscribed on this link)."""
        link = self._connection.link
        if link is None or sub.closed or not sub.synced_on(link.gen):
            return
        with contextlib.suppress(ConnectionLostError):
            await link.send(Presence(action="leave", room=sub.room))

    def is_live(self, sub: Subscription) -> bool:
        """True when ``sub`` is subscribed on the current link, with no subscribe in flight."""
        link = self._connection.link
        return link is not None and self._subs.get(sub.room) is sub and sub.live_on(link.gen)

    # ------------------------------------------------------------------ driven by the client

    def link_up(self, link: Link) -> None:
        """A new link is up: subscribe every room on it."""
        for sub in list(self._subs.values()):
            self._start_sync(sub)

    def subscribed(self, link: Link, reply: Subscribed) -> None:
        """Apply ``reply`` if it answers the latest subscribe of its room on ``link``."""
        sub = self._subs.get(reply.room)
        if sub is not None:
            sub.apply_subscribed(reply, link.gen)

    def server_unsubscribed(self, message: Unsubscribed) -> None:
        """The server ended a subscription on its own (membership revoked)."""
        sub = self._subs.pop(message.room, None)
        if sub is not None:
            log.info("%s: ended by the server (%s)", message.room, message.reason)
            sub.revoke(message.reason or "unsubscribed")

    def stop(self, error: LiveboardClientError | None) -> None:
        """The client is done: end every subscription (with ``error``, if any)."""
        subs, self._subs = list(self._subs.values()), {}
        for sub in subs:
            sub.finish(error)

    async def aclose(self) -> None:
        """Cancel and await the subscribe tasks still running."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    # ------------------------------------------------------------------ (re)subscribing

    def _start_sync(self, sub: Subscription, *, force: bool = False) -> None:
        """(Re)subscribe ``sub`` on the current link unless already done (or ``force``)."""
        link = self._connection.link
        if link is None or sub.closed or self._subs.get(sub.room) is not sub:
            return
        if sub.synced_on(link.gen) and not force:
            return
        rid = self._requests.new_id()
        since = sub.begin_subscribe(rid, link.gen)
        self._spawn(self._sync(sub, link, rid, since))

    async def _sync(self, sub: Subscription, link: Link, rid: int, since: Position | None) -> None:
        try:
            await self._requests.request(
                link, Subscribe(room=sub.room, since=since, id=rid), rid, Subscribed
            )
        except ConnectionLostError:
            return  # the next connection subscribes again
        except LiveboardClientError as exc:
            if not sub.awaits_reply_to(rid) or sub.closed:
                return
            if not sub.was_subscribed:
                self._drop(sub)
                sub.finish(exc)
            elif exc.code == "rate_limited":
                await asyncio.sleep(RATE_LIMITED_RETRY)
                self._start_sync(sub, force=True)
            else:
                log.warning("%s: resubscribe refused (%s)", sub.room, exc.code)
                self._drop(sub)
                sub.revoke(exc.code)
            return
        if sub.present and sub.awaits_reply_to(rid) and self._connection.link is link:
            with contextlib.suppress(ConnectionLostError):
                await link.send(Presence(action="join", room=sub.room))

    def _drop(self, sub: Subscription) -> None:
        if self._subs.get(sub.room) is sub:
            del self._subs[sub.room]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("client task failed", exc_info=task.exception())
