"""The floor under scenario A: what one ``send()`` of an event frame costs on this machine.

A server that writes each event to each socket pays at least one system call per delivery;
on loopback that call also runs the receiving side's TCP processing. This measures it with
nothing else in the way: ``sockets`` connected pairs in this process, the same frame sent to
each in a plain loop (``socket.send``), the receiving ends drained between rounds outside the
measured time. The result is CPU time (user + system) per send, so that the server's CPU per
delivery can be read against it: 1 µs per send is 0.1 s per 100k deliveries.

It also measures the design the floor stands for, as a server would run it
(``minimal_fanout``): the same frame written with ``transport.write`` to 1,000 uvloop transports
whose other ends are read by another process waiting in ``epoll``, 50 rounds a second, as in
scenario A at 50 events/s. That adds what the floor leaves out: the event loop's write path and
waking a receiver that sleeps between events. It is the cost of the issue's reference row
"Python, one pre-encoded frame per event written to each transport".

    python -m bench.floor          # prints both figures for a 600-byte frame and 1,000 sockets
"""

from __future__ import annotations

import asyncio
import resource
import select
import socket
import statistics
import subprocess
import sys
from pathlib import Path

_PROJECT = Path(__file__).resolve().parent.parent  # where ``-m bench.floor`` imports from

#: Size of the frame sent (bytes): about the size of scenario A's ``task:updated`` event.
FRAME_BYTES = 600


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _drain(receivers: list[socket.socket]) -> None:
    for receiver in receivers:
        while True:
            try:
                if not receiver.recv(1 << 20):
                    break
            except BlockingIOError:
                break


def send_floor(sockets: int = 1000, rounds: int = 30, frame_bytes: int = FRAME_BYTES) -> float:
    """Median over ``rounds`` of the CPU seconds per ``send()`` of one frame, to ``sockets``
    loopback TCP connections (``TCP_NODELAY``, as the servers set)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=sockets)
    port = listener.getsockname()[1]
    senders: list[socket.socket] = []
    receivers: list[socket.socket] = []
    try:
        for _ in range(sockets):
            receiver = socket.create_connection(("127.0.0.1", port))
            sender, _address = listener.accept()
            sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            receiver.setblocking(False)
            senders.append(sender)
            receivers.append(receiver)
        frame = b"\x81\x7e" + frame_bytes.to_bytes(2, "big") + b"x" * frame_bytes
        per_send: list[float] = []
        for _ in range(rounds):
            started = _cpu()
            for sender in senders:
                sender.send(frame)
            per_send.append((_cpu() - started) / sockets)
            _drain(receivers)
        return statistics.median(per_send)
    finally:
        for s in (*senders, *receivers, listener):
            s.close()


def minimal_fanout(
    sockets: int = 1000, rounds: int = 150, rate: float = 50.0, frame_bytes: int = FRAME_BYTES
) -> float:
    """CPU seconds per delivery of a bare fan-out loop on uvloop: ``rounds`` times, at ``rate``
    rounds per second, one ``transport.write`` of the frame to each of ``sockets`` transports
    whose peers a child process reads (blocked in ``epoll`` between rounds)."""
    import uvloop

    return uvloop.run(minimal_fanout_async(sockets, rounds, rate, frame_bytes))


async def minimal_fanout_async(
    sockets: int = 1000, rounds: int = 150, rate: float = 50.0, frame_bytes: int = FRAME_BYTES
) -> float:
    """``minimal_fanout`` on the running loop (which should have nothing else to do)."""
    loop = asyncio.get_running_loop()
    transports: list[asyncio.Transport] = []
    all_connected = asyncio.Event()

    class Sink(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transports.append(transport)  # type: ignore[arg-type]
            if len(transports) == sockets:
                all_connected.set()

    server = await loop.create_server(Sink, "127.0.0.1", 0, backlog=sockets)
    port = server.sockets[0].getsockname()[1]
    reader = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.floor", "--read", str(port), str(sockets)),
        stdin=subprocess.DEVNULL,
        cwd=_PROJECT,
    )
    try:
        await asyncio.wait_for(all_connected.wait(), 60)
        frame = b"\x81\x7e" + frame_bytes.to_bytes(2, "big") + b"x" * frame_bytes
        await asyncio.sleep(0.5)
        spent = 0.0
        for _ in range(rounds):
            started = _cpu()
            for transport in transports:
                transport.write(frame)
            spent += _cpu() - started
            await asyncio.sleep(1 / rate)
        # Summed over the rounds: the clock behind getrusage ticks too coarsely for one round.
        return spent / (rounds * sockets)
    finally:
        for transport in transports:
            transport.abort()
        server.close()
        reader.kill()
        await reader.wait()


def _read_forever(port: int, sockets: int) -> None:
    """The receiving side of ``minimal_fanout``: connect, then read whatever arrives."""
    connections = [socket.create_connection(("127.0.0.1", port)) for _ in range(sockets)]
    poller = select.epoll()
    by_fd = {}
    for connection in connections:
        connection.setblocking(False)
        poller.register(connection.fileno(), select.EPOLLIN)
        by_fd[connection.fileno()] = connection
    while True:
        for fd, _events in poller.poll():
            try:
                if not by_fd[fd].recv(1 << 16):
                    return
            except BlockingIOError:
                pass


def main() -> None:
    if sys.argv[1:2] == ["--read"]:
        _read_forever(int(sys.argv[2]), int(sys.argv[3]))
        return
    seconds = send_floor()
    print(
        f"one send() of a {FRAME_BYTES}-byte frame on loopback: {seconds * 1e6:.2f} µs of CPU"
        f" = {seconds * 1e5:.2f} s per 100k deliveries"
    )
    seconds = minimal_fanout()
    print(
        f"bare fan-out on uvloop, live receiver, 50 rounds/s: {seconds * 1e6:.2f} µs of CPU"
        f" = {seconds * 1e5:.2f} s per 100k deliveries"
    )


if __name__ == "__main__":
    main()
