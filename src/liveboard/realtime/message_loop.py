"""The message loop of one admitted, upgraded connection, the same on both paths.

It sends ``connected``, then handles the peer's messages one at a time in arrival order
(``subscribe``, ``unsubscribe``, ``presence``, ``ping``, ``refresh``; CONTRACT §4) until the
connection closes; then the node forgets the session (its subscriptions and presence end) and
the socket is gone at most ``CLOSE_DRAIN_SECONDS`` later, whether or not the peer reads. It
reads the connection through the transport seam (``transport.Connection``) only.

Two drivers share one ``MessageLoop.step``:

* ``serve`` pulls messages with ``Connection.receive`` in a task (aiohttp's path: aiohttp's
  request task is there anyway).
* ``PushedMessageLoop`` is pushed each message by the connection's own callbacks
  (``WebSocketConnection.listen``, the router's path): no task exists while the socket is idle.
  A message that must await (a subscribe's database read, a presence change, a refresh's token
  check) runs in a task of its own, and the next messages wait, unparsed, until it is done, so
  that replies keep arrival order. The end of the connection runs in a task too.

The guarantees are the same on both: one message at a time, in order; a slow handler (a stalled
database) marks the session busy, so it is not taken for a dead peer; the session's rate limits
apply before parsing; ``CLOSE_DRAIN_SECONDS`` bounds the end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Final, cast

from liveboard import log_context, protocol
from liveboard.auth import TokenVerifier
from liveboard.background import TaskSet
from liveboard.errors import AuthError
from liveboard.protocol import CloseCode, ProtocolError
from liveboard.realtime.metrics import NO_CLOSE_FRAME, PEER_CLOSED
from liveboard.realtime.node import Node
from liveboard.realtime.session import Session
from liveboard.realtime.transport import Message, MessageKind
from liveboard.realtime.transport.connection import WebSocketConnection
from liveboard.realtime.transport.sockets import linger

log = logging.getLogger("liveboard.ws")

#: Once a session has ended, how long its socket may take to send what is still queued before
#: it is cut: a graceful close waits for the peer to read, and a peer that never does would hold
#: the socket and up to ``slow_consumer_bytes`` of memory for good.
CLOSE_DRAIN_SECONDS = 5.0

Work = Coroutine[Any, Any, None]


class _End:
    """What ``step`` returns when the connection is over (``linger``: after a violation)."""

    __slots__ = ("linger",)

    def __init__(self, linger: bool) -> None:
        self.linger = linger


END: Final = _End(linger=False)
END_LINGER: Final = _End(linger=True)


class MessageLoop:
    """Handles one session's messages: ``begin``, then ``step`` per message, then ``finish``.
    ``serve`` drives it by pulling messages; ``PushedMessageLoop`` from the connection's
    callbacks (see the module docstring)."""

    # Slots: one of these lives per idle connection.
    __slots__ = ("node", "session", "verifier")

    def __init__(self, node: Node, verifier: TokenVerifier, session: Session) -> None:
        self.node = node
        self.verifier = verifier
        self.session = session

    def begin(self) -> None:
        """Send ``connected`` and start the heartbeat and expiry timers."""
        session = self.session
        session.send(protocol.encode_connected(session.connection_id, session.user_id))
        session.start_timers()
        if not self.node.accepting:  # registered after the shutdown took its list of sessions
            session.close(CloseCode.RESTARTING, "server restarting")

    def step(self, message: Message) -> Work | _End | None:
        """Handle ``message``: None when done, a coroutine to finish before the next message,
        or ``END``/``END_LINGER`` when the connection is over."""
        session = self.session
        kind = message.kind
        if kind is MessageKind.TEXT:
            return self._text(message.data)
        if kind is MessageKind.PING:
            if session.pong(message.data) > self.node.settings.slow_consumer_bytes:
                self.node.close_slow_consumer(session.outlet)
            return None
        if kind is MessageKind.PONG:
            return None
        if kind is MessageKind.BINARY:
            session.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported")
            return None
        if kind is MessageKind.ERROR:  # the close frame (1009 / 1002 / 1007) is sent
            code = getattr(message.data, "code", None)  # a FrameError, or aiohttp's
            if session.ended_with == NO_CLOSE_FRAME and isinstance(code, int):
                session.ended_with = str(code)
            session.abort_timers()  # nothing may be written after it
            return END_LINGER
        if kind is MessageKind.CLOSE and session.ended_with == NO_CLOSE_FRAME:
            session.ended_with = PEER_CLOSED  # (this side sent no close frame first)
        return END  # CLOSE, CLOSED

    def _text(self, data: str) -> Work | None:
        session = self.session
        if not session.allow_message():
            session.send(protocol.encode_error("rate_limited", "too many messages; slow down"))
            if not session.strike():
                session.close(CloseCode.POLICY_VIOLATION, "too many messages")
            return None
        try:
            message = protocol.parse_client_message(data)
        except ProtocolError as exc:
            self._refuse(exc)
            return None
        if isinstance(message, protocol.Ping):  # answered at once: no task
            session.send(protocol.encode_pong(message.id))
            return None
        return self._await(message)

    async def _await(self, message: protocol.ClientMessage) -> None:
        node, session = self.node, self.session
        try:
            if isinstance(message, protocol.Subscribe):
                await node.subscribe(session, message)
            elif isinstance(message, protocol.Unsubscribe):
                await node.unsubscribe(session, message)
            elif isinstance(message, protocol.Presence):
                await node.presence_action(session, message)
            elif isinstance(message, protocol.Refresh):
                await self._refresh(message)
        except ProtocolError as exc:
            self._refuse(exc)

    def _refuse(self, exc: ProtocolError) -> None:
        session = self.session
        session.send(protocol.encode_error(exc.code, exc.message, exc.id))
        if exc.abusive and not session.strike():
            session.close(CloseCode.POLICY_VIOLATION, "too many invalid messages")

    async def _refresh(self, message: protocol.Refresh) -> None:
        session = self.session
        try:
            principal = await self.verifier.verify(message.token)
        except AuthError as exc:
            raise ProtocolError("unauthorized", exc.message, message.id) from None
        if principal.user_id != session.user_id:
            raise ProtocolError("unauthorized", "the token is for another user", message.id)
        session.principal = principal
        session.set_expiry(principal.expires_at)
        session.send(protocol.encode_refreshed(int(principal.expires_at), message.id))

    async def finish(self) -> None:
        """The connection is over: the node forgets the session, its close handshake ends
        (bounded), and a socket with bytes still queued is cut ``CLOSE_DRAIN_SECONDS`` later."""
        session = self.session
        transport = session.connection.transport
        try:
            await self.node.disconnect(session)
            await session.wait_closed()
        finally:
            session.abort_timers()
            if transport.get_write_buffer_size():
                # Whoever closes the socket now (this side after a handshake, the peer's close
                # frame, aiohttp) waits for these bytes to drain; then they have had long
                # enough. A no-op on a socket that has closed by then. (The timer keeps the
                # connection's objects 5 s longer, only for sockets that had bytes queued.)
                asyncio.get_running_loop().call_later(CLOSE_DRAIN_SECONDS, transport.abort)


class PushedMessageLoop(MessageLoop):
    """A ``MessageLoop`` driven by its connection's callbacks (a ``transport.Consumer``).

    A message that must await, and the connection's end, run as tasks of ``tasks``: the set
    its owner (the upgrade acceptor) waits for at shutdown, so no work of a connection escapes
    the drain's accounting. ``ended`` runs once, after the end is done; subclasses add what
    their path needs there (the access log line) and call it.
    """

    __slots__ = ("_ended", "_tasks")

    def __init__(
        self, node: Node, verifier: TokenVerifier, session: Session, tasks: TaskSet
    ) -> None:
        super().__init__(node, verifier, session)
        self._tasks = tasks
        self._ended = False

    def listen(self, connection: WebSocketConnection) -> None:
        """Be ``connection``'s consumer (``WebSocketConnection.listen``). Call before the
        connection starts reading; ``begin`` after this."""
        connection.listen(self)

    def ended(self) -> None:
        """The end (``finish``) is done: close the socket (after what is still queued)."""
        cast(WebSocketConnection, self.session.connection).finish()

    def stop(self) -> None:
        """End the connection's service now (its session is closing and no message will say
        so: it was closed before the connection started reading)."""
        self._end(linger=False)

    def on_activity(self) -> None:
        self.session.touch()

    def on_closing(self) -> None:
        self.session.abort_timers()

    def on_message(self, message: Message) -> bool:
        if self._ended:
            return True
        session = self.session
        try:
            result = self.step(message)
        except Exception:
            log.exception(
                "connection %s failed",
                session.connection_id,
                extra={"connection_id": session.connection_id, "user_id": session.user_id},
            )
            session.close(CloseCode.INTERNAL_ERROR, "internal error")
            result = None
        if isinstance(result, _End):
            self._end(result.linger)
            return True
        if result is None:
            if session.closing:
                self._end(linger=False)
            return True
        session.busy = True  # a slow handler (a stalled database) is not a dead peer
        self._tasks.spawn(self._run(result))
        return False

    async def _run(self, work: Work) -> None:
        session = self.session
        log_context.bind_connection(session.connection_id, session.user_id)
        try:
            await work
        except Exception:
            log.exception("connection %s failed", session.connection_id)
            session.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            session.busy = False
        if session.closing:
            self._end(linger=False)
        else:
            cast(WebSocketConnection, session.connection).resume()

    def _end(self, linger: bool) -> None:
        if self._ended:
            return
        self._ended = True
        self._tasks.spawn(self._finish(linger))

    async def _finish(self, linger_first: bool) -> None:
        session = self.session
        log_context.bind_connection(session.connection_id, session.user_id)
        try:
            if linger_first:
                await linger(session.connection.transport)
            await self.finish()
        except Exception:
            log.exception("connection %s failed", session.connection_id)
        finally:
            self.ended()


async def serve(node: Node, verifier: TokenVerifier, session: Session) -> None:
    """Serve ``session`` until its connection closes, pulling its messages (aiohttp's path).

    The caller has registered the session with the node (as soon as it was admitted, so that
    the per-user limit counts it).
    """
    # This task serves the connection alone: its lines, and its timers', are the connection's.
    log_context.bind_connection(session.connection_id, session.user_id)
    loop = MessageLoop(node, verifier, session)
    loop.begin()
    try:
        receive = session.connection.receive
        while not session.closing:
            message = await receive()
            session.touch()
            result = loop.step(message)
            if result is None:
                continue
            if isinstance(result, _End):
                if result.linger:
                    await linger(session.connection.transport)
                break
            session.busy = True  # a slow handler (a stalled database) is not a dead peer
            try:
                await result
            finally:
                session.busy = False
    except Exception:
        log.exception("connection %s failed", session.connection_id)
        session.close(CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        await loop.finish()
