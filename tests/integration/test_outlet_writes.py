"""The hub's per-socket state from the transport itself, on real loopback sockets, in this
process, on uvloop (as the server runs) and on asyncio's own loop.

``outlet_for`` makes a ``WebSocketConnection`` keep its outlet's ``blocked`` and ``closed``
flags from ``pause_writing`` / ``resume_writing`` and its own closing, so the hub asks no socket
for its buffer or state when it fans out. What must hold: a peer that stops reading is reported
as a slow consumer by the very delivery that takes its unsent bytes past the bound (no later),
once, and gets nothing more while the others get everything; the flag clears once the peer has
read; a socket whose peer left, or that wrote its close frame, is written nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

import pytest
import uvloop

from liveboard.protocol import BrokerEvent
from liveboard.realtime.hub import Hub, Room
from liveboard.realtime.metrics import Metrics
from liveboard.realtime.outlet import Outlet, PolledOutlet, outlet_for
from liveboard.realtime.transport.connection import WebSocketConnection
from tests.support.fakes import FakeConnection
from tests.support.frames import OP_CLOSE, close_payload
from tests.support.timing import timeout, wait_until

LIMIT = 32 * 1024
ROOM = "project:p1"


#: Each test runs on uvloop, as the server does, and on asyncio's own loop.
LOOPS = pytest.mark.parametrize("run", [uvloop.run, asyncio.run], ids=["uvloop", "asyncio"])
Run = Callable[[Coroutine[Any, Any, None]], None]


class _Accepted(asyncio.Protocol):
    def __init__(self, accepted: asyncio.Queue[asyncio.Transport]) -> None:
        self._accepted = accepted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # uvloop's does not inherit from it
        stream.pause_reading()
        self._accepted.put_nowait(stream)


@dataclass
class Peer:
    """One subscriber: the server side's connection and outlet, the client's raw socket
    (non-blocking: ``poll`` reads what has arrived, the loop goes on writing)."""

    name: str
    connection: WebSocketConnection
    outlet: Outlet
    sock: socket.socket
    buffer: bytes = b""

    def poll(self) -> list[tuple[int, bytes]]:
        """The whole frames that arrived since the last call."""
        with contextlib.suppress(BlockingIOError):
            while chunk := self.sock.recv(1 << 20):
                self.buffer += chunk
        frames, self.buffer = _frames(self.buffer)
        return frames

    def offsets(self) -> list[int]:
        return [json.loads(payload)["offset"] for op, payload in self.poll() if op == 1]


def _frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The whole server frames at the start of ``data``, and the rest."""
    frames: list[tuple[int, bytes]] = []
    while len(data) >= 2:
        opcode, length, start = data[0] & 0x0F, data[1] & 0x7F, 2
        if length == 126:
            (length,), start = struct.unpack("!H", data[2:4]), 4
        elif length == 127:
            (length,), start = struct.unpack("!Q", data[2:10]), 10
        if len(data) < start + length:
            break
        frames.append((opcode, data[start : start + length]))
        data = data[start + length :]
    return frames, data


@dataclass
class Setup:
    hub: Hub
    room: Room
    slow: list[tuple[str, bool, int]]  # (connection id, blocked, unsent bytes) when reported
    peers: list[Peer]


@contextlib.asynccontextmanager
async def _hub_with(names: list[str]) -> AsyncIterator[Setup]:
    """A hub with one live room and a real socket per name; the clients' sockets have small
    kernel buffers, so that a client that stops reading stalls the server within kilobytes."""
    accepted: asyncio.Queue[asyncio.Transport] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Accepted(accepted), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    slow: list[tuple[str, bool, int]] = []

    def on_slow(outlet: Outlet) -> None:
        slow.append(
            (outlet.connection_id, outlet.blocked, outlet.transport.get_write_buffer_size())
        )
        outlet.closed = True  # as the node's close_slow_consumer does (through the session)

    hub = Hub(Metrics(), on_slow_consumer=on_slow, on_gap=lambda r: None, on_resync=lambda r: None)
    peers: list[Peer] = []
    try:
        for name in names:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", port))
            transport = await asyncio.wait_for(accepted.get(), timeout(5))
            server_sock = transport.get_extra_info("socket")
            server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            connection = WebSocketConnection(transport, 65536, LIMIT)
            outlet = outlet_for(connection, name, "u", LIMIT)
            assert type(outlet) is Outlet  # watched, not polled
            connection.start(b"")
            room = hub.join(ROOM, outlet)
            hub.start_sequence(room, "e1", 0)
            hub.complete_join(room, outlet, 0)
            peers.append(Peer(name, connection, outlet, sock))
        yield Setup(hub, hub.rooms[ROOM], slow, peers)
    finally:
        for peer in peers:
            peer.sock.close()
            peer.connection.abort()
        server.close()


