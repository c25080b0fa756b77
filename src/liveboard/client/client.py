"""``LiveboardClient``: the SDK's public façade over one managed connection, its rooms and REST.

The work is done by parts it composes, each with its own guarantees:

* ``connection.ConnectionManager`` — connect, reconnect with backoff, close codes, heartbeat,
  token refresh, states;
* ``requests.Requests`` — request ids, the futures waiting for replies, matching replies;
* ``rooms.Rooms`` and ``subscription.Subscription`` — subscriptions, resubscribe, presence;
* ``rest.RestApi`` (behind the ``RestHelpers`` methods) — authenticated REST calls.

Guarantees of the façade itself:

* Every server frame is routed synchronously, in arrival order, on the event loop (ordering
  of events, replies and notices relies on it): room traffic to its subscription, replies to
  the request that waits for them. A malformed frame is logged and skipped; a message type
  this SDK does not know is ignored.
* Each request carries an ``id`` and waits for its own reply; an ``error`` reply raises
  ``LiveboardClientError(code, message)``; a request cut short by a disconnect raises
  ``ConnectionLostError``. Once the client is closed every call raises ``ClientClosedError``
  (or the fatal error that stopped it).

Everything runs on the event loop that created the client; nothing here is thread-safe.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec

from liveboard.client.connection import ConnectionManager, ConnectionSettings, ConnectionState
from liveboard.client.errors import LiveboardClientError
from liveboard.client.link import HttpSession, Link, websocket_url
from liveboard.client.requests import Requests
from liveboard.client.rest import RestApi, RestHelpers
from liveboard.client.rooms import Rooms
from liveboard.client.subscription import Subscription
from liveboard.client.tokens import TokenSource, TokenSpec
from liveboard.protocol import (
    Connected,
    ErrorReply,
    Event,
    Position,
    PresenceUpdate,
    ResyncNotice,
    Subscribed,
    Unsubscribed,
    decode_server_message,
)

log = logging.getLogger("liveboard.client")


class LiveboardClient(RestHelpers):
    """A liveboard client: one auto-reconnecting WebSocket plus REST helpers.

    ``base_url`` is the server's HTTP root (``http://127.0.0.1:8000``). ``token`` is a JWT
    string, or a provider (plain or async function) returning a fresh one; a provider is called
    before each connection attempt and before the current token expires. Use as
    ``async with LiveboardClient(...) as client:`` or call ``connect()`` / ``aclose()``.
    The reconnect policy and the options are described in docs/client.md.
    """

    def __init__(
        self,
        base_url: str,
        token: TokenSpec,
        *,
        heartbeat: float = 15.0,
        ping_timeout: float = 5.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        refresh_margin: float = 30.0,
        session: aiohttp.ClientSession | None = None,
        restart_delay: float = 1.5,
        restart_window: float = 30.0,
        stable_after: float = 5.0,
        connect_timeout: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        if heartbeat <= 0 or ping_timeout <= 0:
            raise ValueError("heartbeat and ping_timeout must be positive")
        self.base_url = base_url.rstrip("/")
        self._settings = ConnectionSettings(
            ws_url=websocket_url(base_url),
            heartbeat=heartbeat,
            ping_timeout=ping_timeout,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            refresh_margin=refresh_margin,
            restart_delay=restart_delay,
            restart_window=restart_window,
            stable_after=stable_after,
            connect_timeout=connect_timeout,
        )
        tokens = TokenSource(token)
        self._http = HttpSession(session)
        self._requests = Requests()
        self._conn = ConnectionManager(
            self._settings,
            tokens,
            self._http,
            self._requests,
            on_message=self._dispatch,
            on_link_up=self._link_up,
            on_stop=self._stop,
            rng=rng,
        )
        self._rooms = Rooms(self._conn, self._requests)
        self._rest = RestApi(
            self.base_url, tokens, self._http, lambda: self.connection_id, refresh_margin
        )

    # ------------------------------------------------------------------ options (read-only)

    @property
    def ws_url(self) -> str:
        return self._settings.ws_url

    @property
    def heartbeat(self) -> float:
        return self._settings.heartbeat

    @property
    def ping_timeout(self) -> float:
        return self._settings.ping_timeout

    @property
    def backoff_base(self) -> float:
        return self._settings.backoff_base

    @property
    def backoff_cap(self) -> float:
        return self._settings.backoff_cap

    @property
    def refresh_margin(self) -> float:
        return self._settings.refresh_margin

    @property
    def restart_delay(self) -> float:
        return self._settings.restart_delay

    @property
    def stable_after(self) -> float:
        return self._settings.stable_after

    @property
    def connect_timeout(self) -> float:
        return self._settings.connect_timeout

    # ------------------------------------------------------------------ status

    @property
    def error(self) -> LiveboardClientError | None:
        """The fatal error that stopped the client, if any."""
        return self._conn.error

    @property
    def connections(self) -> int:
        """Successful connections so far (1 after the first, 2 after the first reconnect...)."""
        return self._conn.connections

    @property
    def last_close_code(self) -> int | None:
        """Close code of the last connection (None: dropped without one, or none yet)."""
        return self._conn.last_close_code

    @property
    def token_refreshes(self) -> int:
        """Tokens sent with ``refresh`` and accepted."""
        return self._conn.token_refreshes

    @property
    def state(self) -> ConnectionState:
        return self._conn.state

    @property
    def connected(self) -> bool:
        return self._conn.link is not None

    @property
    def connection_id(self) -> str | None:
        """The server's id for the current connection (None while disconnected)."""
        link = self._conn.link
        return None if link is None else link.connection_id

    @property
    def user_id(self) -> str | None:
        link = self._conn.link
        return None if link is None else link.user_id

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        """The active subscriptions by room (a copy)."""
        return self._rooms.all()

    def on_state_change(self, callback: Callable[[ConnectionState], object]) -> None:
        """Call ``callback(state)`` on every change of ``state``."""
        self._conn.on_state_change(callback)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> LiveboardClient:
        try:
            await self.connect()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Start the connection and wait until it is up (retrying with backoff meanwhile).

        Raises the fatal error if the client stops instead (e.g. 401 with a static token).
        Bound the wait with ``asyncio.timeout``; the client keeps trying in the background
        until ``aclose``.
        """
        self._conn.check_open()
        self._conn.start()
        await self._conn.wait_for_state(ConnectionState.CONNECTED)

    async def wait_for_state(self, state: ConnectionState) -> None:
        """Wait until ``state`` is reached; raise the client's error if it closes instead."""
        await self._conn.wait_for_state(state)

    async def aclose(self) -> None:
        """Close the connection (code 1000) and end every subscription; idempotent."""
        await self._conn.close()
        await self._rooms.aclose()
        await self._http.close()

    # ------------------------------------------------------------------ requests

    async def ping(self) -> float:
        """Send an application-level ``ping``; return the round-trip time in seconds.

        Raises ``ConnectionLostError`` when not connected (or if the link drops meanwhile).
        """
        return await self._conn.ping(self._conn.current_link(), None)

    async def refresh_token(self) -> int:
        """Get a new token from the provider and send it now; return its ``expiresAt``."""
        return (await self._conn.refresh(self._conn.current_link())).expires_at

    async def subscribe(
        self,
        room: str,
        *,
        since: Position | None = None,
        buffer: bool = True,
    ) -> Subscription:
        """Subscribe to ``room`` (``project:{id}`` or ``workspace:{id}``) and return its stream.

        With ``since`` (e.g. a snapshot's ``offset``/``epoch``) the events after it come first;
        if the server cannot replay them the first item is a ``Resync``. Waits for the server's
        ``subscribed`` (across reconnects if need be); raises ``LiveboardClientError`` (e.g.
        ``forbidden``) if refused. ``buffer=False``: no ``async for``, callbacks only.
        """
        return await self._rooms.subscribe(room, since, buffer=buffer)

    async def unsubscribe(self, room: str) -> None:
        """End the subscription to ``room`` (no-op if there is none)."""
        sub = self._rooms.get(room)
        if sub is not None:
            await self._rooms.unsubscribe(sub)

    def last_position(self) -> Position | None:
        """The event position (``Liveboard-Offset``/``Liveboard-Epoch``) of the answer to the
        current asyncio task's last mutation; None when it emitted no event or none was made."""
        return self._rest.last_position()

    async def _api(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        expect: int | tuple[int, ...] = 200,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        self._conn.check_open()
        return await self._rest.call(method, path, body, expect=expect, headers=headers)

    # ------------------------------------------------------------------ wiring

    def _link_up(self, link: Link) -> None:
        self._rooms.link_up(link)

    def _stop(self, error: LiveboardClientError | None) -> None:
        self._rooms.stop(error)

    def _dispatch(self, link: Link, data: str) -> None:
        """Route one server message, synchronously (ordering relies on it)."""
        try:
            message = decode_server_message(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("ignoring a malformed server message: %s", exc)
            return
        if message is None:
            return
        if isinstance(message, Event):
            sub = self._rooms.get(message.room)
            if sub is not None:
                sub.deliver_event(message)
            return
        if isinstance(message, PresenceUpdate):
            sub = self._rooms.get(message.room)
            if sub is not None:
                sub.deliver_presence(message)
            return
        if isinstance(message, ResyncNotice):
            sub = self._rooms.get(message.room)
            if sub is not None:
                sub.server_resync(message.reason)
            return
        if isinstance(message, Connected):
            return
        if isinstance(message, Subscribed):
            self._rooms.subscribed(link, message)
        elif isinstance(message, Unsubscribed) and message.id is None:
            self._rooms.server_unsubscribed(message)
            return
        elif isinstance(message, ErrorReply) and message.id is None:
            log.warning("server error: %s: %s", message.code, message.message)
            return
        self._requests.resolve(message)
