"""A Redis pub/sub subscriber connection read straight from the socket with hiredis, shared by
``brokers.redis`` (one connection) and ``brokers.redis_cluster`` (one per master).

redis-py opens the connection (every option of the URL: TLS, credentials, ``CLIENT SETNAME``,
RESP2), then ``SubscriberConnection`` takes its transport over. From then on no task reads:
each chunk the socket delivers is fed to a ``hiredis.Reader`` and every complete reply in it is
handed to the owner's ``on_replies`` in one synchronous call, from the event loop's own read
callback. redis-py's asyncio read path (a task woken per reply, and a ``read_response(timeout=0)``
probe after each that arms a timeout, is cancelled and raises when the buffer is empty) cost
114-137 µs per message; this costs a hiredis parse and one call per socket read.

Guarantees:

* ``on_replies`` gets the replies in the order Redis sent them, every complete reply of a read
  in one call (error replies as ``hiredis.ReplyError`` objects, not raised). If it raises, the
  connection is closed and ``wait_closed`` raises that exception (a broker uses this to end a
  session from inside its reply handler).
* An idle connection is PINGed: once nothing was received for ``ping_interval`` seconds, a
  PING is sent; when nothing was received ``ping_timeout`` seconds after it, the connection is
  deemed dead, closed, and ``wait_closed`` raises ``redis.exceptions.ConnectionError``. One
  timer does it, re-armed when it fires, not per read (a read only notes the time).
* ``send`` writes at once (no await); on a closed connection it raises
  ``redis.exceptions.ConnectionError``.
* ``wait_closed`` returns only by raising: the reason the connection ended (a ``ConnectionError``
  for a closed or broken link, a protocol error, a dead PING). ``close`` is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Final, TypeVar, cast

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["SubscriberConnection", "dispatch", "pack"]

T = TypeVar("T")

#: hiredis's own value for "no complete reply in the buffer yet".
_INCOMPLETE: Final = False


def pack(*args: bytes | str) -> bytes:
    """One command in RESP (pure)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def dispatch(
    replies: list[object],
    on_reply: Callable[[object, list[T]], None],
    deliver: Callable[[list[T]], None],
    max_batch: int,
) -> None:
    """Hand each of ``replies`` to ``on_reply``, which appends the events it carries to the
    list it is given; ``deliver`` them in batches of at most ``max_batch``, the last one even
    when ``on_reply`` raises (which then propagates: the session ends)."""
    events: list[T] = []
    try:
        for reply in replies:
            on_reply(reply, events)
            if len(events) >= max_batch:
                deliver(events)
                events = []
    finally:
        if events:
            deliver(events)


class SubscriberConnection(asyncio.Protocol):
    """A subscriber connection read by the event loop's callbacks; see the module docstring."""

    def __init__(
        self,
        on_replies: Callable[[list[object]], None],
        *,
        ping_interval: float,
        ping_timeout: float,
    ) -> None:
        self._on_replies = on_replies
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._parser = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._stream_writer: asyncio.StreamWriter | None = None
        self._loop = asyncio.get_running_loop()
        self._ended: asyncio.Future[None] = self._loop.create_future()
        self._received_at = self._loop.time()
        self._pinged_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    async def open(
        cls,
        conn: AbstractConnection,
        on_replies: Callable[[list[object]], None],
        *,
        ping_interval: float,
        ping_timeout: float,
    ) -> SubscriberConnection:
        """Connect ``conn`` (redis-py does the handshake), then read its socket from here on.
        ``conn`` must not be used afterwards (closing this closes its socket)."""
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)  # not left for the collector to close
            raise
        writer = conn._writer
        reader = conn._reader
        if writer is None or reader is None:
            raise RedisConnectionError("the subscriber connection closed during its handshake")
        # Nothing is left unread after the handshake's answers (nothing is subscribed yet), so
        # no byte is lost by switching protocols here.
        self = cls(on_replies, ping_interval=ping_interval, ping_timeout=ping_timeout)
        # uvloop's transports are not ``asyncio.Transport`` subclasses, but have its methods.
        transport = cast(asyncio.Transport, writer.transport)
        self._transport = transport
        # Kept: a StreamWriter closes its transport when collected (Python 3.11.5+).
        self._stream_writer = writer
        transport.set_protocol(self)
        # Detached: redis-py's connection would otherwise close the socket when collected.
        conn._writer = conn._reader = None
        if transport.is_closing():
            raise RedisConnectionError("the subscriber connection closed during its handshake")
        self._received_at = self._loop.time()
        self._timer = self._loop.call_later(ping_interval, self._tick)
        return self

    @property
    def is_connected(self) -> bool:
        """True until the connection is closed or broken."""
        return not self._ended.done()

    def send(self, *commands: Sequence[bytes | str]) -> None:
        """Write ``commands`` in one write; raises ``ConnectionError`` when closed."""
        transport = self._transport
        if transport is None or transport.is_closing() or self._ended.done():
            raise RedisConnectionError("the subscriber connection is closed")
        transport.write(b"".join(pack(*command) for command in commands))

    async def wait_closed(self) -> None:
        """Wait until the connection ends; raise the reason (see the module docstring)."""
        await asyncio.shield(self._ended)

    def close(self, reason: BaseException | None = None) -> None:
        """Close the connection (idempotent); ``wait_closed`` raises ``reason``."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._ended.done():
            self._ended.set_exception(
                reason or RedisConnectionError("the subscriber connection was closed")
            )
            self._ended.exception()  # retrieved: nobody may be waiting any more
        if self._transport is not None:
            self._transport.abort()

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        self._received_at = self._loop.time()
        parser = self._parser
        try:
            parser.feed(data)
            replies: list[object] = []
            while (reply := parser.gets()) is not _INCOMPLETE:
                replies.append(reply)
        except hiredis.ProtocolError as exc:
            self.close(RedisConnectionError(f"protocol error: {exc}"))
            return
        if not replies:
            return
        try:
            self._on_replies(replies)
        except Exception as exc:  # the owner's way of ending the session
            self.close(exc)

    def eof_received(self) -> bool:
        return False  # close the transport: Redis closed its side

    def connection_lost(self, exc: Exception | None) -> None:
        reason = RedisConnectionError(
            f"subscriber connection lost: {exc}" if exc else "Redis closed the connection"
        )
        self.close(reason)

    def pause_writing(self) -> None:
        pass  # commands are few and small; a link that stops reading fails its PING

    def resume_writing(self) -> None:
        pass

    # Idle check

    def _tick(self) -> None:
        now = self._loop.time()
        if self._pinged_at is not None and self._received_at < self._pinged_at:
            self.close(RedisConnectionError("Redis did not answer PING"))
            return
        idle_until = self._received_at + self._ping_interval
        if now < idle_until:  # something arrived meanwhile: check again once idle long enough
            self._pinged_at = None
            self._timer = self._loop.call_at(idle_until, self._tick)
            return
        self._pinged_at = now
        self._timer = self._loop.call_at(now + self._ping_timeout, self._tick)
        try:
            self.send((b"PING",))
        except RedisConnectionError as exc:
            self.close(exc)
