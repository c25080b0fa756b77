"""``LiveboardClient``: one managed WebSocket connection, its requests, rooms and REST helpers.

Guarantees:

* **Reconnects after any disconnect** — a dropped link, a server restart (1012: backoff plus a
  random extra delay of up to ``restart_delay`` seconds), 1011, 4008, 4001 (after asking the
  token provider for a new token) — with exponential backoff and full jitter: the n-th
  consecutive attempt waits ``uniform(0, min(backoff_cap, backoff_base * 2**n))``. The count
  starts again once a connection has stayed up ``stable_after`` seconds.
* **Stops for good** (state ``closed``, ``error`` set, subscriptions end with that error) on
  close codes that mean a client bug (1002, 1003, 1007, 1008, 1009) and on HTTP 401 at upgrade
  with a *static* token. With a token provider a 401 asks the provider again and retries.
* **Notices dead links fast**: an application-level ``ping`` every ``heartbeat`` seconds; no
  ``pong`` within ``ping_timeout`` and the link is dropped and replaced.
* **Keeps the token fresh**: ``refresh_margin`` seconds before the token's ``exp`` (read from
  the JWT, unverified) the provider is asked for a new one and the server gets ``refresh``, so
  the socket is never closed with 4001 while the provider works.
* **Resumes every room** after a reconnect with ``since`` = the last delivered position, and
  re-joins presence where it was joined (see ``Subscription`` for the per-room guarantees).
* Each request carries an ``id`` and waits for its own reply; an ``error`` reply raises
  ``LiveboardClientError(code, message)``; a request cut short by a disconnect raises
  ``ConnectionLostError``.

Everything runs on the event loop that created the client; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, cast

import aiohttp
import msgspec
from aiohttp import WSMsgType

from liveboard.client.backoff import Backoff
from liveboard.client.errors import (
    ApiError,
    ClientClosedError,
    ConnectionLostError,
    FatalConnectionError,
    LiveboardClientError,
)
from liveboard.client.rest import RestHelpers
from liveboard.client.subscription import Subscription
from liveboard.client.tokens import TokenSource, TokenSpec, jwt_expiry, refresh_delay
from liveboard.protocol import (
    ClientMessage,
    CloseAction,
    CloseCode,
    Connected,
    ErrorReply,
    Event,
    Ping,
    Pong,
    Position,
    Presence,
    PresenceUpdate,
    ProtocolError,
    Refresh,
    Refreshed,
    Reply,
    ResyncNotice,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
    close_action,
    decode_server_message,
    encode_client_message,
    parse_room,
)

log = logging.getLogger("liveboard.client")

R = TypeVar("R", bound=Reply)

#: How long ``aclose`` waits for the server to answer its close frame.
CLOSE_WAIT: Final = 2.0
#: Retry delay of a resubscribe refused with ``rate_limited``.
RATE_LIMITED_RETRY: Final = 1.0


class ConnectionState(enum.StrEnum):
    """``connecting`` (first attempt(s)), ``connected``, ``reconnecting``, ``closed``.

    A client starts ``closed`` (not started) and ends ``closed`` (``aclose`` or a fatal error,
    then ``error`` is set).
    """

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(eq=False)
class _Link:
    """One open WebSocket connection."""

    ws: aiohttp.ClientWebSocketResponse
    gen: int
    connection_id: str
    user_id: str
    token: str
    opened_at: float
    reader: asyncio.Task[None] | None = None
    dead_reason: str | None = None
    close_code: int | None = None  # from the server's close frame, if one came
    close_reason: str = ""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@dataclass(frozen=True)
class _LinkEnd:
    connected: bool
    close_code: int | None
    reason: str
    duration: float = 0.0


def websocket_url(base_url: str) -> str:
    """``http://host:port`` → ``ws://host:port/ws/connect`` (``https`` → ``wss``)."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + "/ws/connect"
    if base.startswith("http://"):
        return "ws://" + base.removeprefix("http://") + "/ws/connect"
    if base.startswith(("ws://", "wss://")):
        return base if base.endswith(("/ws", "/ws/connect")) else base + "/ws/connect"
    raise ValueError(f"base_url must start with http:// or https://, not {base_url!r}")


