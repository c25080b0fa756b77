"""``GET /ws/connect`` (alias ``/ws``): the upgrade checks and the per-connection message loop.

Before the upgrade: a bad token is HTTP 401, a forbidden ``Origin`` 403, too many connections of
one user 429, a server shutting down 503 — each with the REST error body. After it: the session
sends ``connected``, then handles one message at a time until the socket closes, and the node
forgets it (subscriptions and presence end with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Coroutine
from typing import Any, Final, NamedTuple, Protocol
from urllib.parse import parse_qsl, urlsplit

from aiohttp import WSMsgType, web

from liveboard import dev, protocol, rest
from liveboard.auth import Principal, TokenVerifier, bearer_token
from liveboard.background import TaskSet
from liveboard.config import Settings
from liveboard.errors import AuthError
from liveboard.protocol import CloseCode, ProtocolError
from liveboard.realtime import handshake, wire
from liveboard.realtime.connection import LINGER_SECONDS, WebSocketConnection
from liveboard.realtime.connection_ids import new_connection_id
from liveboard.realtime.guard import GUARD_KEY
from liveboard.realtime.node import Node
from liveboard.realtime.rfc6455 import valid_close_code
from liveboard.realtime.session import Session

log = logging.getLogger("liveboard.ws")
#: The logger aiohttp writes its access log to, so that both paths log alike.
access_log = logging.getLogger("aiohttp.access")

#: Kernel send buffer per WebSocket (Linux doubles it): enough for bursts at full speed.
KERNEL_SEND_BUFFER = 256 * 1024
#: Once a session has ended, how long its socket may take to send what is still queued before
#: it is cut: a graceful close waits for the peer to read, and a peer that never does would hold
#: the socket and up to ``slow_consumer_bytes`` of memory for good.
CLOSE_DRAIN_SECONDS = 5.0
RESTARTING_MESSAGE = "server is restarting; reconnect shortly"

NODE_KEY: Final = web.AppKey("node", Node)
WS_SETTINGS_KEY: Final = web.AppKey("ws_settings", Settings)
WS_VERIFIER_KEY: Final = web.AppKey("ws_verifier", TokenVerifier)


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...] | None) -> bool:
    """CONTRACT §1 ``LIVEBOARD_ALLOWED_ORIGINS``: unset → no Origin or same host; ``*`` → any."""
    if allowed is not None and "*" in allowed:
        return True
    if origin is None:
        return True
    if allowed is None:
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:  # not a URL (``http://[``): not the same host
            return False
        return host is not None and netloc.lower() == host.lower()
    return origin.rstrip("/") in allowed


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """Admit, upgrade and serve one connection that reached aiohttp.

    Most upgrades never get here: ``router`` hands a connection whose first request is a
    well-formed upgrade to ``UpgradeAcceptor`` instead. This path serves the rest (an upgrade
    on a keep-alive connection that carried other requests first, or a server built with
    ``build_app`` alone, as in tests). The REST middlewares pass this route straight through
    (``rest.LONG_LIVED_PATHS``), so it answers its own refusals with the contract's error body.
    """
    node = request.app[NODE_KEY]
    settings = request.app[WS_SETTINGS_KEY]
    verifier = request.app[WS_VERIFIER_KEY]
    # The router's rule, on aiohttp's parse of the head: both paths accept the same requests.
    upgrade = handshake.check_upgrade(
        (request.version.major, request.version.minor),
        request.path,
        request.rel_url.raw_query_string,
        [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.raw_headers],
    )
    if isinstance(upgrade, handshake.BadUpgrade):
        refused = rest.error_response(400, "bad_request", upgrade.message)
        refused.headers.extend(upgrade.headers)
        return refused
    principal = await admit(
        node,
        settings,
        verifier,
        origin=upgrade.origin,
        host=upgrade.host,
        authorization=upgrade.authorization,
        raw_query=upgrade.raw_query,
    )
    if isinstance(principal, Refusal):
        return rest.error_response(*principal)
    request.app[GUARD_KEY].release(request.transport)  # authenticated
    ws = web.WebSocketResponse(
        autoping=False,
        autoclose=False,  # _AiohttpSocket answers the peer's close frame, as the router's path
        compress=False,  # frames are pre-encoded once for every socket; see docs/protocol.md
        # aiohttp refuses a message of max_msg_size bytes; the contract accepts that size.
        max_msg_size=settings.max_message_bytes + 1,
    )
    # Counted for the per-user limit from admission on, while aiohttp's handshake is awaited:
    # upgrades of one user arriving together cannot all pass it.
    with node.reservation(principal.user_id):
        try:
            await ws.prepare(request)
        except ConnectionError:  # the peer left during the handshake: nothing to answer
            return web.Response(status=499)
        except web.HTTPException as exc:  # not a valid WebSocket upgrade (aiohttp's checks)
            return rest.error_response(exc.status, "bad_request", exc.reason)
        transport = request.transport
        if transport is None:
            return ws
        _tune_socket(transport)
        socket_ = _AiohttpSocket(ws)
        connection_id = new_connection_id(principal.user_id)
        session = Session(socket_, transport, connection_id, principal, settings)
        wire.install(
            request.protocol,
            on_activity=session.touch,
            on_violation=lambda: session.close(
                CloseCode.PROTOCOL_ERROR, "client frames must be masked"
            ),
        )
    node.register(session)  # in the step that ends the reservation: no await between
    await serve(node, verifier, session, socket_, transport)
    return ws


class _AiohttpSocket:
    """aiohttp's ``WebSocketResponse`` answering the peer's close frame as the router's path
    does (``WebSocketConnection``): 1000 to a valid code or none, 1002 to a code RFC 6455 §7.4
    does not allow a peer to send (1006, 1015, 5000 and above, ...).

    aiohttp's reader lets through every code from 3000 up and every code of its own enum (1006
    among them), and its ``autoclose`` answers each with 1000.
    """

    __slots__ = ("_ws",)

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws

    async def receive(self) -> Any:
        message = await self._ws.receive()
        if message.type is WSMsgType.CLOSE:
            code = message.data  # 0: a close frame without a body (NO_STATUS)
            if code == 0 or valid_close_code(code):
                await self._ws.close(drain=False)
            else:
                reason = f"invalid close code {code}".encode()
                await self._ws.close(code=CloseCode.PROTOCOL_ERROR, message=reason, drain=False)
        return message

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        return await self._ws.close(code=code, message=message)


class MessageSource(Protocol):
    """The receiving side of a WebSocket: aiohttp's ``WebSocketResponse`` or ours."""

    async def receive(self) -> Any: ...


