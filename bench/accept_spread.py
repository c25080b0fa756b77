"""How evenly the kernel spreads connections over worker processes, two ways (issue 20 item 1).

    python -m bench.accept_spread [--workers 2] [--connections 1000] [--runs 3]

* ``reuseport``: each worker binds the port itself with ``SO_REUSEPORT`` (what
  ``liveboard serve --workers`` does): the kernel hashes each connection to one listening socket;
* ``shared``: a parent binds and listens once, the workers inherit that socket and all accept
  from it (what a pre-fork server without ``SO_REUSEPORT`` does): whichever worker the kernel
  wakes first takes the connection.

Each worker is a process running an asyncio (uvloop) server that counts what it accepted and
keeps every connection open; the client opens ``--connections`` connections in bursts of 50 and
holds them. Printed per run: the count per worker and the max/mean ratio (1.0 = perfectly even).
The workers do nothing else, so the figure is the kernel's spread, not liveboard's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import socket
import statistics
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

import uvloop


def _serve(
    sock: socket.socket | None, port: int, ready: Event, stop: Event, out: Connection
) -> None:
    async def main() -> int:
        accepted = 0
        writers: list[asyncio.StreamWriter] = []

        def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            writers.append(writer)

        if sock is None:
            server = await asyncio.start_server(on_connect, "127.0.0.1", port, reuse_port=True)
        else:
            server = await asyncio.start_server(on_connect, sock=sock)
        ready.set()
        await asyncio.to_thread(stop.wait)
        server.close()
        for writer in writers:
            writer.close()
        return accepted

    out.send(uvloop.run(main()))


async def _connect_all(port: int, count: int) -> list[asyncio.StreamWriter]:
    writers: list[asyncio.StreamWriter] = []
    for start in range(0, count, 50):
        pairs = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", port) for _ in range(min(50, count - start)))
        )
        writers.extend(writer for _, writer in pairs)
    await asyncio.sleep(0.5)  # let every worker accept what is in its queue
    return writers


def run_once(mode: str, workers: int, connections: int) -> list[int]:
    """The connections each worker accepted, largest first."""
    context = multiprocessing.get_context("fork")
    shared: socket.socket | None = None
    if mode == "shared":
        shared = socket.create_server(("127.0.0.1", 0), backlog=4096)
        shared.setblocking(False)
        port = shared.getsockname()[1]
    else:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    stop = context.Event()
    processes, pipes, readies = [], [], []
    for _ in range(workers):
        ready = context.Event()
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_serve, args=(shared, port, ready, stop, send))
        process.start()
        processes.append(process)
        pipes.append(receive)
        readies.append(ready)
    for ready in readies:
        ready.wait(30)
    writers = asyncio.run(_connect_all(port, connections))
    stop.set()
    counts = sorted((pipe.recv() for pipe in pipes), reverse=True)
    for writer in writers:
        with contextlib.suppress(Exception):
            writer.close()
    for process in processes:
        process.join(10)
    if shared is not None:
        shared.close()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; {args.workers} workers; {args.connections} connections")
    for mode in ("reuseport", "shared"):
        ratios = []
        for run in range(args.runs):
            counts = run_once(mode, args.workers, args.connections)
            ratio = max(counts) / statistics.mean(counts)
            ratios.append(ratio)
            print(f"{mode:9} run {run + 1}: {counts}  max/mean {ratio:.2f}")
        print(f"{mode:9} max/mean {min(ratios):.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    main()
