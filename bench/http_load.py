"""A lean open-loop HTTP/1.1 load generator: cheap enough per request not to decide the figure.

``OpenLoop.run`` sends prepared requests (whole HTTP/1.1 messages as bytes, built before the
timed window) at a fixed rate, each at its due time whether or not earlier ones have been
answered (open loop), over keep-alive connections: one request at a time per connection (no
pipelining), a new connection only when none is idle (up to ``max_connections``; past that,
requests wait for one). A request's response time runs from its due time, not from when it
could be written, so waiting in the generator counts as waiting (no coordinated omission).

It parses only what it must: the status line and ``Content-Length`` (no chunked answers: the
server under test sends neither). Its own CPU per request is measured with the run
(``time.process_time``: this process's; ``bench.publish_rate`` runs the servers, PostgreSQL and
Redis as other processes, so during a run the figure is the generator's alone).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import cast

__all__ = ["LoadResult", "OpenLoop", "http_request"]


def http_request(
    method: str, path: str, host: str, headers: dict[str, str], body: bytes = b""
) -> bytes:
    """One HTTP/1.1 request message (keep-alive), ready to write."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class LoadResult:
    """One run: what was sent, answered and when."""

    sent: int
    #: Answers per second, over the time from the first due time to the last answer.
    achieved_per_s: float
    #: Response times from each request's due time, in ms, in the order answered.
    latencies_ms: list[float]
    #: Answers whose status was not the one expected.
    failures: int
    #: This process's CPU over the run, per request, in ms.
    client_cpu_ms: float
    #: Connections used (opened before the run or during it).
    connections: int


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request in flight."""

    def __init__(self, owner: OpenLoop) -> None:
        self._owner = owner
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.due = 0.0
        self.busy = False
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it

    def send(self, request: bytes, due: float) -> None:
        assert self.transport is not None
        self.due = due
        self.busy = True
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        length = 0
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        if len(buffer) < end + 4 + length:
            return
        del buffer[: end + 4 + length]
        self.busy = False
        self._owner.answered(self, int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self._owner.lost(self)


class OpenLoop:
    """Open-loop load against one ``host:port`` (see the module)."""

    def __init__(self, host: str, port: int, *, max_connections: int = 256) -> None:
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._opening = 0
        self._connecting: set[asyncio.Future[None]] = set()
        self._waiting: deque[tuple[bytes, float]] = deque()
        self._latencies: list[float] = []
        self._failures = 0
        self._expected = 200
        self._outstanding = 0
        self._finished: asyncio.Future[None] | None = None
        self._last_answer = 0.0

    async def open(self, count: int) -> None:
        """Open ``count`` connections now (outside any timed run)."""
        await asyncio.gather(*(self._connect() for _ in range(count)))

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            lambda: _Connection(self), self.host, self.port
        )
        self._all.add(connection)
        self._idle.append(connection)
        return connection

    async def aclose(self) -> None:
        for connection in list(self._all):
            if connection.transport is not None:
                connection.transport.close()
        await asyncio.gather(*(c.closed for c in list(self._all)), return_exceptions=True)

    async def run(
        self, requests: list[bytes], rate: float, *, expected: int = 200, drain: float = 120.0
    ) -> LoadResult:
        """Send ``requests`` at ``rate`` per second; wait (up to ``drain`` s after the last
        due time) for every answer."""
        loop = asyncio.get_running_loop()
        self._latencies = []
        self._failures = 0
        self._expected = expected
        self._outstanding = len(requests)
        self._finished = loop.create_future()
        cpu_before = time.process_time()
        begun = time.perf_counter()
        interval = 1.0 / rate
        for number, request in enumerate(requests):
            due = begun + number * interval
            delay = due - time.perf_counter()
            if delay > 0.0005:  # else it is due now: send without a timer
                await asyncio.sleep(delay)
            self._send(request, due)
        if self._outstanding:
            last_due = begun + (len(requests) - 1) * interval
            remaining = max(1.0, last_due + drain - time.perf_counter())
            await asyncio.wait_for(asyncio.shield(self._finished), remaining)
        cpu = time.process_time() - cpu_before
        elapsed = self._last_answer - begun
        return LoadResult(
            sent=len(requests),
            achieved_per_s=len(requests) / elapsed if elapsed > 0 else 0.0,
            latencies_ms=self._latencies,
            failures=self._failures,
            client_cpu_ms=cpu * 1000.0 / len(requests),
            connections=len(self._all),
        )

    def _send(self, request: bytes, due: float) -> None:
        if self._idle:
            self._idle.pop().send(request, due)
            return
        self._waiting.append((request, due))
        if len(self._all) + self._opening < self.max_connections:
            self._opening += 1
            opening = asyncio.ensure_future(self._open_for_waiting())
            self._connecting.add(opening)
            opening.add_done_callback(self._connecting.discard)

    async def _open_for_waiting(self) -> None:
        try:
            connection = await self._connect()
        finally:
            self._opening -= 1
        self._idle.remove(connection)
        self._next(connection)

    def _next(self, connection: _Connection) -> None:
        if self._waiting:
            request, due = self._waiting.popleft()
            connection.send(request, due)
        else:
            self._idle.append(connection)

    def answered(self, connection: _Connection, status: int) -> None:
        now = time.perf_counter()
        self._last_answer = now
        self._latencies.append((now - connection.due) * 1000.0)
        if status != self._expected:
            self._failures += 1
        self._outstanding -= 1
        if self._outstanding == 0 and self._finished is not None and not self._finished.done():
            self._finished.set_result(None)
        self._next(connection)

    def lost(self, connection: _Connection) -> None:
        """A connection closed (by the server): its request in flight, if any, failed."""
        self._all.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)
        if connection.busy:
            connection.busy = False
            self._failures += 1
            self._outstanding -= 1
            finished = self._finished
            if self._outstanding == 0 and finished is not None and not finished.done():
                finished.set_result(None)