def _event(offset: int, size: int = 2000) -> BrokerEvent:
    return BrokerEvent(
        type="task:updated",
        room=ROOM,
        offset=offset,
        epoch="e1",
        ts=0,
        user_id="u",
        data={"pad": "x" * size},
    )


async def _read_until(peer: Peer, offsets: list[int], upto: int) -> None:
    """Read ``peer``'s socket while the loop runs (the server writes what it buffered)."""
    while not offsets or offsets[-1] < upto:
        await asyncio.sleep(0.005)
        offsets += peer.offsets()


@LOOPS
def test_a_peer_that_stops_reading_is_reported_by_the_write_that_passes_the_bound(run: Run) -> None:
    run(_a_peer_that_stops_reading_is_reported_by_the_write_that_passes_the_bound())


async def _a_peer_that_stops_reading_is_reported_by_the_write_that_passes_the_bound() -> None:
    async with _hub_with(["fast", "stalled"]) as setup:
        fast, stalled = setup.peers
        received: list[int] = []
        reported_at = None
        for offset in range(1, 61):
            setup.hub.deliver([_event(offset)])
            if setup.slow and reported_at is None:
                reported_at = offset
                # Reported inside this delivery: the flag came from pause_writing during it.
                assert setup.slow == [("stalled", True, setup.slow[0][2])]
                assert setup.slow[0][2] > LIMIT
            # The fast peer reads each event before the next is delivered.
            await asyncio.wait_for(_read_until(fast, received, offset), timeout(5))
        assert reported_at is not None, "the stalled peer was never reported"
        # Each event is ~2 kB: the bound (32 KiB) plus the kernel's few kilobytes is passed
        # within ~20 events, and the report came no later than that write.
        assert reported_at <= 30
        assert [name for name, _, _ in setup.slow] == ["stalled"]  # once
        assert received == list(range(1, 61))  # the others get everything, in order
        assert stalled.outlet.closed
        # Nothing was written to it after the report: what it can read ends at that event.
        got: list[int] = []
        await asyncio.wait_for(_read_until(stalled, got, reported_at), timeout(10))
        await asyncio.sleep(0.1)
        got += stalled.offsets()
        assert got == list(range(1, reported_at + 1))


@LOOPS
def test_blocked_clears_once_the_peer_has_read(run: Run) -> None:
    run(_blocked_clears_once_the_peer_has_read())


async def _blocked_clears_once_the_peer_has_read() -> None:
    async with _hub_with(["reader"]) as setup:
        (peer,) = setup.peers
        peer.connection.transport.write(b"x" * (4 * LIMIT))  # as a session's reply would
        assert peer.outlet.blocked  # set during the write that passed the bound
        await wait_until(lambda: (peer.poll(), not peer.outlet.blocked)[1], wait=10)
        assert peer.connection.transport.get_write_buffer_size() <= LIMIT


@LOOPS
def test_a_socket_whose_peer_left_is_written_nothing(run: Run) -> None:
    run(_a_socket_whose_peer_left_is_written_nothing())


async def _a_socket_whose_peer_left_is_written_nothing() -> None:
    async with _hub_with(["gone", "here"]) as setup:
        gone, here = setup.peers
        gone.sock.close()
        await wait_until(lambda: gone.outlet.closed, wait=10)  # from connection_lost
        setup.hub.deliver([_event(1, size=10)])  # a write to a lost transport would raise here
        got: list[int] = []
        await asyncio.wait_for(_read_until(here, got, 1), timeout(5))
        assert got == [1]
        assert not setup.slow


@LOOPS
def test_nothing_follows_the_close_frame(run: Run) -> None:
    run(_nothing_follows_the_close_frame())


async def _nothing_follows_the_close_frame() -> None:
    async with _hub_with(["closing"]) as setup:
        (peer,) = setup.peers
        setup.hub.deliver([_event(1, size=10)])
        assert peer.connection.close_now(4008, "slow consumer")
        assert peer.outlet.closed  # at once, before the transport closes
        setup.hub.deliver([_event(2, size=10)])
        frames: list[tuple[int, bytes]] = []

        def closed_frame_read() -> bool:
            frames.extend(peer.poll())
            return bool(frames) and frames[-1][0] == OP_CLOSE

        await wait_until(closed_frame_read, wait=5)
        await asyncio.sleep(0.05)
        frames.extend(peer.poll())
        assert [op for op, _ in frames] == [1, OP_CLOSE]
        assert frames[1][1] == close_payload(4008, b"slow consumer")


def test_a_connection_that_cannot_report_gets_a_polled_outlet() -> None:
    connection = FakeConnection()
    outlet = outlet_for(connection, "c", "u", 1000)  # type: ignore[arg-type]  # (a fake)
    assert isinstance(outlet, PolledOutlet)
    assert not outlet.blocked
    assert not outlet.closed
    connection.backlog = 1001
    assert outlet.blocked
    connection.closing = True
    assert outlet.closed
