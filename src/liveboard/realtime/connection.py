"""A WebSocket connection served by liveboard itself after its own handshake (``router``).

It reads frames with ``rfc6455.FrameReader`` and hands whole messages to one consumer through
``receive()``, with the same message types as aiohttp's ``WebSocketResponse`` so that one message
loop (``endpoint.serve``) serves both. What it guarantees:

* Messages reach ``receive()`` in arrival order; reading from the socket pauses while
  ``INBOX_HIGH`` of them wait, so a flooding peer is held back by TCP, not by memory.
* A frame that breaks the protocol gets a close frame with the violation's code (1002, 1007,
  1009), the write side is shut and the rest of the peer's input is discarded; ``receive()``
  returns ``ERROR``.
* A close frame from the peer is answered with 1000 (or completes the close this side began),
  then the socket closes; ``receive()`` returns ``CLOSE``, then ``CLOSED`` for good.
* ``close(code, message)`` sends one close frame and returns when the peer's answer arrives or
  the socket is gone; the caller bounds the wait.

An idle connection holds this object, a frame reader and an empty list: no task, no buffers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NamedTuple

from aiohttp import WSMsgType

from liveboard.realtime.frames import close_frame, pong_frame
from liveboard.realtime.rfc6455 import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    FrameError,
    FrameReader,
)

#: Messages waiting for the consumer before reading from the socket pauses, and resumes.
INBOX_HIGH = 64
INBOX_LOW = 16


class Message(NamedTuple):
    """One received message: the fields of aiohttp's ``WSMessage`` that the loop reads."""

    type: WSMsgType
    data: Any
    extra: Any = None


CLOSED_MESSAGE = Message(WSMsgType.CLOSED, None)
_TYPES = {OP_TEXT: WSMsgType.TEXT, OP_BINARY: WSMsgType.BINARY, OP_PING: WSMsgType.PING}


def _nothing() -> None:
    return None


class WebSocketConnection(asyncio.Protocol):
    """The protocol of an upgraded socket; ``receive``/``pong``/``close`` for its one consumer."""

    __slots__ = (
        "_close_done",
        "_close_sent",
        "_done",
        "_inbox",
        "_loop",
        "_paused",
        "_reader",
        "_transport",
        "_waiter",
        "on_activity",
        "on_closing",
    )

    def __init__(self, transport: asyncio.Transport, max_message_bytes: int) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._reader = FrameReader(max_message_bytes)
        self._inbox: list[Message] = []
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._close_sent = False
        self._close_done: asyncio.Future[None] | None = None
        self._done = False  # no more input is read: closing, failed or gone
        #: Called for every chunk received, so that a peer busy sending is never taken for dead.
        self.on_activity: Callable[[], None] = _nothing
        #: Called when this side closes on its own (a violation, or the answer to the peer's
        #: close frame), before the close frame is written: nothing may be sent after it.
        self.on_closing: Callable[[], None] = _nothing

    @property
    def transport(self) -> asyncio.Transport:
        return self._transport

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        if self._done:
            return  # after a close or a violation: discarded (see ``_fail``)
        self.on_activity()
        try:
            frames = self._reader.feed(data)
        except FrameError as exc:
            self._fail(exc.code, exc.reason)
            return
        for frame in frames:
            if frame.opcode == OP_CLOSE:
                self._peer_closed(frame.code)
                return
            if frame.opcode == OP_PING or frame.opcode <= OP_BINARY:
                self._deliver(Message(_TYPES[frame.opcode], frame.data))
            else:
                self._deliver(Message(WSMsgType.PONG, frame.data))

    def eof_received(self) -> bool:
        return False  # the peer will send nothing more: let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self._done = True
        self._settle_close()
        self._deliver(CLOSED_MESSAGE)

    def pause_writing(self) -> None:
        pass  # the hub watches each socket's write buffer itself (slow consumers)

    def resume_writing(self) -> None:
        pass

    # For the message loop

    async def receive(self) -> Message:
        """The next message; ``CLOSED`` once the socket is gone and everything was read."""
        if not self._inbox:
            if self._transport.is_closing() and self._done:
                return CLOSED_MESSAGE
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._inbox.pop(0)
        if self._paused and len(self._inbox) <= INBOX_LOW:
            self._paused = False
            self._transport.resume_reading()
        return message

    async def pong(self, data: bytes) -> None:
        if not self._close_sent and not self._transport.is_closing():
            self._transport.write(pong_frame(data))

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        """Send a close frame and wait for the peer's (bounded by the caller), then close."""
        if self._close_sent or self._transport.is_closing():
            return False
        self._close_sent = True
        self._transport.write(close_frame(code, message.decode("utf-8", "replace")))
        if not self._done:
            self._close_done = self._loop.create_future()
            await self._close_done
        self._transport.close()
        return True

    # Internals

    def _deliver(self, message: Message) -> None:
        inbox = self._inbox
        if inbox and inbox[-1] is CLOSED_MESSAGE:
            return
        inbox.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(inbox) >= INBOX_HIGH and not self._paused and not self._transport.is_closing():
            self._paused = True
            self._transport.pause_reading()

    def _peer_closed(self, code: int) -> None:
        self._done = True
        if not self._close_sent:  # the peer began: answer (RFC 6455 §5.5.1), then close first
            self.on_closing()
            self._close_sent = True
            self._transport.write(close_frame(1000))
        self._settle_close()
        self._transport.close()
        self._deliver(Message(WSMsgType.CLOSE, code))

    def _fail(self, code: int, reason: str) -> None:
        """Close with ``code``; the peer's remaining input is read and dropped until it leaves.

        Closing at once with unread input would make the kernel send a reset, and a reset makes
        the peer drop the close frame and its code. The message loop bounds the wait.
        """
        self._done = True
        if not self._close_sent:
            self.on_closing()
            self._close_sent = True
            self._transport.write(close_frame(code, reason))
        if self._transport.can_write_eof():
            self._transport.write_eof()
        self._deliver(Message(WSMsgType.ERROR, FrameError(code, reason)))

    def _settle_close(self) -> None:
        done = self._close_done
        if done is not None and not done.done():
            done.set_result(None)