async def serve(
    node: Node,
    verifier: TokenVerifier,
    session: Session,
    ws: MessageSource,
    transport: asyncio.Transport,
) -> None:
    """The message loop of one admitted, upgraded connection, until it closes.

    The caller has registered the session with the node (as soon as it was admitted, so that
    the per-user limit counts it). Sends ``connected``, then handles one message at a time in
    arrival order; at the end the node forgets the session (its subscriptions and presence end),
    and the socket is gone at most ``CLOSE_DRAIN_SECONDS`` later, whether or not the peer reads.
    """
    session.send(protocol.encode_connected(session.connection_id, session.user_id))
    session.start_timers()
    if not node.accepting:  # registered after the shutdown took its list of sessions
        session.close(CloseCode.RESTARTING, "server restarting")
    try:
        ws_receive = ws.receive
        while not session.closing:
            message = await ws_receive()
            session.touch()
            kind = message.type
            if kind is WSMsgType.TEXT:
                session.busy = True  # a slow handler (a stalled database) is not a dead peer
                try:
                    await _handle_text(verifier, node, session, message.data)
                finally:
                    session.busy = False
            elif kind is WSMsgType.PING:
                if session.pong(message.data) > node.settings.slow_consumer_bytes:
                    node.close_slow_consumer(session.outlet)
            elif kind is WSMsgType.BINARY:
                session.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported")
            elif kind is WSMsgType.ERROR:  # the close frame (1009 / 1002 / 1007) is sent
                session.abort_timers()  # nothing may be written after it
                await _linger(transport)
                break
            elif kind is not WSMsgType.PONG:
                break  # CLOSE, CLOSING, CLOSED
    except Exception:
        log.exception("connection %s failed", session.connection_id)
        session.close(CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        try:
            await node.disconnect(session)
            await session.wait_closed()
        finally:
            session.abort_timers()
            if transport.get_write_buffer_size():
                # Whoever closes the socket now (this side after a handshake, the peer's close
                # frame, aiohttp) waits for these bytes to drain; then they have had long
                # enough. A no-op on a socket that has closed by then. (The timer keeps the
                # connection's objects 5 s longer, only for sockets that had bytes queued.)
                asyncio.get_running_loop().call_later(CLOSE_DRAIN_SECONDS, transport.abort)


class Refusal(NamedTuple):
    """An upgrade turned down before the handshake: HTTP status and the error body's fields."""

    status: int
    code: str
    message: str
    details: dict[str, Any] | None = None


async def admit(
    node: Node,
    settings: Settings,
    verifier: TokenVerifier,
    *,
    origin: str | None,
    host: str | None,
    authorization: str | None,
    raw_query: str,
) -> Principal | Refusal:
    """The checks before the upgrade, the same on both paths: the principal, or a refusal."""
    try:
        if not node.accepting:
            return Refusal(503, "unavailable", RESTARTING_MESSAGE)
        if settings.dev and not dev.is_loopback_host(host):  # DNS rebinding: see ``dev``
            return _rejected(node, Refusal(403, "forbidden", dev.NOT_LOOPBACK_MESSAGE))
        if not origin_allowed(origin, host, settings.allowed_origins):
            return _rejected(node, Refusal(403, "forbidden", "origin not allowed"))
        token = bearer_token(authorization) or query_token(raw_query)
        if not token:
            message = "missing token: send Authorization: Bearer <jwt> or ?token=<jwt>"
            return _rejected(node, Refusal(401, "unauthorized", message))
        try:
            principal = await verifier.verify(token)
        except AuthError as exc:
            return _rejected(node, Refusal(401, "unauthorized", exc.message))
        if node.connections_of(principal.user_id) >= settings.max_connections_per_user:
            message = "too many connections for this user"
            return _rejected(node, Refusal(429, "rate_limited", message))
    except Exception:
        log.exception("unhandled error admitting a WebSocket connection")
        return Refusal(500, "internal_error", "internal server error")
    return principal


def _rejected(node: Node, refusal: Refusal) -> Refusal:
    node.metrics.connections_rejected += 1
    return refusal


class UpgradeAcceptor:
    """Serves the upgrades that ``router`` took before aiohttp saw them (the usual path).

    Called with the transport (reading paused), the parsed request and any bytes that followed
    its head. Admission runs in a short task that holds the request; a refusal is answered with
    the contract's error body and the connection closed. An admitted connection gets the 101,
    becomes a ``WebSocketConnection`` and is served by ``serve`` in a task of its own, which holds
    neither the request nor aiohttp's per-request state: about 10 KB less per connection.
    """

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._tasks = TaskSet(log)

    def __call__(
        self, transport: asyncio.Transport, upgrade: handshake.Upgrade, tail: bytes
    ) -> None:
        self._spawn(self._admit(transport, upgrade, tail))

    async def wait_closed(self, grace: float) -> None:
        """Wait for every connection it serves to end (the node closes them at shutdown);
        after ``grace`` seconds, cancel what is left."""
        await self._tasks.wait(grace)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        self._tasks.spawn(work)

    async def _admit(
        self, transport: asyncio.Transport, upgrade: handshake.Upgrade, tail: bytes
    ) -> None:
        app = self._app
        node, settings, verifier = app[NODE_KEY], app[WS_SETTINGS_KEY], app[WS_VERIFIER_KEY]
        started = asyncio.get_running_loop().time()
        remote = _peer_host(transport)
        principal = await admit(
            node,
            settings,
            verifier,
            origin=upgrade.origin,
            host=upgrade.host,
            authorization=upgrade.authorization,
            raw_query=upgrade.raw_query,
        )
        if not isinstance(principal, Refusal) and not node.accepting:
            # Shutdown began while the token was verified.
            principal = Refusal(503, "unavailable", RESTARTING_MESSAGE)
        if isinstance(principal, Refusal):
            _refuse(transport, principal, upgrade.path, remote, started)
            return
        if transport.is_closing():
            return  # the peer left while it was being admitted
        app[GUARD_KEY].release(transport)  # authenticated
        connection = WebSocketConnection(
            transport, settings.max_message_bytes, settings.slow_consumer_bytes
        )
        transport.write(handshake.switching_protocols(upgrade.key))
        connection_id = new_connection_id(principal.user_id)
        session = Session(connection, transport, connection_id, principal, settings)
        connection.on_activity = session.touch
        connection.on_closing = session.abort_timers
        # In the same step as admission's last check, so that upgrades of one user arriving
        # together cannot all pass the per-user limit.
        node.register(session)
        connection.start(tail)
        self._spawn(
            _serve_upgraded(node, verifier, session, connection, upgrade.path, remote, started)
        )


async def _serve_upgraded(
    node: Node,
    verifier: TokenVerifier,
    session: Session,
    connection: WebSocketConnection,
    path: str,
    remote: str | None,
    started: float,
) -> None:
    try:
        await serve(node, verifier, session, connection, connection.transport)
    except Exception:  # serve handles its own failures; this is for a bug in the cleanup
        log.exception("connection %s failed", session.connection_id)
    finally:
        connection.finish()
        _access(path, remote, 101, started)


def _refuse(
    transport: asyncio.Transport,
    refusal: Refusal,
    path: str,
    remote: str | None,
    started: float,
) -> None:
    if not transport.is_closing():
        transport.write(handshake.error_response(*refusal))
        transport.close()
    _access(path, remote, refusal.status, started)


def _peer_host(transport: asyncio.Transport) -> str | None:
    try:
        peer = transport.get_extra_info("peername")
    except (AttributeError, OSError):  # uvloop raises AttributeError once the socket is gone
        return None
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


def _access(path: str, remote: str | None, status: int, started: float) -> None:
    """The access log line aiohttp writes for the requests it serves (see ``logs``)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    ms = (asyncio.get_running_loop().time() - started) * 1000
    access_log.info(
        "%s %s %d %.1fms",
        "GET",
        path,
        status,
        ms,
        extra={
            "method": "GET",
            "path": path,
            "status": status,
            "ms": round(ms, 2),
            "remote": remote,
        },
    )


def query_token(raw_query: str) -> str | None:
    """The first ``token`` parameter of a raw query string (``token=…&…``), or None.

    Given ``request.rel_url.raw_query_string`` rather than read from ``request.query``, which
    parses the whole query and caches it, token included, on the request's URL: that object
    lives as long as the connection, about 0.6 KB each. Decoded as ``request.query`` would
    (``%XX``, ``+``; ``;`` is not a separator).
    """
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        if name == "token":
            return value
    return None


async def _linger(transport: asyncio.Transport) -> None:
    """Let a close frame reach a peer that is still sending (an oversized message, say).

    Closing a socket with unread input makes the kernel send a reset, and a reset makes the peer
    drop what it had not read yet: the close frame and its code. So the write side is shut
    (FIN after the close frame) and what still arrives is read and discarded until the peer
    closes or ``LINGER_SECONDS`` have passed. aiohttp's failed reader discards that input;
    ``WebSocketConnection`` does all of this itself and this wait only keeps the loop with it.
    """
    if transport.is_closing():
        return
    if transport.can_write_eof():
        with contextlib.suppress(OSError, RuntimeError):
            transport.write_eof()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINGER_SECONDS
    # Polled: past the upgrade, aiohttp offers no event for the peer's end of input.
    while not transport.is_closing() and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def tune_socket(sock: socket.socket) -> None:
    """Cap the kernel's send buffer so that the slow-consumer bound means what it says, and turn
    on TCP keepalives (as aiohttp does for the connections it serves).

    The hub closes a socket whose unsent bytes in user space pass ``slow_consumer_bytes``; Linux
    would otherwise let the kernel's own buffer autotune up to several MiB on top of that. Set on
    a listening socket, both are inherited by every connection it accepts (``app.listen``).
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


def _tune_socket(transport: asyncio.Transport) -> None:
    """``tune_socket`` on one connection's socket: for servers that do not listen through
    ``app.listen`` (``build_app`` alone, as in tests); where the setting was inherited, a no-op."""
    # uvloop raises AttributeError or ValueError for a socket that is already gone.
    with contextlib.suppress(OSError, AttributeError, ValueError):
        sock = transport.get_extra_info("socket")
        if sock is not None:
            tune_socket(sock)


async def _handle_text(verifier: TokenVerifier, node: Node, session: Session, data: str) -> None:
    if not session.allow_message():
        session.send(protocol.encode_error("rate_limited", "too many messages; slow down"))
        if not session.strike():
            session.close(CloseCode.POLICY_VIOLATION, "too many messages")
        return
    try:
        message = protocol.parse_client_message(data)
        if isinstance(message, protocol.Subscribe):
            await node.subscribe(session, message)
        elif isinstance(message, protocol.Unsubscribe):
            await node.unsubscribe(session, message)
        elif isinstance(message, protocol.Presence):
            await node.presence_action(session, message)
        elif isinstance(message, protocol.Ping):
            session.send(protocol.encode_pong(message.id))
        else:
            await _refresh(verifier, session, message)
    except ProtocolError as exc:
        session.send(protocol.encode_error(exc.code, exc.message, exc.id))
        if exc.abusive and not session.strike():
            session.close(CloseCode.POLICY_VIOLATION, "too many invalid messages")


async def _refresh(verifier: TokenVerifier, session: Session, message: protocol.Refresh) -> None:
    try:
        principal = await verifier.verify(message.token)
    except AuthError as exc:
        raise ProtocolError("unauthorized", exc.message, message.id) from None
    if principal.user_id != session.user_id:
        raise ProtocolError("unauthorized", "the token is for another user", message.id)
    session.principal = principal
    session.set_expiry(principal.expires_at)
    session.send(protocol.encode_refreshed(int(principal.expires_at), message.id))
