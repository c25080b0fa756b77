"""Connection management: one WebSocket at a time, kept up with backoff, tokens kept fresh.

Guarantees of ``ConnectionManager``:

* **Reconnects after any disconnect** — a dropped link, 1011, 4008, 4001 (the next attempt
  asks the token provider for a new token) — with exponential backoff and full jitter: the
  n-th consecutive attempt waits ``uniform(0, min(backoff_cap, backoff_base * 2**n))``. The
  count starts again once a connection has stayed up ``stable_after`` seconds.
* **Comes back soon after a server restart**: after 1012 (or 1013) every attempt for
  ``restart_window`` seconds waits ``uniform(0, restart_delay)``, not doubled by the connects
  refused while the server is down; then the backoff above resumes.
* **Honours ``Retry-After``**: an upgrade refused with 503 (or 429) and ``Retry-After: n`` is
  tried again after ``n`` seconds (at most 60) plus ``uniform(0, restart_delay)``, instead of
  the backoff, and not counted as a failed attempt (a server busy with a reconnect storm).
* **Stops for good** (state ``closed``, ``error`` set, ``on_stop(error)`` called) on close
  codes that mean a client bug (1002, 1003, 1007, 1008, 1009), on 4001 with a *static* token
  (it has expired and cannot be renewed) and on HTTP 401 at upgrade with a static token. With
  a token provider a 401 asks the provider again and retries.
* **Notices dead links fast**: an application-level ``ping`` every ``heartbeat`` seconds; no
  ``pong`` within ``ping_timeout`` and the link is dropped and replaced.
* **Keeps the token fresh**: ``refresh_margin`` seconds before the token's ``exp`` (read from
  the JWT, unverified) the provider is asked for a new one and the server gets ``refresh``, so
  the socket is never closed with 4001 while the provider works.
* Every text frame of the current link goes to ``on_message(link, data)`` in arrival order,
  synchronously; ``on_link_up(link)`` runs once per link, after the state is ``connected``.
  When a link ends, requests still waiting on it fail with ``ConnectionLostError``.

Everything runs on the event loop that created the client; nothing here is thread-safe.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import msgspec
from aiohttp import WSMsgType

from liveboard.client.backoff import Backoff, parse_retry_after
from liveboard.client.errors import (
    ClientClosedError,
    ConnectionLostError,
    FatalConnectionError,
    LiveboardClientError,
)
from liveboard.client.link import CLOSE_WAIT, HttpSession, Link, drop, websocket_url
from liveboard.client.requests import Requests
from liveboard.client.tokens import TokenSource, jwt_expiry, refresh_delay
from liveboard.protocol import (
    CloseAction,
    Connected,
    Ping,
    Pong,
    Refresh,
    Refreshed,
    close_action,
    decode_server_message,
)

__all__ = [
    "ConnectionManager",
    "ConnectionSettings",
    "ConnectionState",
    "websocket_url",
]

log = logging.getLogger("liveboard.client")


class ConnectionState(enum.StrEnum):
    """``connecting`` (first attempt(s)), ``connected``, ``reconnecting``, ``closed``.

    A client starts ``closed`` (not started) and ends ``closed`` (``aclose`` or a fatal error,
    then ``error`` is set).
    """

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True)
class ConnectionSettings:
    """The timing options of one client (see ``LiveboardClient`` for their meaning)."""

    ws_url: str
    heartbeat: float = 15.0
    ping_timeout: float = 5.0
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    refresh_margin: float = 30.0
    restart_delay: float = 1.5
    restart_window: float = 30.0
    stable_after: float = 5.0
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class _LinkEnd:
    connected: bool
    close_code: int | None
    reason: str
    duration: float = 0.0
    retry_after: float | None = None  # seconds, from a refused upgrade's ``Retry-After``


class ConnectionManager:
    """Keeps one WebSocket up (see the module's guarantees); knows nothing of rooms or REST.

    ``on_message``, ``on_link_up`` and ``on_stop`` are how the layer above hears of frames, new
    links and the end of the client.
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        tokens: TokenSource,
        http: HttpSession,
        requests: Requests,
        *,
        on_message: Callable[[Link, str], None],
        on_link_up: Callable[[Link], None],
        on_stop: Callable[[LiveboardClientError | None], None],
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        #: The fatal error that stopped the client, if any.
        self.error: LiveboardClientError | None = None
        #: Successful connections so far (1 after the first, 2 after the first reconnect...).
        self.connections = 0
        #: Close code of the last connection (None: dropped without one, or none yet).
        self.last_close_code: int | None = None
        #: Tokens sent with ``refresh`` and accepted.
        self.token_refreshes = 0
        #: The current link (None while disconnected).
        self.link: Link | None = None
        #: True once the client is closing or has stopped.
        self.closing = False
        self._tokens = tokens
        self._http = http
        self._requests = requests
        self._on_message = on_message
        self._on_link_up = on_link_up
        self._on_stop = on_stop
        self._rng = rng or random.Random()
        self._state = ConnectionState.CLOSED
        self._state_callbacks: list[Callable[[ConnectionState], object]] = []
        self._state_changed = asyncio.Event()
        self._gen = 0
        self._runner: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> ConnectionState:
        return self._state

    def on_state_change(self, callback: Callable[[ConnectionState], object]) -> None:
        """Call ``callback(state)`` on every change of ``state``."""
        self._state_callbacks.append(callback)

    async def wait_for_state(self, state: ConnectionState) -> None:
        """Wait until ``state`` is reached; raise the client's error if it closes instead."""
        while self._state is not state:
            if self._state is ConnectionState.CLOSED and (self.closing or self.error):
                raise self.error or ClientClosedError()
            self._state_changed.clear()
            await self._state_changed.wait()

    def check_open(self) -> None:
        """Raise the fatal error, or ``ClientClosedError``, once the client is done."""
        if self.error is not None:
            raise self.error
        if self.closing:
            raise ClientClosedError()

    def current_link(self) -> Link:
        """The current link; ``ConnectionLostError`` while disconnected."""
        self.check_open()
        if self.link is None:
            raise ConnectionLostError()
        return self.link

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

    # ------------------------------------------------------------------ start and stop

    def start(self) -> None:
        """Start the connection loop unless it runs already."""
        if self._runner is None:
            self._set_state(ConnectionState.CONNECTING)
            self._runner = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        """Close the link (code 1000), stop the loop and end the client; idempotent."""
        self.closing = True
        link = self.link
        if link is not None:
            await drop(link.ws, CLOSE_WAIT, b"client closing")
        runner = self._runner
        while runner is not None and not runner.done():
            # Repeat the cancel: one that races with a finishing await can be lost.
            runner.cancel()
            await asyncio.wait({runner}, timeout=0.5)
        self._shutdown(None)

    def _shutdown(self, error: LiveboardClientError | None) -> None:
        """The client is done: fail what waits, tell the layer above, then state ``closed``."""
        self.closing = True
        if error is not None and self.error is None:
            self.error = error
        self._requests.fail_pending(ClientClosedError() if error is None else error)
        self._on_stop(error)
        self._set_state(ConnectionState.CLOSED)

    # ------------------------------------------------------------------ the connection loop

    async def _run(self) -> None:
        settings = self.settings
        backoff = Backoff(
            settings.backoff_base,
            settings.backoff_cap,
            self._rng,
            restart_delay=settings.restart_delay,
            restart_window=settings.restart_window,
        )
        clock = asyncio.get_running_loop().time
        try:
            while not self.closing:
                try:
                    end = await self._connect_once()
                except FatalConnectionError:
                    raise
                except Exception as exc:  # a bug here must not end the reconnect loop
                    log.exception("unexpected failure of the connection")
                    end = _LinkEnd(False, None, f"unexpected failure: {exc!r}")
                if self.closing:
                    break
                if end.connected:
                    backoff.connected()
                    self.last_close_code = end.close_code
                    if end.duration >= settings.stable_after:
                        backoff.reset()
                action = close_action(end.close_code) if end.connected else CloseAction.RECONNECT
                if action is CloseAction.FATAL:
                    raise FatalConnectionError(
                        f"closed_{end.close_code}",
                        f"the server closed the connection with {end.close_code} ({end.reason});"
                        " reconnecting would not help",
                        end.close_code,
                    )
                if action is CloseAction.NEW_TOKEN and self._tokens.static:
                    # The server closes with 4001 at the token's `exp`: a fixed string is now
                    # expired for good, and the upgrade would only be refused with 401.
                    raise FatalConnectionError(
                        "unauthorized",
                        f"the token expired (close code {end.close_code}); a fixed token cannot"
                        " be renewed: pass a token provider",
                        end.close_code,
                    )
                # NEW_TOKEN with a provider: the next attempt asks it for a token, as each does.
                if action is CloseAction.RECONNECT_LATER:
                    backoff.server_restarting(clock())
                if end.retry_after is not None:
                    delay = backoff.retry_after(end.retry_after)
                else:
                    delay = backoff.next_delay(clock())
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
            await self._http.close()
            return
        self._shutdown(None)

    async def _connect_once(self) -> _LinkEnd:
        """One connection attempt and, if it succeeds, its whole life."""
        try:
            token = await self._tokens.fresh()
        except Exception as exc:
            return _LinkEnd(False, None, f"token provider failed: {exc!r}")
        settings = self.settings
        try:
            async with asyncio.timeout(settings.connect_timeout):
                ws = await self._http.get().ws_connect(
                    settings.ws_url,
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
            retry_after = None
            if exc.status in (429, 503) and exc.headers is not None:
                retry_after = parse_retry_after(exc.headers.get("Retry-After"))
            return _LinkEnd(False, None, f"upgrade refused: HTTP {exc.status}", 0.0, retry_after)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return _LinkEnd(False, None, f"cannot connect: {exc!r}")
        try:
            hello = await self._read_connected(ws)
        except (aiohttp.ClientError, OSError, TimeoutError, msgspec.DecodeError) as exc:
            await drop(ws)
            return _LinkEnd(False, ws.close_code, f"no `connected` message: {exc!r}")
        if hello is None:
            await drop(ws)
            return _LinkEnd(False, ws.close_code, "closed before `connected`")
        return await self._serve(ws, hello, token)

    async def _read_connected(self, ws: aiohttp.ClientWebSocketResponse) -> Connected | None:
        while True:
            msg = await ws.receive(timeout=self.settings.connect_timeout)
            if msg.type is not WSMsgType.TEXT:
                return None
            message = decode_server_message(msg.data)
            if isinstance(message, Connected):
                return message

    async def _serve(
        self, ws: aiohttp.ClientWebSocketResponse, hello: Connected, token: str
    ) -> _LinkEnd:
        if self.closing:
            await drop(ws)
            return _LinkEnd(False, None, "the client is closing")
        self._gen += 1
        link = Link(
            ws=ws,
            gen=self._gen,
            connection_id=hello.connection_id,
            user_id=hello.user_id,
            token=token,
            opened_at=time.monotonic(),
        )
        self.link = link
        self.connections += 1
        log.info("connected as %s (%s)", hello.user_id, hello.connection_id)
        link.reader = asyncio.ensure_future(self._read_loop(link))
        link.tasks.append(asyncio.ensure_future(self._heartbeat(link)))
        link.tasks.append(asyncio.ensure_future(self._refresher(link)))
        self._set_state(ConnectionState.CONNECTED)
        self._on_link_up(link)
        try:
            await asyncio.wait({link.reader})
        finally:
            self.link = None
            link.retired = True
            link.reader.cancel()
            for task in link.tasks:
                task.cancel()
            self._requests.fail_pending(ConnectionLostError("the connection was lost"))
            await drop(ws, 0.1 if link.dead_reason else CLOSE_WAIT)
        code = link.close_code  # None: the link dropped (or died) without a close frame
        reason = link.dead_reason or (
            f"close code {code} {link.close_reason!r}" if code else "connection dropped"
        )
        return _LinkEnd(True, code, reason, time.monotonic() - link.opened_at)

    async def _read_loop(self, link: Link) -> None:
        ws = link.ws
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                self._on_message(link, msg.data)
            elif msg.type is WSMsgType.BINARY:
                log.warning("ignoring a binary frame from the server")
            else:  # CLOSE (the server's close frame), CLOSING, CLOSED, ERROR
                if msg.type is WSMsgType.CLOSE:
                    link.close_code = int(msg.data)
                    link.close_reason = str(msg.extra or "")
                return

    def _kill(self, link: Link, reason: str) -> None:
        """Treat ``link`` as dead now (no pong): drop it and reconnect."""
        if link.dead_reason is None and link.reader is not None:
            log.warning("connection %s is dead: %s", link.connection_id, reason)
            link.dead_reason = reason
            link.reader.cancel()

    # ------------------------------------------------------------------ ping and refresh

    async def _heartbeat(self, link: Link) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            try:
                await self.ping(link, self.settings.ping_timeout)
            except TimeoutError:
                self._kill(link, f"no pong within {self.settings.ping_timeout}s")
                return
            except ConnectionLostError:
                return

    async def ping(self, link: Link, within: float | None) -> float:
        """Send an application-level ``ping`` on ``link``; return the round-trip in seconds."""
        started = time.monotonic()
        rid = self._requests.new_id()
        await self._requests.request(link, Ping(id=rid), rid, Pong, within=within)
        return time.monotonic() - started

    async def _refresher(self, link: Link) -> None:
        if self._tokens.static:
            return
        while True:
            expires_at = jwt_expiry(link.token)
            if expires_at is None:
                return
            margin = self.settings.refresh_margin
            await asyncio.sleep(refresh_delay(expires_at, time.time(), margin))
            try:
                await self.refresh(link)
            except ConnectionLostError:
                return
            except (LiveboardClientError, TimeoutError, TypeError) as exc:
                log.warning("token refresh failed (%s); retrying", exc)
            except Exception as exc:  # the provider's own failure
                log.warning("token provider failed (%r); retrying", exc)

    async def refresh(self, link: Link) -> Refreshed:
        """Get a new token from the provider and send it with ``refresh`` on ``link``."""
        token = await self._tokens.fresh()
        rid = self._requests.new_id()
        reply = await self._requests.request(
            link, Refresh(token=token, id=rid), rid, Refreshed, within=self.settings.connect_timeout
        )
        link.token = token
        self.token_refreshes += 1
        log.debug("token refreshed; expires at %s", reply.expires_at)
        return reply
