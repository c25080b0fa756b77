"""A WebSocket connection served by liveboard itself after its own handshake (``router``).

It reads frames with ``rfc6455.FrameReader`` and hands whole messages to one consumer through
``receive()``: a ``Connection`` (``base``), as the aiohttp adapter is, so that one message loop
serves both. What it guarantees beyond the seam's:

* Messages reach ``receive()`` in arrival order. At most ``INBOX_HIGH`` of them wait: past that,
  what is buffered stays unparsed and reading from the socket pauses, so a flooding peer is
  held back by TCP. Reading also pauses while more than ``write_limit`` bytes wait to be sent
  to the peer (a client that sends pings and reads nothing), until they drain.
* A frame that breaks the protocol gets a close frame with the violation's code (1002, 1007,
  1009); messages parsed before it are still queued, then ``receive()`` returns ``ERROR``. The
  write side is shut and the peer's remaining input read and dropped until it leaves or
  ``LINGER_SECONDS`` pass (then the socket closes, or is cut if the peer reads nothing), so
  that the close frame is not lost to a reset.
* A close frame from the peer is answered with 1000 (or completes the close this side began),
  then the socket closes; ``receive()`` returns ``CLOSE``, then ``CLOSED`` for good.
* ``close(code, reason)`` sends one close frame, stops delivering messages and reads on until
  the peer's close frame arrives or the socket is gone (the caller bounds the wait); then the
  socket closes. No frame is written after a close frame.

Read either way: one consumer calls ``receive()`` in a task, or a ``Consumer`` is handed each
message by this protocol's callbacks (``listen``), so that an idle connection holds this object,
a frame reader and an empty list: no task, no future, no buffers.
"""

from __future__ import annotations

import asyncio
import contextlib

from liveboard.realtime.transport.base import CLOSED_MESSAGE, Consumer, Message, MessageKind
from liveboard.realtime.transport.frames import close_frame
from liveboard.realtime.transport.rfc6455 import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Frame,
    FrameError,
    FrameReader,
)
from liveboard.realtime.transport.sockets import LINGER_SECONDS

#: Messages waiting for the consumer before parsing and reading stop, and resume.
INBOX_HIGH = 64
INBOX_LOW = 16
_KINDS = {
    OP_TEXT: MessageKind.TEXT,
    OP_BINARY: MessageKind.BINARY,
    OP_PING: MessageKind.PING,
    OP_PONG: MessageKind.PONG,
}


class _Pull:
    """The consumer of a connection read with ``receive``: it hears of nothing."""

    __slots__ = ()

    def on_message(self, message: Message) -> bool:
        raise AssertionError("a connection read with receive() pushes no message")

    def on_activity(self) -> None:
        return None

    def on_closing(self) -> None:
        return None


class _Ended(_Pull):
    """The consumer after ``CLOSED``: it takes nothing more."""

    __slots__ = ()

    def on_message(self, message: Message) -> bool:
        return True


_PULL = _Pull()
_EMPTY: tuple[()] = ()
_ENDED = _Ended()


