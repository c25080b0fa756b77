"""``GET /ws/connect`` (alias ``/ws``): the two entries of a WebSocket, one per upgrade path.

``UpgradeAcceptor`` serves the upgrades the router took from a connection's first request (the
usual path, without aiohttp's per-request state); ``websocket_handler`` is aiohttp's route, for
an upgrade after other requests on a keep-alive connection. Both run the same admission
(``admission.admit``: a bad token is HTTP 401, a forbidden ``Origin`` 403, too many connections
of one user 429, a server shutting down 503 — each with the REST error body), register the
session with the node in the step that ends the per-user check, and serve it with the same
message loop (``message_loop.MessageLoop``) through the transport seam (``transport.Connection``):
pulled by a task on aiohttp's path, pushed by the connection's callbacks on the router's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import Final

from aiohttp import web

from liveboard import log_context, logs, rest
from liveboard.auth import TokenVerifier
from liveboard.background import TaskSet
from liveboard.config import Settings
from liveboard.connection_ids import new_connection_id
from liveboard.forwarded import client_address
from liveboard.protocol import CloseCode
from liveboard.protocol.subprotocols import SUBPROTOCOL, selected_subprotocol
from liveboard.realtime.admission import RESTARTING_MESSAGE, Refusal, admit
from liveboard.realtime.message_loop import PushedMessageLoop, serve
from liveboard.realtime.node import Node
from liveboard.realtime.session import Session
from liveboard.realtime.transport import aiohttp_ws, handshake
from liveboard.realtime.transport.connection import WebSocketConnection
from liveboard.realtime.transport.guard import GUARD_KEY
from liveboard.realtime.transport.sockets import peer_host, tune_transport

log = logging.getLogger("liveboard.ws")

NODE_KEY: Final = web.AppKey("node", Node)
WS_SETTINGS_KEY: Final = web.AppKey("ws_settings", Settings)
WS_VERIFIER_KEY: Final = web.AppKey("ws_verifier", TokenVerifier)


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
    client = _client(upgrade, request.remote, settings)
    if client is not None:  # for the access line aiohttp writes
        request[log_context.CLIENT_KEY] = client
    principal = await admit(
        node,
        settings,
        verifier,
        origin=upgrade.origin,
        host=upgrade.host,
        authorization=upgrade.authorization,
        raw_query=upgrade.raw_query,
        subprotocols=upgrade.subprotocols,
    )
    if isinstance(principal, Refusal):
        return rest.error_response(*principal)
    request.app[GUARD_KEY].release(request.transport)  # authenticated
    # Counted for the per-user limit from admission on, while aiohttp's handshake is awaited:
    # upgrades of one user arriving together cannot all pass it.
    with node.reservation(principal.user_id):
        try:
            response, connection = await aiohttp_ws.upgrade(
                request, settings.max_message_bytes, (SUBPROTOCOL,)
            )
        except ConnectionError:  # the peer left during the handshake: nothing to answer
            return web.Response(status=499)
        except web.HTTPException as exc:  # not a valid WebSocket upgrade (aiohttp's checks)
            return rest.error_response(exc.status, "bad_request", exc.reason)
        if connection is None:
            return response
        tune_transport(connection.transport)
        connection_id = new_connection_id(principal.user_id)
        session = Session(connection, connection_id, principal, settings)
        aiohttp_ws.check_frames(
            request,
            on_activity=session.touch,
            on_violation=lambda: session.close(
                CloseCode.PROTOCOL_ERROR, "client frames must be masked"
            ),
        )
    node.register(session)  # in the step that ends the reservation: no await between
    await serve(node, verifier, session)
    return response


class UpgradeAcceptor:
    """Serves the upgrades that ``router`` took before aiohttp saw them (the usual path).

    Called with the transport (reading paused), the parsed request and any bytes that followed
    its head. Admission runs in a short task that holds the request; a refusal is answered with
    the contract's error body and the connection closed. An admitted connection gets the 101,
    becomes a ``WebSocketConnection`` and is served by a ``PushedMessageLoop`` driven by the
    connection's own callbacks: no task while it is idle, none of the request's or aiohttp's
    per-request state. A message that must await, and each connection's end, run in tasks of
    this acceptor's.
    """

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._tasks = TaskSet(log)
        self._live = 0  # connections served and not yet ended
        self._all_ended: asyncio.Event | None = None  # set up by ``wait_closed``

    def __call__(
        self, transport: asyncio.Transport, upgrade: handshake.Upgrade, tail: bytes
    ) -> None:
        self._tasks.spawn(self._admit(transport, upgrade, tail))

    async def wait_closed(self, grace: float) -> None:
        """Wait for every connection it serves to end (the node closes them at shutdown);
        after ``grace`` seconds, cut what is left and cancel the work still running."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._live:
            self._all_ended = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_ended.wait(), grace)
        if self._live:  # cut: each connection's end then runs (a task each)
            for session in list(self._app[NODE_KEY].sessions.values()):
                session.abort()
            await asyncio.sleep(0.01)  # the transports report the loss: the ends are spawned
        await self._tasks.wait(max(1.0, deadline - loop.time()))

    def _ended(self) -> None:
        self._live -= 1
        if not self._live and self._all_ended is not None:
            self._all_ended.set()

    async def _admit(
        self, transport: asyncio.Transport, upgrade: handshake.Upgrade, tail: bytes
    ) -> None:
        app = self._app
        node, settings, verifier = app[NODE_KEY], app[WS_SETTINGS_KEY], app[WS_VERIFIER_KEY]
        started = asyncio.get_running_loop().time()
        remote = _client(upgrade, peer_host(transport), settings)
        principal = await admit(
            node,
            settings,
            verifier,
            origin=upgrade.origin,
            host=upgrade.host,
            authorization=upgrade.authorization,
            raw_query=upgrade.raw_query,
            subprotocols=upgrade.subprotocols,
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
        selected = selected_subprotocol(upgrade.subprotocols)
        transport.write(handshake.switching_protocols(upgrade.key, selected))
        connection_id = new_connection_id(principal.user_id)
        session = Session(connection, connection_id, principal, settings)
        served = _Served(node, verifier, session, self, sys.intern(upgrade.path), remote, started)
        served.listen(connection)
        # In the same step as admission's last check, so that upgrades of one user arriving
        # together cannot all pass the per-user limit.
        node.register(session)
        self._live += 1
        served.begin()  # ``connected`` before any reply to what ``tail`` holds
        if session.closing:  # shutdown began (begin closed it): no message will end it
            served.stop()
        connection.start(tail)


class _Served(PushedMessageLoop):
    """A ``PushedMessageLoop`` of the router's path, with what its end needs: the acceptor's
    count of live connections and the access log line."""

    __slots__ = ("_acceptor", "_path", "_remote", "_started")

    def __init__(
        self,
        node: Node,
        verifier: TokenVerifier,
        session: Session,
        acceptor: UpgradeAcceptor,
        path: str,
        remote: str | None,
        started: float,
    ) -> None:
        super().__init__(node, verifier, session, acceptor._tasks)
        self._acceptor = acceptor
        self._path = path
        self._remote = remote
        self._started = started

    def ended(self) -> None:
        """The connection's end is done: close the socket, write the access line."""
        self._acceptor._ended()
        super().ended()
        _access(self._path, self._remote, 101, self._started, self.session)


def _client(upgrade: handshake.Upgrade, peer: str | None, settings: Settings) -> str | None:
    """The client's address: the peer's, or behind a trusted proxy the one it forwards."""
    return client_address(
        peer,
        settings.trusted_proxies,
        forwarded=upgrade.forwarded,
        x_forwarded=upgrade.x_forwarded_for,
    )


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


def _access(
    path: str, remote: str | None, status: int, started: float, session: Session | None = None
) -> None:
    """The access log line aiohttp writes for the requests it serves (``logs.log_access``),
    with the connection's ids when it was admitted."""
    if logs.access_log.isEnabledFor(logging.INFO):
        seconds = asyncio.get_running_loop().time() - started
        ids = {}
        if session is not None:
            ids = {"connection_id": session.connection_id, "user_id": session.user_id}
        logs.log_access(logs.access_log, "GET", path, status, seconds, remote, **ids)
