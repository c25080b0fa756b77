"""The floor under scenario A: what one ``send()`` of an event frame costs on this machine.

A server that writes each event to each socket pays at least one system call per delivery;
on loopback that call also runs the receiving side's TCP processing. This measures it with
nothing else in the way: ``sockets`` connected pairs in this process, the same frame sent to
each in a plain loop (``socket.send``), the receiving ends drained between rounds outside the
measured time. The result is CPU time (user + system) per send, so that the server's CPU per
delivery can be read against it: 1 µs per send is 0.1 s per 100k deliveries.

    python -m bench.floor          # prints the figure for a 600-byte frame and 1,000 sockets
"""

from __future__ import annotations

import resource
import socket
import statistics

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


def main() -> None:
    seconds = send_floor()
    print(
        f"one send() of a {FRAME_BYTES}-byte frame on loopback: {seconds * 1e6:.2f} µs of CPU"
        f" = {seconds * 1e5:.2f} s per 100k deliveries"
    )


if __name__ == "__main__":
    main()
