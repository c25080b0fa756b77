"""The message loop of one admitted, upgraded connection, the same on both paths.

It sends ``connected``, then handles the peer's messages one at a time in arrival order
(``subscribe``, ``unsubscribe``, ``presence``, ``ping``, ``refresh``; CONTRACT §4) until the
connection closes; then the node forgets the session (its subscriptions and presence end) and
the socket is gone at most ``CLOSE_DRAIN_SECONDS`` later, whether or not the peer reads. It
reads the connection through the transport seam (``transport.Connection``) only.
"""

from __future__ import annotations

import asyncio
import logging

from liveboard import log_context, protocol
from liveboard.auth import TokenVerifier
from liveboard.errors import AuthError
from liveboard.protocol import CloseCode, ProtocolError
from liveboard.realtime.metrics import NO_CLOSE_FRAME, PEER_CLOSED
from liveboard.realtime.node import Node
from liveboard.realtime.session import Session
from liveboard.realtime.transport import MessageKind
from liveboard.realtime.transport.sockets import linger

log = logging.getLogger("liveboard.ws")

#: Once a session has ended, how long its socket may take to send what is still queued before
#: it is cut: a graceful close waits for the peer to read, and a peer that never does would hold
#: the socket and up to ``slow_consumer_bytes`` of memory for good.
CLOSE_DRAIN_SECONDS = 5.0


async def serve(node: Node, verifier: TokenVerifier, session: Session) -> None:
    """Serve ``session`` until its connection closes.

    The caller has registered the session with the node (as soon as it was admitted, so that
    the per-user limit counts it).
    """
    transport = session.connection.transport
    # This task serves the connection alone: its lines, and its timers', are the connection's.
    log_context.bind_connection(session.connection_id, session.user_id)
    session.send(protocol.encode_connected(session.connection_id, session.user_id))
    session.start_timers()
    if not node.accepting:  # registered after the shutdown took its list of sessions
        session.close(CloseCode.RESTARTING, "server restarting")
    try:
        receive = session.connection.receive
        while not session.closing:
            message = await receive()
            session.touch()
            kind = message.kind
            if kind is MessageKind.TEXT:
                session.busy = True  # a slow handler (a stalled database) is not a dead peer
                try:
                    await _handle_text(verifier, node, session, message.data)
                finally:
                    session.busy = False
            elif kind is MessageKind.PING:
                if session.pong(message.data) > node.settings.slow_consumer_bytes:
                    node.close_slow_consumer(session.outlet)
            elif kind is MessageKind.BINARY:
                session.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported")
            elif kind is MessageKind.ERROR:  # the close frame (1009 / 1002 / 1007) is sent
                code = getattr(message.data, "code", None)  # a FrameError, or aiohttp's
                if session.ended_with == NO_CLOSE_FRAME and isinstance(code, int):
                    session.ended_with = str(code)
                session.abort_timers()  # nothing may be written after it
                await linger(transport)
                break
            elif kind is not MessageKind.PONG:
                if kind is MessageKind.CLOSE and session.ended_with == NO_CLOSE_FRAME:
                    session.ended_with = PEER_CLOSED  # (this side sent no close frame first)
                break  # CLOSE, CLOSED
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
