"""aiohttp's WebSocket behind the ``Connection`` seam: the one module that touches it.

An upgrade sent after other requests on a keep-alive connection (or to a server built with
``build_app`` alone) is parsed and answered by aiohttp (``upgrade``). ``AiohttpConnection`` then
makes its ``WebSocketResponse`` behave as liveboard's own ``WebSocketConnection`` does: the same
messages (``MessageKind``), the same answer to the peer's close frame, the same close calls.

aiohttp's reader does not require client frames to be masked, and only tells a heartbeat it
runs itself that data arrived. ``check_frames`` wraps the reader that aiohttp installs after the
upgrade (``request.protocol._payload_parser``, a private attribute of the pinned aiohttp; if it
is missing the wrapper is not installed and a warning is logged once) to:

* refuse unmasked frames (RFC 6455 §5.1: the server must close with 1002), and
* report every chunk received, so that a peer busy sending is never taken for dead.

``MaskScanner`` is pure: it walks frame headers across chunk boundaries and skips payloads in
bulk, so its cost is per frame, not per byte.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from liveboard.realtime.transport.base import CLOSED_MESSAGE, Message, MessageKind, WriteWatcher
from liveboard.realtime.transport.frames import close_frame
from liveboard.realtime.transport.rfc6455 import valid_close_code

log = logging.getLogger("liveboard.ws")
_warned = False
#: The close code for a close frame whose code a peer may not send (RFC 6455 §7.4).
_PROTOCOL_ERROR = 1002
_KINDS = {
    WSMsgType.TEXT: MessageKind.TEXT,
    WSMsgType.BINARY: MessageKind.BINARY,
    WSMsgType.PING: MessageKind.PING,
    WSMsgType.PONG: MessageKind.PONG,
    WSMsgType.CLOSE: MessageKind.CLOSE,
    WSMsgType.ERROR: MessageKind.ERROR,
}


async def upgrade(
    request: web.Request, max_message_bytes: int, subprotocols: tuple[str, ...] = ()
) -> tuple[web.StreamResponse, AiohttpConnection | None]:
    """Answer ``request`` with aiohttp's handshake: the response for aiohttp to return and
    the connection (None if the socket was gone by then). The first of the client's offered
    subprotocols that is in ``subprotocols`` is selected, as aiohttp does; no other is echoed.

    Raises ``ConnectionError`` if the peer left during the handshake and ``web.HTTPException``
    if aiohttp found the request not a valid upgrade.
    """
    ws = web.WebSocketResponse(
        autoping=False,
        autoclose=False,  # AiohttpConnection answers the peer's close frame, as the router's path
        compress=False,  # frames are pre-encoded once for every socket; see docs/protocol.md
        # aiohttp refuses a message of max_msg_size bytes; the contract accepts that size.
        max_msg_size=max_message_bytes + 1,
        protocols=subprotocols,
    )
    await ws.prepare(request)
    transport = request.transport
    if transport is None:
        return ws, None
    return ws, AiohttpConnection(ws, transport)


class AiohttpConnection:
    """aiohttp's ``WebSocketResponse`` as a ``Connection``, answering the peer's close frame as
    the router's path does (``WebSocketConnection``): 1000 to a valid code or none, 1002 to a
    code RFC 6455 §7.4 does not allow a peer to send (1006, 1015, 5000 and above, ...).

    aiohttp's reader lets through every code from 3000 up and every code of its own enum (1006
    among them), and its ``autoclose`` answers each with 1000. ``close_now`` writes its close
    frame to the socket directly, after what is queued there, without aiohttp's writer.
    """

    __slots__ = ("_transport", "_ws")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport) -> None:
        self._ws = ws
        self._transport = transport

    @property
    def transport(self) -> asyncio.Transport:
        return self._transport

    async def receive(self) -> Message:
        message = await self._ws.receive()
        kind = message.type
        if kind is WSMsgType.CLOSE:
            code = message.data  # 0: a close frame without a body (NO_STATUS)
            if code == 0 or valid_close_code(code):
                await self._ws.close(drain=False)
            else:
                reason = f"invalid close code {code}".encode()
                await self._ws.close(code=_PROTOCOL_ERROR, message=reason, drain=False)
        elif kind is WSMsgType.TEXT:  # the usual one, first
            return Message(MessageKind.TEXT, message.data)
        found = _KINDS.get(kind)
        # CLOSING and CLOSED: the connection is over for the consumer either way.
        return CLOSED_MESSAGE if found is None else Message(found, message.data)

    async def close(self, code: int = 1000, reason: str = "") -> bool:
        return await self._ws.close(code=code, message=reason.encode())

    def close_now(self, code: int, reason: str) -> bool:
        if self._transport.is_closing():
            return False
        self._transport.write(close_frame(code, reason))
        return True

    def abort(self) -> None:
        if not self._transport.is_closing():
            self._transport.abort()

    def watch_writes(self, watcher: WriteWatcher, limit: int) -> bool:
        return False  # the transport's protocol is aiohttp's: it gets pause_writing, not us


class MaskScanner:
    """Follows the frames of a client's byte stream; ``feed`` is False at the first unmasked."""

    __slots__ = ("_header", "_skip")

    def __init__(self) -> None:
        self._header = bytearray()
        self._skip = 0  # payload bytes of the current frame still to pass over

    def feed(self, data: bytes) -> bool:
        i, end = 0, len(data)
        while i < end:
            if self._skip:
                step = min(self._skip, end - i)
                self._skip -= step
                i += step
                continue
            header = self._header
            header.append(data[i])
            i += 1
            if len(header) < 2:
                continue
            if not header[1] & 0x80:
                return False
            length7 = header[1] & 0x7F
            extended = 2 if length7 == 126 else 8 if length7 == 127 else 0
            if len(header) < 2 + extended + 4:
                continue
            self._skip = (
                length7 if extended == 0 else int.from_bytes(header[2 : 2 + extended], "big")
            )
            header.clear()
        return True


class _CheckedParser:
    """Wraps aiohttp's WebSocket reader: scans for unmasked frames, reports activity."""

    __slots__ = ("_inner", "_on_activity", "_on_violation", "_scanner", "_violated")

    def __init__(
        self,
        inner: Any,
        on_activity: Callable[[], None],
        on_violation: Callable[[], None],
    ) -> None:
        self._inner = inner
        self._scanner = MaskScanner()
        self._on_activity = on_activity
        self._on_violation = on_violation
        self._violated = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._violated:
            return False, b""
        self._on_activity()
        if not self._scanner.feed(data):
            self._violated = True
            self._on_violation()
            return False, b""
        result: tuple[bool, bytes] = self._inner.feed_data(data)
        return result

    def feed_eof(self) -> None:
        self._inner.feed_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def check_frames(
    request: web.Request, on_activity: Callable[[], None], on_violation: Callable[[], None]
) -> bool:
    """Wrap the upgraded connection's reader; False (and one warning) if aiohttp changed."""
    global _warned
    protocol: Any = request.protocol
    inner = getattr(protocol, "_payload_parser", None)
    if inner is None or not hasattr(inner, "feed_data"):
        if not _warned:
            _warned = True
            log.warning("cannot check client frames: this aiohttp version has no _payload_parser")
        return False
    protocol._payload_parser = _CheckedParser(inner, on_activity, on_violation)
    return True
