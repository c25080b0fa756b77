"""``WebSocketConnection`` and ``ConnectionRouter`` on real loopback sockets, in this process.

The connection's promises that a whole server makes hard to observe: how many messages wait,
when reading pauses, what is written on close. The peer is a plain asyncio stream writing raw
frames (``tests.support.frames``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast

from liveboard.realtime.metrics import Metrics
from liveboard.realtime.transport import Consumer, Message, MessageKind
from liveboard.realtime.transport.connection import INBOX_HIGH, WebSocketConnection
from liveboard.realtime.transport.frames import pong_frame
from liveboard.realtime.transport.guard import ConnectionGuard
from liveboard.realtime.transport.router import ConnectionRouter
from liveboard.realtime.transport.sockets import KERNEL_SEND_BUFFER, tune_socket
from tests.support.frames import OP_CLOSE, OP_PING, OP_TEXT, close_payload, encode_frame
from tests.support.timing import timeout

LIMIT = 65536


class _Accepted(asyncio.Protocol):
    """Holds an accepted socket with reading paused, as the router hands it over."""

    def __init__(self, accepted: asyncio.Queue[asyncio.Transport]) -> None:
        self._accepted = accepted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # uvloop's does not inherit from it
        stream.pause_reading()
        self._accepted.put_nowait(stream)


@dataclass
class Pair:
    connection: WebSocketConnection
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@contextlib.asynccontextmanager
async def _pair(
    tail: bytes = b"", write_limit: int = 1 << 20, consumer: Consumer | None = None
) -> AsyncIterator[Pair]:
    accepted: asyncio.Queue[asyncio.Transport] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Accepted(accepted), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    transport = await asyncio.wait_for(accepted.get(), timeout(5))
    connection = WebSocketConnection(transport, LIMIT, write_limit)
    if consumer is not None:
        connection.listen(consumer)
    connection.start(tail)
    try:
        yield Pair(connection, reader, writer)
    finally:
        writer.close()
        transport.abort()
        server.close()


async def _server_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await asyncio.wait_for(reader.readexactly(2), timeout(5))
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout(seconds)
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def _texts(count: int, start: int = 0) -> bytes:
    return b"".join(encode_frame(OP_TEXT, str(i).encode()) for i in range(start, start + count))


async def test_a_flood_waits_unparsed_and_arrives_whole_in_order() -> None:
    async with _pair() as pair:
        pair.writer.write(_texts(3000))
        await pair.writer.drain()
        await _until(lambda: pair.connection.queued == INBOX_HIGH)
        await asyncio.sleep(0.1)
        assert pair.connection.queued == INBOX_HIGH  # no more are parsed while nobody reads
        got = [(await pair.connection.receive()).data for _ in range(3000)]
        assert got == [str(i) for i in range(3000)]


async def test_a_tail_that_fills_the_inbox_keeps_reading_paused() -> None:
    async with _pair(tail=_texts(INBOX_HIGH + 10)) as pair:
        pair.writer.write(_texts(500, start=INBOX_HIGH + 10))
        await pair.writer.drain()
        await asyncio.sleep(0.1)
        assert pair.connection.queued == INBOX_HIGH
        got = [(await pair.connection.receive()).data for _ in range(INBOX_HIGH + 510)]
        assert got == [str(i) for i in range(INBOX_HIGH + 510)]


async def test_buffered_frames_are_parsed_when_writes_drain() -> None:
    async with _pair() as pair:
        connection = pair.connection
        pair.writer.write(_texts(300))
        await pair.writer.drain()
        await _until(lambda: connection.queued == INBOX_HIGH)
        connection.pause_writing()  # as the transport does when the peer stops reading
        assert (await connection.receive()).data == "0"
        connection.resume_writing()
        got = [(await asyncio.wait_for(connection.receive(), timeout(2))).data for _ in range(299)]
        assert got == [str(i) for i in range(1, 300)]


async def test_a_peer_that_pings_and_never_reads_is_held_back() -> None:
    write_limit = 64 * 1024
    async with _pair(write_limit=write_limit) as pair:
        connection = pair.connection

        async def answer_pings() -> None:
            while True:
                message = await connection.receive()
                if message.kind is not MessageKind.PING:
                    return
                connection.transport.write(pong_frame(message.data))  # as Session.pong

        answering = asyncio.ensure_future(answer_pings())
        ping = encode_frame(OP_PING, b"p" * 125)
        sent = 0
        with contextlib.suppress(TimeoutError):
            while sent < 64 << 20:  # the peer reads nothing; its writes stall once we stop
                pair.writer.write(ping * 100)
                await asyncio.wait_for(pair.writer.drain(), 2.0)
                sent += len(ping) * 100
        assert sent < 64 << 20, "the server kept reading pings it could not answer"
        # What waits to be sent stays near the limit, not near what the peer sent.
        assert connection.transport.get_write_buffer_size() < 2 * write_limit
        answering.cancel()


async def test_a_close_from_this_side_reads_past_queued_messages_to_the_answer() -> None:
    async with _pair() as pair:
        pair.writer.write(_texts(500))
        await pair.writer.drain()
        await _until(lambda: pair.connection.queued == INBOX_HIGH)
        closing = asyncio.ensure_future(pair.connection.close(1008, "bye"))
        assert await _server_frame(pair.reader) == (OP_CLOSE, close_payload(1008, b"bye"))
        pair.writer.write(encode_frame(OP_CLOSE, close_payload(1008)))
        assert await asyncio.wait_for(closing, timeout(1)) is True
        assert pair.connection.transport.is_closing()


async def test_close_now_then_the_peers_answer_writes_one_close_frame() -> None:
    async with _pair() as pair:
        assert pair.connection.close_now(4008, "too slow")
        assert not pair.connection.close_now(4008, "too slow")
        pair.writer.write(encode_frame(OP_CLOSE, close_payload(4008)))
        assert await _server_frame(pair.reader) == (OP_CLOSE, close_payload(4008, b"too slow"))
        assert await asyncio.wait_for(pair.reader.read(), timeout(5)) == b""  # nothing else


async def test_a_close_that_empties_the_inbox_while_receive_is_woken_keeps_it_waiting() -> None:
    async with _pair() as pair:
        connection = pair.connection
        receiving = asyncio.ensure_future(connection.receive())
        await asyncio.sleep(0)  # it waits for a message
        # In one step of the loop, as the transport and the hub would: a message arrives (its
        # receiver is woken, but runs only later), then this side closes, which drops it.
        connection.data_received(encode_frame(OP_TEXT, b"dropped"))
        assert connection.close_now(1001, "going away")
        await asyncio.sleep(0.05)
        assert not receiving.done()  # it waits for the peer's close frame, no error
        connection.data_received(encode_frame(OP_CLOSE, close_payload(1001)))
        message = await asyncio.wait_for(receiving, timeout(1))
        assert (message.kind, message.data) == (MessageKind.CLOSE, 1001)


async def test_messages_before_a_violation_arrive_then_the_close_code() -> None:
    async with _pair() as pair:
        pair.writer.write(_texts(3) + encode_frame(OP_TEXT, b"\xff") + _texts(3))
        got = [await pair.connection.receive() for _ in range(4)]
        assert [m.data for m in got[:3]] == ["0", "1", "2"]
        assert got[3].kind is MessageKind.ERROR
        assert await _server_frame(pair.reader) == (
            OP_CLOSE,
            close_payload(1007, b"text message is not valid UTF-8"),
        )
        # The write side is shut; the socket stays open to drain the peer's input a moment.
        assert await asyncio.wait_for(pair.reader.read(), timeout(5)) == b""
        pair.connection.finish()
        assert not pair.connection.transport.is_closing()


def test_accepted_sockets_inherit_the_listening_sockets_tuning() -> None:
    # app.listen tunes its listening socket once instead of every connection: this kernel must
    # pass the send buffer and keepalive on to accepted sockets.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        tune_socket(listener)
        with socket.create_connection(listener.getsockname()) as _client:
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                # Linux doubles the value it is given (socket(7)).
                assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == (
                    2 * KERNEL_SEND_BUFFER
                )


class _Recorder(asyncio.Protocol):
    """What the HTTP server would get from the router."""

    def __init__(self) -> None:
        self.data = b""
        self.connected = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connected.set()

    def data_received(self, data: bytes) -> None:
        self.data += data


async def _routed(
    guard: ConnectionGuard,
) -> tuple[asyncio.Server, int, list[_Recorder], set[ConnectionRouter]]:
    """A listener whose connections start with a ``ConnectionRouter`` behind ``guard``;
    what it hands to the HTTP server is recorded."""
    recorders: list[_Recorder] = []
    pending: set[ConnectionRouter] = set()

    def http() -> asyncio.BaseProtocol:
        recorders.append(_Recorder())
        return guard.wrap(recorders[-1])  # as app.listen does

    def upgrade(*_args: object) -> None:
        raise AssertionError("not an upgrade")

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: ConnectionRouter(http, upgrade, pending, guard), "127.0.0.1", 0
    )
    return server, server.sockets[0].getsockname()[1], recorders, pending


async def test_the_router_closes_a_connection_whose_first_head_is_late() -> None:
    # It used to hand it to the HTTP server, which held it for its keep-alive timeout (3,630 s).
    metrics = Metrics()
    guard = ConnectionGuard(metrics, head_timeout=0.2)
    server, port, recorders, pending = await _routed(guard)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ws/connect HTTP/1.1\r\nHo")
        await _until(lambda: len(pending) == 1)
        assert await asyncio.wait_for(reader.read(), timeout(5)) == b""
        assert recorders == []
        assert pending == set()
        assert metrics.sample("liveboard_head_timeouts_total") == 1
        assert guard.unauthenticated == 0
        # A router still waiting is dropped at shutdown.
        _, idle = await asyncio.open_connection("127.0.0.1", port)
        await _until(lambda: len(pending) == 1)
        for router in list(pending):
            router.abort()
        assert pending == set()
        await _until(lambda: guard.unauthenticated == 0)
        writer.close()
        idle.close()
    finally:
        server.close()


async def test_the_guard_refuses_an_address_past_its_cap_until_one_of_its_connections_ends() -> (
    None
):
    metrics = Metrics()
    guard = ConnectionGuard(metrics, head_timeout=30.0, max_per_address=2)
    server, port, recorders, _ = await _routed(guard)
    try:
        first = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await _until(lambda: guard.unauthenticated == 2)
        reader, _writer = await asyncio.open_connection("127.0.0.1", port)
        answer = await asyncio.wait_for(reader.read(), timeout(5))
        assert answer.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
        assert answer.endswith(
            b'"code":"rate_limited","message":"too many unauthenticated'
            b' connections from this address"}}'
        )
        assert metrics.sample("liveboard_connections_refused_total") == 1
        assert guard.unauthenticated == 2
        # Another address is not affected.
        _, other = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        await _until(lambda: guard.unauthenticated == 3)
        # One of the first two ends (here, it went to the HTTP server and closed there):
        # its place is free again.
        first[0][1].write(b"GET /healthz HTTP/1.1\r\n\r\n")
        await _until(lambda: len(recorders) == 1)
        first[0][1].close()
        await _until(lambda: guard.unauthenticated == 2)
        first[1][1].close()
        await _until(lambda: guard.unauthenticated == 1)
        again = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await _until(lambda: guard.unauthenticated == 3)
        assert metrics.sample("liveboard_connections_refused_total") == 1
        for _, w in again:
            w.close()
        other.close()
    finally:
        server.close()


# Push mode (``listen``): the message loop of the router's path, with no task per connection


class Recorder:
    """A consumer that records what it is handed and holds back after the texts in ``hold``."""

    def __init__(self, hold: frozenset[str] = frozenset()) -> None:
        self.hold = hold
        self.got: list[Message] = []
        self.activity = 0
        self.closing = 0

    def on_message(self, message: Message) -> bool:
        self.got.append(message)
        return message.data not in self.hold

    def on_activity(self) -> None:
        self.activity += 1

    def on_closing(self) -> None:
        self.closing += 1

    def texts(self) -> list[str]:
        return [m.data for m in self.got if m.kind is MessageKind.TEXT]


async def test_pushed_messages_arrive_in_order_and_a_held_one_stops_the_rest() -> None:
    consumer = Recorder(hold=frozenset({"5"}))
    async with _pair(tail=_texts(3), consumer=consumer) as pair:
        connection = pair.connection
        assert consumer.texts() == ["0", "1", "2"]  # handed over inside ``start``: no task
        pair.writer.write(_texts(2000, start=3))
        await pair.writer.drain()
        # "5" is being handled (a database read, say): what follows waits, then stays unread.
        await _until(lambda: connection.queued == INBOX_HIGH)
        await asyncio.sleep(0.1)
        assert consumer.texts() == [str(i) for i in range(6)]
        assert connection.queued == INBOX_HIGH
        assert consumer.activity >= 1
        connection.resume()
        await _until(lambda: len(consumer.texts()) == 2003)
        assert consumer.texts() == [str(i) for i in range(2003)]
        assert connection.queued == 0


async def test_the_peers_close_is_pushed_once_then_nothing_more() -> None:
    consumer = Recorder()
    async with _pair(consumer=consumer) as pair:
        pair.writer.write(_texts(2) + encode_frame(OP_CLOSE, close_payload(1000)) + _texts(2))
        assert await _server_frame(pair.reader) == (OP_CLOSE, close_payload(1000))
        await _until(lambda: consumer.got[-1].kind is MessageKind.CLOSED)
        await asyncio.sleep(0.05)
        kinds = [m.kind for m in consumer.got]
        assert kinds == [MessageKind.TEXT] * 2 + [MessageKind.CLOSE, MessageKind.CLOSED]
        assert consumer.closing == 1  # told before the answer was written


async def test_a_close_while_held_drops_the_waiting_messages_and_pushes_the_answer() -> None:
    consumer = Recorder(hold=frozenset({"0"}))
    async with _pair(consumer=consumer) as pair:
        connection = pair.connection
        pair.writer.write(_texts(10))
        await _until(lambda: connection.queued == 9)
        assert connection.close_now(4001, "token expired")
        assert await _server_frame(pair.reader) == (
            OP_CLOSE,
            close_payload(4001, b"token expired"),
        )
        pair.writer.write(encode_frame(OP_CLOSE, close_payload(4001)))
        # The answer (and the end), behind the held message; the texts were dropped.
        await _until(lambda: connection.transport.is_closing())
        connection.resume()
        await _until(lambda: consumer.got[-1].kind is MessageKind.CLOSED)
        kinds = [m.kind for m in consumer.got]
        assert kinds == [MessageKind.TEXT, MessageKind.CLOSE, MessageKind.CLOSED]
        assert consumer.closing == 0  # this side began the close
