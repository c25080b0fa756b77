"""One WebSocket connection: its identity, subscriptions, presence, limits, heartbeat, expiry.

A ``Session`` never awaits on the hot path: replies and events are appended to its ``Outlet``
and written at once. What it guarantees:

* Messages of one connection are handled one at a time, in arrival order; each direct reply
  echoes the message's ``id``.
* A connection that sends more than ``RATE`` messages per second (bursts of ``BURST``) gets
  ``rate_limited`` errors; one that keeps on (``ABUSE_BURST`` refused or invalid messages faster
  than ``ABUSE_RATE`` per second) is closed with 1008.
* Heartbeat: a ping frame every ``heartbeat_interval``; a peer silent for ``heartbeat_timeout``
  after a ping is dropped (its presence leaves with it).
* Expiry: the socket is closed with 4001 at the token's ``exp`` (at most one tick of the shared
  timer wheel later, ``timer_wheel.MAX_TICK`` = 0.25 s) unless a ``refresh`` with a later
  token arrived first.
* Heartbeat and expiry share one entry of the loop's timer wheel (``timer_wheel``): no timer
  handle per connection; a ping may go out up to one tick late.
* Its subscriptions (room → workspace id), the rooms it is present in and the removals of its
  user seen here change only through its methods; the node calls them and does the hub's,
  the broker's and presence's part.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from liveboard.auth import Principal
from liveboard.protocol import CloseCode
from liveboard.ratelimit import take_at
from liveboard.realtime import timer_wheel
from liveboard.realtime.hub import Outlet
from liveboard.realtime.metrics import NO_CLOSE_FRAME
from liveboard.realtime.transport import Connection
from liveboard.realtime.transport.frames import PING_FRAME, pong_frame, text_frame

if TYPE_CHECKING:
    from liveboard.config import Settings

log = logging.getLogger("liveboard.session")

# Limits
RATE = 50.0
BURST = 200.0
ABUSE_RATE = 1.0
ABUSE_BURST = 30.0
#: The presence of a connection present nowhere (shared by all of them).
NOWHERE: frozenset[str] = frozenset()


class Session:
    """State of one connection. Created by the endpoint after a successful upgrade.

    It reads and closes its socket through ``connection`` (the transport seam), whichever path
    upgraded it, and writes frames to the socket itself through ``outlet``.
    """

    # Slots: thousands of these live at once (a few hundred bytes each saved).
    __slots__ = (
        "_abuse_at",
        "_close_task",
        "_expiry_due",
        "_heartbeat_due",
        "_last_seen",
        "_loop",
        "_ping_sent_at",
        "_present_in",
        "_rate_at",
        "_revoked",
        "_settings",
        "_subscriptions",
        "busy",
        "closing",
        "connection",
        "connection_id",
        "ended_with",
        "outlet",
        "principal",
        "wheel_bucket",
    )

    def __init__(
        self,
        connection: Connection,
        connection_id: str,
        principal: Principal,
        settings: Settings,
    ) -> None:
        self.connection = connection
        self.connection_id = connection_id
        self.principal = principal
        # The hub writes to the socket itself: no layer between a frame and its write.
        self.outlet = Outlet(connection.transport, connection_id, principal.user_id)
        # room → workspace id, for revocation when a member is removed
        self._subscriptions: dict[str, str] = {}
        # Rooms where this connection is present. Immutable, so that the many connections never
        # in presence share one empty value (an empty set or frozenset is 216 bytes each).
        self._present_in: frozenset[str] = NOWHERE
        # workspace id → offset of the latest member:removed of this user seen in its room
        # (None until the first: most connections never see one)
        self._revoked: dict[str, int] | None = None
        self.closing = False
        # How the connection ended, for ``connections_closed``: the close code this side sent
        # first, ``peer`` when the client closed first, ``none`` without a close frame.
        self.ended_with = NO_CLOSE_FRAME
        self.busy = False  # handling a message: frames wait, unread, meanwhile
        self._settings = settings
        # The message rate and the abuse limits, one float each (``ratelimit.take_at``).
        self._rate_at = 0.0
        self._abuse_at = 0.0
        self._loop = asyncio.get_running_loop()
        self._last_seen = self._loop.time()
        # Heartbeat and expiry share one entry in the loop's timer wheel (``timer_wheel``), set
        # for whichever is due first: no timer handle per connection (a few hundred bytes,
        # times 20,000 sockets).
        self.wheel_bucket: int | None = None
        self._heartbeat_due = math.inf  # loop time of the next ping, or of its answer's deadline
        self._ping_sent_at: float | None = None  # a ping awaiting an answer, sent at
        self._expiry_due = math.inf  # loop time of the token's expiry
        self._close_task: asyncio.Task[None] | None = None

    @property
    def user_id(self) -> str:
        return self.principal.user_id

    # Subscriptions: what the node has admitted this connection to (it does the hub's part)

    @property
    def subscriptions(self) -> Mapping[str, str]:
        """Room → workspace id of each subscription, as a read-only view."""
        return MappingProxyType(self._subscriptions)

    def is_subscribed(self, room: str) -> bool:
        return room in self._subscriptions

    def subscription_count(self) -> int:
        return len(self._subscriptions)

    def subscribe_to(self, room: str, workspace_id: str) -> bool:
        """Record the subscription to ``room``, of workspace ``workspace_id``; True when it is
        new, False when it renews one."""
        first = room not in self._subscriptions
        self._subscriptions[room] = workspace_id
        return first

    def drop_subscription(self, room: str) -> str | None:
        """Forget the subscription to ``room``: its workspace id, None when there was none."""
        return self._subscriptions.pop(room, None)

    def drop_all_subscriptions(self) -> list[tuple[str, str]]:
        """Forget every subscription (the connection is over): (room, workspace id) pairs."""
        rooms = list(self._subscriptions.items())
        self._subscriptions.clear()
        return rooms

    def rooms_of_workspace(self, workspace_id: str) -> list[str]:
        """The subscribed rooms that belong to workspace ``workspace_id``."""
        return [room for room, ws in self._subscriptions.items() if ws == workspace_id]

    # Revocations: removals of this user seen here, so that an older snapshot is refused

    def note_revocation(self, workspace_id: str, offset: int) -> None:
        """This user was removed from ``workspace_id`` at ``offset`` of its room."""
        revoked = self._revoked
        if revoked is None:
            revoked = self._revoked = {}
        revoked[workspace_id] = max(revoked.get(workspace_id, 0), offset)

    def revoked_after(self, workspace_id: str, offset: int) -> bool:
        """Whether a removal from ``workspace_id`` later than ``offset`` of its room was seen."""
        revoked = self._revoked
        return revoked is not None and revoked.get(workspace_id, 0) > offset

    # Presence: the rooms where this connection is present

    def is_present(self, room: str) -> bool:
        return room in self._present_in

    def mark_present(self, room: str) -> None:
        self._present_in |= {room}

    def mark_absent(self, room: str) -> bool:
        """Not present in ``room`` any more; True when it was (its presence is to be left)."""
        if room not in self._present_in:
            return False
        self._present_in -= {room}
        return True

    def leave_all_presence(self) -> frozenset[str]:
        """Present nowhere from now on (the connection is over): the rooms it was present in."""
        present, self._present_in = self._present_in, NOWHERE
        return present

    # Sending

    def send(self, payload: bytes) -> None:
        """Write one server message now (after anything already queued for this socket)."""
        if self.closing:
            return
        self.outlet.pending.append(text_frame(payload))
        self.outlet.flush()

    def pong(self, data: bytes) -> int:
        """Answer a ping frame now (after anything already queued); the bytes still unsent.

        Written like every other frame, without waiting for the socket to drain: waiting would
        stop the message loop, and the peer's close frame with it, behind a peer that reads
        nothing. The caller treats a peer whose answers pile up as a slow consumer.
        """
        if self.closing:
            return 0
        self.outlet.pending.append(pong_frame(data))
        return self.outlet.flush()

    def send_many(self, payloads: list[bytes]) -> None:
        """Write several messages in one system call."""
        if self.closing or not payloads:
            return
        self.outlet.pending.extend(text_frame(p) for p in payloads)
        self.outlet.flush()

    # Limits

    def allow_message(self) -> bool:
        """Spend one token of the message rate; False when over the limit."""
        at = take_at(self._rate_at, time.monotonic(), RATE, BURST)
        if at is None:
            return False
        self._rate_at = at
        return True

    def strike(self) -> bool:
        """Count a refused or invalid message; False when abuse is persistent (close 1008)."""
        at = take_at(self._abuse_at, time.monotonic(), ABUSE_RATE, ABUSE_BURST)
        if at is None:
            return False
        self._abuse_at = at
        return True

    # Timers: heartbeat and expiry

    def start_timers(self) -> None:
        self.touch()
        self._heartbeat_due = self._loop.time() + self._settings.heartbeat_interval
        self.set_expiry(self.principal.expires_at)

    def touch(self) -> None:
        """Anything arrived from the peer: it is alive."""
        self._last_seen = self._loop.time()

    def set_expiry(self, expires_at: float) -> None:
        """Close with 4001 at ``expires_at`` (unix seconds) instead of any earlier expiry."""
        self._expiry_due = self._loop.time() + max(0.0, expires_at - time.time())
        self._arm()

    def _tick(self) -> float:
        settings = self._settings
        return timer_wheel.tick_for(settings.heartbeat_interval, settings.heartbeat_timeout)

    def _arm(self) -> None:
        if self.closing:
            return
        due = min(self._heartbeat_due, self._expiry_due)
        if due == math.inf:
            self._cancel_timers()
            return
        timer_wheel.wheel_for(self._loop, self._tick()).schedule(self, due)

    def _due(self) -> None:
        """The wheel's callback: the heartbeat or the expiry (or both) may be due."""
        if self.closing:
            return
        # The wheel calls at most SLACK before the time (the loop's clock granularity).
        now = self._loop.time() + timer_wheel.SLACK
        if now >= self._expiry_due:
            self._expired()
            return
        if now >= self._heartbeat_due:
            sent_at = self._ping_sent_at
            if sent_at is None:
                self._ping()
            elif self._last_seen >= sent_at or self.busy:
                self._ping_sent_at = None
                self._heartbeat_due = sent_at + self._settings.heartbeat_interval
                if now >= self._heartbeat_due:
                    self._ping()
            else:
                log.info(
                    "dropping %s: no answer to ping",
                    self.connection_id,
                    extra={"connection_id": self.connection_id, "user_id": self.user_id},
                )
                self.abort()
                return
        self._arm()

    def _ping(self) -> None:
        sent_at = self._loop.time()
        self.outlet.pending.append(PING_FRAME)
        self.outlet.flush()
        self._ping_sent_at = sent_at
        self._heartbeat_due = sent_at + self._settings.heartbeat_timeout

    def _expired(self) -> None:
        self.close(CloseCode.TOKEN_EXPIRED, "token expired")

    # Closing

    def close(self, code: int, reason: str = "") -> None:
        """Start a close handshake with ``code``; a peer that does not answer is cut off."""
        if self.closing:
            return
        self.closing = True
        self.ended_with = str(code)
        self.outlet.closed = True
        self._cancel_timers()
        self._close_task = asyncio.ensure_future(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.connection.close(code, reason), 3.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            self.connection.abort()

    async def wait_closed(self) -> None:
        """Wait for a close handshake started by ``close`` to finish (bounded by its timeout)."""
        if self._close_task is not None:
            await asyncio.shield(self._close_task)

    def close_now(self, code: int, reason: str = "") -> None:
        """Write the close frame after whatever is queued, then cut the connection (4008)."""
        if self.closing:
            return
        self.closing = True
        self.ended_with = str(code)
        self.outlet.closed = True
        self._cancel_timers()
        transport = self.connection.transport
        if not transport.is_closing():
            self.connection.close_now(code, reason)
            # The peer may never read what is queued: give it a moment, then let go (even if
            # a graceful close began meanwhile, which would wait for the peer to read).
            self._loop.call_later(2.0, transport.abort)

    def abort(self) -> None:
        """Drop the connection without a handshake (dead peer)."""
        self.closing = True
        self.outlet.closed = True
        self._cancel_timers()
        self.connection.abort()

    def abort_timers(self) -> None:
        """The connection is over or closing on its own: no more frames, pings or expiry."""
        self.closing = True
        self.outlet.closed = True
        self._cancel_timers()

    def _cancel_timers(self) -> None:
        if self.wheel_bucket is not None:
            timer_wheel.cancel(self._loop, self._tick(), self)