class WebSocketConnection(asyncio.Protocol):
    """The protocol of an upgraded socket, and the ``Connection`` its one consumer reads."""

    __slots__ = (
        "_close_done",
        "_close_sent",
        "_consumer",
        "_done",
        "_held",
        "_inbox",
        "_lingering",
        "_loop",
        "_reader",
        "_reading_paused",
        "_transport",
        "_waiter",
        "_writes_blocked",
    )

    def __init__(
        self, transport: asyncio.Transport, max_message_bytes: int, write_limit: int
    ) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._reader = FrameReader(max_message_bytes)
        # Messages parsed and not yet taken: the shared empty tuple while there are none (most
        # of the time: an idle connection holds no list), a list otherwise.
        self._inbox: list[Message] | tuple[()] = _EMPTY
        self._waiter: asyncio.Future[None] | None = None
        # Push mode (``listen``): messages go to the consumer as they are parsed, not to
        # ``receive``; while it holds them back (until ``resume``) they wait in the inbox.
        self._consumer: Consumer = _PULL
        self._held = False
        self._reading_paused = True  # the router paused it until ``start``
        self._writes_blocked = False
        self._close_sent = False
        self._close_done: asyncio.Future[None] | None = None
        self._done = False  # no more messages: closing, failed or gone
        self._lingering = False
        # pause_writing() comes when more than ``write_limit`` bytes wait to be sent.
        transport.set_write_buffer_limits(high=write_limit)

    @property
    def transport(self) -> asyncio.Transport:
        return self._transport

    @property
    def queued(self) -> int:
        """Messages parsed and waiting for ``receive()``."""
        return len(self._inbox)

    def start(self, tail: bytes) -> None:
        """Become the socket's protocol, read ``tail`` (bytes after the handshake), go on."""
        self._transport.set_protocol(self)
        if tail:
            self.data_received(tail)
        else:
            self._update_reading()

    def listen(self, consumer: Consumer) -> None:
        """Hand every message to ``consumer.on_message`` as it is parsed, in arrival order,
        instead of through ``receive`` (which must not be used then): no task waits on an idle
        socket. Also tell it of every chunk received (``on_activity``, so that a peer busy
        sending is never taken for dead) and of a close this side begins on its own
        (``on_closing``, before the close frame is written).

        ``on_message`` returns True when it is done with the message, or False when it must
        finish something first (a database read): then the next messages wait (at most
        ``INBOX_HIGH``, then reading pauses, as for ``receive``) until it calls ``resume``.
        ``CLOSE``, ``ERROR`` and ``CLOSED`` reach it as they reach ``receive``; after ``CLOSED``
        it gets nothing more. Call before ``start``.
        """
        self._consumer = consumer

    def resume(self) -> None:
        """The consumer is ready for more (after it returned False): hand over what waited,
        then read on."""
        self._held = False
        self._pump()
        if not self._held and len(self._inbox) <= INBOX_LOW:
            self._parse()

    def finish(self) -> None:
        """The consumer is done: close the socket, unless its end is already under way (a
        violation's linger, or a close frame sent and its answer awaited: the session bounds
        that wait)."""
        if self._lingering or (self._close_sent and not self._done):
            return
        if not self._transport.is_closing():
            self._transport.close()

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        if self._done:
            return  # after a close or a violation: dropped
        self._consumer.on_activity()
        self._reader.feed(data)
        self._parse()

    def eof_received(self) -> bool:
        return False  # the peer will send nothing more: let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self._done = True
        self._settle_close()
        self._deliver(CLOSED_MESSAGE)

    def pause_writing(self) -> None:
        self._writes_blocked = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writes_blocked = False
        self._parse()

    # For the message loop

    async def receive(self) -> Message:
        """The next message; ``CLOSED`` once the socket is gone and everything was read."""
        # A loop: a close begun while this task was being woken may have emptied the inbox.
        while not self._inbox:
            if self._transport.is_closing() and self._done:
                return CLOSED_MESSAGE
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._take()
        if len(self._inbox) <= INBOX_LOW:
            self._parse()  # what is buffered first (cheap when nothing is), then the socket
        return message

    async def close(self, code: int = 1000, reason: str = "") -> bool:
        """Send a close frame, then wait for the peer's (bounded by the caller) and close."""
        if not self._write_close(code, reason):
            return False
        if not self._done:
            self._close_done = self._loop.create_future()
            await self._close_done
        self._transport.close()
        return True

    def close_now(self, code: int, reason: str) -> bool:
        """Write a close frame after whatever is queued, without waiting; False if one was."""
        return self._write_close(code, reason)

    def abort(self) -> None:
        """Drop the socket without a close frame."""
        if not self._transport.is_closing():
            self._transport.abort()

    # Internals

    def _write_close(self, code: int, reason: str) -> bool:
        if self._close_sent or self._transport.is_closing():
            return False
        self._close_sent = True
        self._transport.write(close_frame(code, reason))
        # From here only the peer's close frame matters: read on until it comes (soon, not
        # here: this may run inside the hub's fan-out).
        self._inbox = _EMPTY
        self._loop.call_soon(self._parse)
        return True

    def _parse(self) -> None:
        if self._transport.is_closing():
            return
        reader = self._reader
        try:
            while len(self._inbox) < INBOX_HIGH and not self._done:
                frame = reader.next_frame()
                if frame is None:
                    break
                self._dispatch(frame)
        except FrameError as exc:
            self._fail(exc.code, exc.reason)
        self._update_reading()

    def _dispatch(self, frame: Frame) -> None:
        if frame.opcode == OP_CLOSE:
            self._peer_closed(frame.code)
        elif not self._close_sent:  # closing: messages are no longer delivered
            self._deliver(Message(_KINDS[frame.opcode], frame.data))

    def _update_reading(self) -> None:
        transport = self._transport
        if transport.is_closing():
            return
        # Once closing (or failed), read on: the peer's close frame, or input to drop.
        pause = not (self._done or self._close_sent) and (
            len(self._inbox) >= INBOX_HIGH or self._writes_blocked
        )
        if pause and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not pause and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _deliver(self, message: Message) -> None:
        inbox = self._inbox
        if inbox and inbox[-1] is CLOSED_MESSAGE:
            return
        consumer = self._consumer
        if consumer is not _PULL:
            if inbox or self._held:
                self._put(message)  # behind what waits for the consumer
            elif message is CLOSED_MESSAGE:
                self._consumer = _ENDED  # nothing comes after it
                consumer.on_message(message)
            elif not consumer.on_message(message):
                self._held = True
            return
        self._put(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _put(self, message: Message) -> None:
        inbox = self._inbox
        if isinstance(inbox, list):
            inbox.append(message)
        else:
            self._inbox = [message]

    def _take(self) -> Message:
        """The first waiting message (there is one)."""
        inbox = self._inbox
        assert isinstance(inbox, list)  # not empty
        message = inbox.pop(0)
        if not inbox:
            self._inbox = _EMPTY
        return message

    def _pump(self) -> None:
        """Push mode: hand waiting messages to the consumer until it holds them back."""
        while self._inbox and not self._held:
            consumer = self._consumer
            message = self._take()
            if message is CLOSED_MESSAGE:
                self._consumer = _ENDED  # nothing comes after it
            if not consumer.on_message(message):
                self._held = True

    def _peer_closed(self, code: int) -> None:
        self._done = True
        if not self._close_sent:  # the peer began: answer (RFC 6455 §5.5.1), then close first
            self._consumer.on_closing()
            self._close_sent = True
            self._transport.write(close_frame(1000))
        self._settle_close()
        self._transport.close()
        self._deliver(Message(MessageKind.CLOSE, code))

    def _settle_close(self) -> None:
        done = self._close_done
        if done is not None and not done.done():
            done.set_result(None)

    def _fail(self, code: int, reason: str) -> None:
        """Close with ``code``; the peer's remaining input is read and dropped until it leaves.

        Closing at once with unread input would make the kernel send a reset, and a reset makes
        the peer drop the close frame and its code.
        """
        self._done = True
        if not self._close_sent:
            self._consumer.on_closing()
            self._close_sent = True
            self._transport.write(close_frame(code, reason))
        if self._transport.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):  # a reset socket
                self._transport.write_eof()
        self._lingering = True
        self._loop.call_later(LINGER_SECONDS, self._end_linger)
        self._deliver(Message(MessageKind.ERROR, FrameError(code, reason)))

    def _end_linger(self) -> None:
        transport = self._transport
        if transport.is_closing():
            return
        # A peer that reads nothing would hold a graceful close open: cut it instead.
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()