class LiveboardClient(RestHelpers):
    """A liveboard client: one auto-reconnecting WebSocket plus REST helpers.

    ``base_url`` is the server's HTTP root (``http://127.0.0.1:8000``). ``token`` is a JWT
    string, or a provider (plain or async function) returning a fresh one; a provider is called
    before each connection attempt and before the current token expires. Use as
    ``async with LiveboardClient(...) as client:`` or call ``connect()`` / ``aclose()``.
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
        restart_delay: float = 3.0,
        stable_after: float = 5.0,
        connect_timeout: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        if heartbeat <= 0 or ping_timeout <= 0:
            raise ValueError("heartbeat and ping_timeout must be positive")
        self.base_url = base_url.rstrip("/")
        self.ws_url = websocket_url(base_url)
        self.heartbeat = heartbeat
        self.ping_timeout = ping_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.refresh_margin = refresh_margin
        self.restart_delay = restart_delay
        self.stable_after = stable_after
        self.connect_timeout = connect_timeout
        #: The fatal error that stopped the client, if any.
        self.error: LiveboardClientError | None = None
        #: Successful connections so far (1 after the first, 2 after the first reconnect...).
        self.connections = 0
        #: Close code of the last connection (None: dropped without one, or none yet).
        self.last_close_code: int | None = None
        #: Tokens sent with ``refresh`` and accepted.
        self.token_refreshes = 0
        self._tokens = TokenSource(token)
        self._session = session
        self._own_session = session is None
        self._rng = rng or random.Random()
        self._state = ConnectionState.CLOSED
        self._state_callbacks: list[Callable[[ConnectionState], object]] = []
        self._state_changed = asyncio.Event()
        self._link: _Link | None = None
        self._gen = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._subs: dict[str, Subscription] = {}
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()

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

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def connected(self) -> bool:
        return self._link is not None

    @property
    def connection_id(self) -> str | None:
        """The server's id for the current connection (None while disconnected)."""
        return None if self._link is None else self._link.connection_id

    @property
    def user_id(self) -> str | None:
        return None if self._link is None else self._link.user_id

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        """The active subscriptions by room (a copy)."""
        return dict(self._subs)

    def on_state_change(self, callback: Callable[[ConnectionState], object]) -> None:
        """Call ``callback(state)`` on every change of ``state``."""
        self._state_callbacks.append(callback)

    async def connect(self) -> None:
        """Start the connection and wait until it is up (retrying with backoff meanwhile).

        Raises the fatal error if the client stops instead (e.g. 401 with a static token).
        Bound the wait with ``asyncio.timeout``; the client keeps trying in the background
        until ``aclose``.
        """
        self._check_open()
        self._start()
        await self.wait_for_state(ConnectionState.CONNECTED)

    async def wait_for_state(self, state: ConnectionState) -> None:
        """Wait until ``state`` is reached; raise the client's error if it closes instead."""
        while self._state is not state:
            if self._state is ConnectionState.CLOSED and (self._closing or self.error):
                raise self.error or ClientClosedError()
            self._state_changed.clear()
            await self._state_changed.wait()

    async def aclose(self) -> None:
        """Close the connection (code 1000) and end every subscription; idempotent."""
        self._closing = True
        link = self._link
        if link is not None:
            await _drop(link.ws, CLOSE_WAIT, b"client closing")
        runner = self._runner
        while runner is not None and not runner.done():
            # Repeat the cancel: one that races with a finishing await can be lost.
            runner.cancel()
            await asyncio.wait({runner}, timeout=0.5)
        self._shutdown(None)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self._close_session()

    async def _close_session(self) -> None:
        if self._own_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _check_open(self) -> None:
        if self.error is not None:
            raise self.error
        if self._closing:
            raise ClientClosedError()

    def _start(self) -> None:
        if self._runner is None:
            self._set_state(ConnectionState.CONNECTING)
            self._runner = asyncio.ensure_future(self._run())

    def _set_state(self, state: ConnectionState) -> None:
        if state is self._state:
            return
        self._state = state
        self._state_changed.set()
        for callback in list(self._state_callbacks):
            try:
                callback(state)
            except Exception:
                log.exception("state callback %r failed", callback)

    def _shutdown(self, error: LiveboardClientError | None) -> None:
        """The client is done: fail what waits, end every subscription."""
        self._closing = True
        if error is not None and self.error is None:
            self.error = error
        self._fail_pending(ClientClosedError() if error is None else error)
        subs, self._subs = list(self._subs.values()), {}
        for sub in subs:
            sub._finish(error)
        self._set_state(ConnectionState.CLOSED)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    # ------------------------------------------------------------------ the connection loop

    async def _run(self) -> None:
        backoff = Backoff(self.backoff_base, self.backoff_cap, self._rng)
        try:
            while not self._closing:
                try:
                    end = await self._connect_once()
                except FatalConnectionError:
                    raise
                except Exception as exc:  # a bug here must not end the reconnect loop
                    log.exception("unexpected failure of the connection")
                    end = _LinkEnd(False, None, f"unexpected failure: {exc!r}")
                if self._closing:
                    break
                if end.connected:
                    self.last_close_code = end.close_code
                    if end.duration >= self.stable_after:
                        backoff.reset()
                action = close_action(end.close_code) if end.connected else CloseAction.RECONNECT
                if action is CloseAction.FATAL:
                    raise FatalConnectionError(
                        f"closed_{end.close_code}",
                        f"the server closed the connection with {end.close_code} ({end.reason});"
                        " reconnecting would not help",
                        end.close_code,
                    )
                delay = backoff.next_delay()
                if action is CloseAction.RECONNECT_LATER:
                    delay += self._rng.uniform(0.0, self.restart_delay)
                log.info(
                    "connection %s (%s); reconnecting in %.2fs",
                    "closed" if end.connected else "failed",
                    end.reason,
                    delay,
                )
                self._set_state(
                    ConnectionState.RECONNECTING if self.connections else ConnectionState.CONNECTING
                )
                await asyncio.sleep(delay)
        except FatalConnectionError as exc:
            log.error("liveboard client stopped: %s", exc.message)
            self._shutdown(exc)
            await self._close_session()
            return
        self._shutdown(None)

    async def _connect_once(self) -> _LinkEnd:
        """One connection attempt and, if it succeeds, its whole life."""
        try:
            token = await self._tokens.fresh()
        except Exception as exc:
            return _LinkEnd(False, None, f"token provider failed: {exc!r}")
        try:
            async with asyncio.timeout(self.connect_timeout):
                ws = await self._http().ws_connect(
                    self.ws_url,
                    headers={"Authorization": f"Bearer {token}"},
                    autoping=True,
                    autoclose=True,
                    heartbeat=None,
                    max_msg_size=16 * 1024 * 1024,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_WAIT),
                )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401 and self._tokens.static:
                raise FatalConnectionError(
                    "unauthorized",
                    "the server refused the token (HTTP 401); a fixed token cannot be renewed:"
                    " pass a token provider",
                ) from None
            return _LinkEnd(False, None, f"upgrade refused: HTTP {exc.status}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return _LinkEnd(False, None, f"cannot connect: {exc!r}")
        try:
            hello = await self._read_connected(ws)
        except (aiohttp.ClientError, OSError, TimeoutError, msgspec.DecodeError) as exc:
            await _drop(ws)
            return _LinkEnd(False, ws.close_code, f"no `connected` message: {exc!r}")
        if hello is None:
            await _drop(ws)
            return _LinkEnd(False, ws.close_code, "closed before `connected`")
        return await self._serve(ws, hello, token)

    async def _read_connected(self, ws: aiohttp.ClientWebSocketResponse) -> Connected | None:
        while True:
            msg = await ws.receive(timeout=self.connect_timeout)
            if msg.type is not WSMsgType.TEXT:
                return None
            message = decode_server_message(msg.data)
            if isinstance(message, Connected):
                return message

    async def _serve(
        self, ws: aiohttp.ClientWebSocketResponse, hello: Connected, token: str
    ) -> _LinkEnd:
        if self._closing:
            await _drop(ws)
            return _LinkEnd(False, None, "the client is closing")
        self._gen += 1
        link = _Link(
            ws=ws,
            gen=self._gen,
            connection_id=hello.connection_id,
            user_id=hello.user_id,
            token=token,
            opened_at=time.monotonic(),
        )
        self._link = link
        self.connections += 1
        log.info("connected as %s (%s)", hello.user_id, hello.connection_id)
        link.reader = asyncio.ensure_future(self._read_loop(link))
        link.tasks.append(asyncio.ensure_future(self._heartbeat(link)))
        link.tasks.append(asyncio.ensure_future(self._refresher(link)))
        self._set_state(ConnectionState.CONNECTED)
        for sub in list(self._subs.values()):
            self._start_sync(sub)
        try:
            await asyncio.wait({link.reader})
        finally:
            self._link = None
            link.reader.cancel()
            for task in link.tasks:
                task.cancel()
            self._fail_pending(ConnectionLostError("the connection was lost"))
            await _drop(ws, 0.1 if link.dead_reason else CLOSE_WAIT)
        code = link.close_code  # None: the link dropped (or died) without a close frame
        reason = link.dead_reason or (
            f"close code {code} {link.close_reason!r}" if code else "connection dropped"
        )
        return _LinkEnd(True, code, reason, time.monotonic() - link.opened_at)

    async def _read_loop(self, link: _Link) -> None:
        ws = link.ws
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                self._dispatch(link, msg.data)
            elif msg.type is WSMsgType.BINARY:
                log.warning("ignoring a binary frame from the server")
            else:  # CLOSE (the server's close frame), CLOSING, CLOSED, ERROR
                if msg.type is WSMsgType.CLOSE:
                    link.close_code = int(msg.data)
                    link.close_reason = str(msg.extra or "")
                return

    def _kill(self, link: _Link, reason: str) -> None:
        """Treat ``link`` as dead now (no pong): drop it and reconnect."""
        if link.dead_reason is None and link.reader is not None:
            log.warning("connection %s is dead: %s", link.connection_id, reason)
            link.dead_reason = reason
            link.reader.cancel()

    async def _heartbeat(self, link: _Link) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self._ping(link, self.ping_timeout)
            except TimeoutError:
                self._kill(link, f"no pong within {self.ping_timeout}s")
                return
            except ConnectionLostError:
                return

    async def _refresher(self, link: _Link) -> None:
        if self._tokens.static:
            return
        while True:
            expires_at = jwt_expiry(link.token)
            if expires_at is None:
                return
            await asyncio.sleep(refresh_delay(expires_at, time.time(), self.refresh_margin))
            try:
                await self._refresh(link)
            except ConnectionLostError:
                return
            except (LiveboardClientError, TimeoutError, TypeError) as exc:
                log.warning("token refresh failed (%s); retrying", exc)
            except Exception as exc:  # the provider's own failure
                log.warning("token provider failed (%r); retrying", exc)

    async def _refresh(self, link: _Link) -> Refreshed:
        token = await self._tokens.fresh()
        rid = self._new_id()
        reply = await self._request(
            link, Refresh(token=token, id=rid), rid, Refreshed, within=self.connect_timeout
        )
        link.token = token
        self.token_refreshes += 1
        log.debug("token refreshed; expires at %s", reply.expires_at)
        return reply

    # ------------------------------------------------------------------ requests

    def _new_id(self) -> int:
        return next(self._ids)

    async def _send(self, link: _Link, message: ClientMessage) -> None:
        try:
            await link.ws.send_str(encode_client_message(message).decode())
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise ConnectionLostError(f"cannot send: {exc}") from None

    async def _request(
        self,
        link: _Link,
        message: ClientMessage,
        rid: int,
        reply_type: type[R],
        *,
        within: float | None = None,
    ) -> R:
        """Send ``message`` (whose id is ``rid``) and wait for the reply that echoes ``rid``."""
        if self._link is not link:
            raise ConnectionLostError()
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            await self._send(link, message)
            async with asyncio.timeout(within):
                reply = await future
        finally:
            self._pending.pop(rid, None)
        if not isinstance(reply, reply_type):
            raise LiveboardClientError(
                "unexpected_reply", f"expected {reply_type.__name__}, got {type(reply).__name__}"
            )
        return reply

    def _fail_pending(self, error: LiveboardClientError) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
                future.exception()  # mark retrieved

    def _link_or_raise(self) -> _Link:
        self._check_open()
        if self._link is None:
            raise ConnectionLostError()
        return self._link

    async def ping(self) -> float:
        """Send an application-level ``ping``; return the round-trip time in seconds.

        Raises ``ConnectionLostError`` when not connected (or if the link drops meanwhile).
        """
        return await self._ping(self._link_or_raise(), None)

    async def _ping(self, link: _Link, within: float | None) -> float:
        started = time.monotonic()
        rid = self._new_id()
        await self._request(link, Ping(id=rid), rid, Pong, within=within)
        return time.monotonic() - started

    async def refresh_token(self) -> int:
        """Get a new token from the provider and send it now; return its ``expiresAt``."""
        return (await self._refresh(self._link_or_raise())).expires_at

    # ------------------------------------------------------------------ dispatch

    def _dispatch(self, link: _Link, data: str) -> None:
        """Handle one server message, synchronously (ordering relies on it)."""
        try:
            message = decode_server_message(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("ignoring a malformed server message: %s", exc)
            return
        if message is None:
            return
        if isinstance(message, Event):
            sub = self._subs.get(message.room)
            if sub is not None:
                sub._on_event(message)
            return
        if isinstance(message, PresenceUpdate):
            sub = self._subs.get(message.room)
            if sub is not None:
                sub._on_presence(message)
            return
        if isinstance(message, ResyncNotice):
            sub = self._subs.get(message.room)
            if sub is not None:
                sub._on_resync_notice(message.reason)
            return
        if isinstance(message, Connected):
            return
        if isinstance(message, Subscribed):
            sub = self._subs.get(message.room)
            if (
                sub is not None
                and sub._synced_gen == link.gen
                and sub._request_id == message.id
                and message.id is not None
            ):
                sub._on_subscribed(message)
        elif isinstance(message, Unsubscribed) and message.id is None:
            self._server_unsubscribed(message)
            return
        elif isinstance(message, ErrorReply) and message.id is None:
            log.warning("server error: %s: %s", message.code, message.message)
            return
        self._resolve(message)

    def _resolve(self, reply: Reply) -> None:
        rid = reply.id
        future = self._pending.get(rid) if isinstance(rid, int) else None
        if future is None or future.done():
            if isinstance(reply, ErrorReply):
                log.warning("server error for request %s: %s: %s", rid, reply.code, reply.message)
            return
        if isinstance(reply, ErrorReply):
            future.set_exception(LiveboardClientError(reply.code, reply.message))
        else:
            future.set_result(reply)

    def _server_unsubscribed(self, message: Unsubscribed) -> None:
        sub = self._subs.pop(message.room, None)
        if sub is not None:
            log.info("%s: ended by the server (%s)", message.room, message.reason)
            sub._revoke(message.reason or "unsubscribed")

    # ------------------------------------------------------------------ rooms

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
        self._check_open()
        try:
            parse_room(room)
        except ProtocolError as exc:
            raise LiveboardClientError(exc.code, exc.message) from None
        if room in self._subs:
            raise LiveboardClientError("already_subscribed", f"already subscribed to {room}")
        sub = Subscription(self, room, since, buffer=buffer)
        self._subs[room] = sub
        self._start()
        self._start_sync(sub)
        try:
            await asyncio.shield(sub._ready)
        except BaseException:
            if self._subs.get(room) is sub:
                await self._unsubscribe(sub)
            raise
        return sub

    async def unsubscribe(self, room: str) -> None:
        """End the subscription to ``room`` (no-op if there is none)."""
        sub = self._subs.get(room)
        if sub is not None:
            await self._unsubscribe(sub)

    def _start_sync(self, sub: Subscription, *, force: bool = False) -> None:
        """(Re)subscribe ``sub`` on the current link unless already done (or ``force``)."""
        link = self._link
        if link is None or sub.closed or self._subs.get(sub.room) is not sub:
            return
        if sub._synced_gen == link.gen and not force:
            return
        rid = self._new_id()
        since = None if sub._needs_fresh else sub.position
        sub._begin(rid, since, link.gen)
        self._spawn(self._sync(sub, link, rid, since))

    def _request_resubscribe(self, sub: Subscription) -> None:
        self._start_sync(sub, force=True)

    async def _sync(self, sub: Subscription, link: _Link, rid: int, since: Position | None) -> None:
        try:
            await self._request(
                link, Subscribe(room=sub.room, since=since, id=rid), rid, Subscribed
            )
        except ConnectionLostError:
            return  # the next connection subscribes again
        except LiveboardClientError as exc:
            if sub._request_id != rid or sub.closed:
                return
            if not sub._ready.done():
                self._drop_sub(sub)
                sub._finish(exc)
            elif exc.code == "rate_limited":
                await asyncio.sleep(RATE_LIMITED_RETRY)
                self._start_sync(sub, force=True)
            else:
                log.warning("%s: resubscribe refused (%s)", sub.room, exc.code)
                self._drop_sub(sub)
                sub._revoke(exc.code)
            return
        if sub.present and sub._request_id == rid and self._link is link:
            with contextlib.suppress(ConnectionLostError):
                await self._send(link, Presence(action="join", room=sub.room))

    def _drop_sub(self, sub: Subscription) -> None:
        if self._subs.get(sub.room) is sub:
            del self._subs[sub.room]

    async def _unsubscribe(self, sub: Subscription) -> None:
        self._drop_sub(sub)
        sub._finish()
        link = self._link
        if link is None or sub._synced_gen != link.gen:
            return
        rid = self._new_id()
        with contextlib.suppress(LiveboardClientError, TimeoutError):
            await self._request(
                link, Unsubscribe(room=sub.room, id=rid), rid, Unsubscribed, within=CLOSE_WAIT
            )

    async def _join_presence(self, sub: Subscription) -> None:
        link = self._link
        if link is None or sub.closed:
            return  # joined after the next (re)subscribe
        # Resolved by an update that lists us: one already on its way (another user's join)
        # must not pass for the answer to ours.
        waiter = sub._presence_waiter(until_present=link.user_id)
        if sub._awaiting or sub._synced_gen != link.gen:
            # A subscribe is in flight; `_sync` joins once it is answered.
            await waiter
            return
        rid = self._new_id()
        request: asyncio.Future[ErrorReply] = asyncio.ensure_future(
            self._request(link, Presence(action="join", room=sub.room, id=rid), rid, ErrorReply)
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

    async def _leave_presence(self, sub: Subscription) -> None:
        link = self._link
        if link is None or sub.closed or sub._synced_gen != link.gen:
            return
        with contextlib.suppress(ConnectionLostError):
            await self._send(link, Presence(action="leave", room=sub.room))

    # ------------------------------------------------------------------ REST

    async def _api(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        expect: int = 200,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        self._check_open()
        data = None if body is None else msgspec.json.encode(body)
        for attempt in range(2):
            token = (
                await self._tokens.valid(self.refresh_margin)
                if attempt == 0
                else await self._tokens.fresh()
            )
            all_headers = {"Authorization": f"Bearer {token}", **(headers or {})}
            if data is not None:
                all_headers["Content-Type"] = "application/json"
            if self._link is not None:
                all_headers["X-Connection-Id"] = self._link.connection_id
            async with self._http().request(
                method, self.base_url + path, data=data, headers=all_headers
            ) as response:
                raw = await response.read()
                status = response.status
            if status == 401 and attempt == 0 and not self._tokens.static:
                continue
            if status != expect:
                raise _api_error(status, raw)
            return raw
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ housekeeping

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("client task failed", exc_info=task.exception())


class _ErrorBody(msgspec.Struct):
    code: str = "http_error"
    message: str = ""


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody


def _api_error(status: int, raw: bytes) -> ApiError:
    try:
        body = msgspec.json.decode(raw, type=_ErrorEnvelope).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = raw[:200].decode(errors="replace")
        return ApiError(status, "http_error", text or f"HTTP {status}")
    return ApiError(status, body.code, body.message or f"HTTP {status}")


async def _drop(
    ws: aiohttp.ClientWebSocketResponse, wait: float = CLOSE_WAIT, message: bytes = b""
) -> None:
    """Close ``ws``, waiting at most ``wait`` for the handshake (then the socket is cut)."""
    if ws.closed:
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(wait):
            await ws.close(code=CloseCode.NORMAL, message=message)
