"""Half-open connections (issue 16, high item 2), against real ``liveboard serve`` processes.

* Thousands of connections that send nothing, a partial request head (on the router's path and
  on aiohttp's), a head a byte at a time, a partial body (with and without a token), or stop
  after a first request, are each closed within the configured bounds, while other clients'
  REST calls and WebSocket connects keep succeeding.
* A server started with a soft ``RLIMIT_NOFILE`` of 1,024 raises it to the hard limit; whether
  or not it could, one address holding more than 1,050 idle connections gets the excess refused
  (429 ``rate_limited``) and everybody else is served meanwhile.
* With the cap off, nearing the open-files limit is logged, and so is the way back.
* A client that pipelines requests and never reads the responses is cut after the send
  timeout, while others are served.

Each half-open kind is opened ``LIVEBOARD_HALF_OPEN_CONNECTIONS`` times (2000). The time each
took to close, as the client saw it, is printed (``-s``) for docs/reliability.md (O2a, O2b).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import socket
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from tests.support.board import Board
from tests.support.contract import workspace_room
from tests.support.probes import holds_connection, open_fds, parse_metrics
from tests.support.servers import LiveboardProcess
from tests.support.timing import timeout, wait_until
from tests.support.tokens import make_token

HALF_OPEN = int(os.environ.get("LIVEBOARD_HALF_OPEN_CONNECTIONS", "2000"))
#: Class members beyond the three kinds of the issue: fewer of each.
EXTRA = max(1, HALF_OPEN // 10)
#: Far enough apart that which one closed a connection is never in doubt.
SHORT_TIMEOUTS = {
    "LIVEBOARD_HEAD_TIMEOUT": "2",
    "LIVEBOARD_BODY_TIMEOUT": "2",
    "LIVEBOARD_KEEPALIVE_TIMEOUT": "6",
}
#: Clients that pipeline requests and read nothing.
NON_READERS = 20
#: Where the idle connections come from, and where everybody else comes from.
HOLDER = "127.0.0.1"
OTHERS = "127.0.0.2"
#: ``LIVEBOARD_MAX_PENDING_PER_ADDRESS``'s default.
DEFAULT_CAP = 256

# alone: thousands of held connections and "others are served within 10 s" bounds; the other
# xdist workers' tests on the same 2 cores made a round miss its bound (make test runs it apart).
pytestmark = [pytest.mark.slow, pytest.mark.alone, pytest.mark.timeout(600)]


@pytest.fixture(autouse=True, scope="module")
def _own_fd_limit() -> Iterator[None]:
    """This process holds thousands of sockets too: its soft limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@dataclass
class Held:
    """One client connection the test holds open; ``closed_after`` is set when the server
    closes it (seconds since it was opened and its bytes sent)."""

    kind: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    opened: float
    received: bytearray = field(default_factory=bytearray)
    closed_after: float | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


async def _open(
    port: int,
    kind: str,
    payload: bytes,
    gate: asyncio.Semaphore,
    *,
    source: str = HOLDER,
    then: Callable[[Held], Awaitable[None]] | None = None,
) -> Held:
    async with gate:  # a few hundred connects at a time, within the listen backlog
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(source, 0), limit=1 << 16
        )
    if payload:
        writer.write(payload)
    held = Held(kind, reader, writer, time.monotonic())
    if then is not None:
        await then(held)
    # Read from now on, so that each close is seen when it happens.
    held.tasks.insert(0, asyncio.create_task(_until_closed(held)))
    return held


async def _until_closed(held: Held) -> None:
    """Read (and keep) what the server sends until it closes the connection."""
    try:
        while chunk := await held.reader.read(65536):
            held.received += chunk
    except ConnectionError:
        pass
    held.closed_after = time.monotonic() - held.opened


async def _response_then(held: Held, send: bytes) -> None:
    """Read one /healthz response, then send ``send`` (the next request's partial head)."""
    while b'"ok"}' not in held.received:
        chunk = await held.reader.read(65536)
        assert chunk, "closed before its first response"
        held.received += chunk
    held.received.clear()
    if send:
        held.writer.write(send)
    held.opened = time.monotonic()


async def _first_response(held: Held) -> None:
    await _response_then(held, b"")


def full_request() -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


async def _drip(held: Held) -> None:
    """Go on with the head one byte every 0.25 s: it is never complete."""

    async def drip() -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while not held.writer.is_closing():
                await asyncio.sleep(0.25)
                held.writer.write(b"a")
                await held.writer.drain()

    held.tasks.append(asyncio.create_task(drip()))


@dataclass
class Others:
    """Another client's REST calls and WebSocket connects, in a loop, from ``OTHERS``."""

    board: Board
    owner: str
    durations: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    async def round(self) -> None:
        """Two REST calls, a WebSocket connect and subscribe, a third call and its event."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout(10)):
                wid = await self.board.workspace(self.owner)
                await self.board.call("GET", "/api/workspaces", self.owner)
                client = await self.board.connect(self.owner)
                await client.subscribe(workspace_room(wid))
                await self.board.project(self.owner, wid)
                event = await client.next("project:created")
                assert event["type"] == "project:created", event
                await client.close()
                self.board.clients.remove(client)
            self.durations.append(time.monotonic() - started)
        except Exception as exc:  # every failure is reported at the end
            self.failures.append(f"{type(exc).__name__}: {exc}")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.round()
            await asyncio.sleep(0.1)


async def _scrape(server: LiveboardProcess) -> dict[str, float]:
    """``/metrics`` over a connection of its own from ``OTHERS`` (the holder's address may be
    at its cap); that connection is one of the unauthenticated ones it counts."""
    connector = aiohttp.TCPConnector(local_addr=(OTHERS, 0), force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"{server.url}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    return dict(parse_metrics(text))


def _figures(held: list[Held]) -> str:
    by_kind: dict[str, list[float]] = {}
    for h in held:
        assert h.closed_after is not None
        by_kind.setdefault(h.kind, []).append(h.closed_after)
    return "\n".join(
        f"  {kind:<42} n={len(times):>5}  closed after: median {statistics.median(times):.2f} s,"
        f" max {max(times):.2f} s"
        for kind, times in by_kind.items()
    )


def _guard_lines(log_path: Path) -> list[str]:
    return [line for line in log_path.read_text().splitlines() if "liveboard.guard" in line]


async def test_half_open_connections_are_closed_within_their_bounds_while_others_are_served(
    server_factory: Callable[..., LiveboardProcess],
) -> None:
    # The cap is off here: it has its own test. Every kind below is held by one address.
    server = server_factory(env={**SHORT_TIMEOUTS, "LIVEBOARD_MAX_PENDING_PER_ADDRESS": "0"})
    port = server.port
    gate = asyncio.Semaphore(200)
    async with Board(server, local_addr=OTHERS) as board:
        others = Others(board, board.user("other"))
        for _ in range(5):  # the same rounds with nothing held, to compare with
            await others.round()
        baseline = statistics.median(others.durations)
        others.durations.clear()
        stop = asyncio.Event()
        serving = asyncio.create_task(others.run(stop))
        started = time.monotonic()

        def head(path: str, extra: str = "") -> bytes:
            return f"{'POST' if extra else 'GET'} {path} HTTP/1.1\r\nHost: x\r\n{extra}".encode()

        def body(i: int) -> bytes:
            token = f"Authorization: Bearer {make_token(f'slow-{i}')}\r\n" if i % 2 else ""
            extra = f"{token}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            return head("/api/workspaces", extra) + b'{"name": '

        async def ka_then_partial(held: Held) -> None:
            await _response_then(held, b"GET /healthz HTTP/1.1\r\nHo")

        async def ka_idle(held: Held) -> None:
            await _response_then(held, b"")

        full = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        opening = [
            *(_open(port, "nothing sent", b"", gate) for _ in range(HALF_OPEN)),
            *(
                _open(
                    port,
                    "partial head, router's path (GET /ws…)"
                    if i % 2
                    else "partial head, aiohttp's path (GET /healthz)",
                    head("/ws/connect" if i % 2 else "/healthz"),
                    gate,
                )
                for i in range(HALF_OPEN)
            ),
            *(
                _open(
                    port,
                    "partial POST body, with a token" if i % 2 else "partial POST body, no token",
                    body(i),
                    gate,
                )
                for i in range(HALF_OPEN)
            ),
            *(
                _open(
                    port,
                    "head dripped a byte per 0.25 s",
                    head("/api/x") + b"X: ",
                    gate,
                    then=_drip,
                )
                for _ in range(EXTRA)
            ),
            *(
                _open(port, "a request, then a partial head", full, gate, then=ka_then_partial)
                for _ in range(EXTRA)
            ),
            *(
                _open(port, "a request, then idle keep-alive", full, gate, then=ka_idle)
                for _ in range(EXTRA)
            ),
        ]
        held = await asyncio.gather(*opening)
        opened_in = time.monotonic() - started
        try:
            # Old code: held for aiohttp's keep-alive timeout (3,630 s), so this times out.
            await asyncio.wait_for(asyncio.gather(*(h.tasks[0] for h in held)), timeout(90))
        finally:
            stop.set()
            await serving
            for h in held:
                for task in h.tasks:
                    task.cancel()
                h.writer.close()
        samples = await _scrape(server)

    print(
        f"\n{len(held)} connections opened in {opened_in:.1f} s; meanwhile"
        f" {len(others.durations)} rounds of others, median"
        f" {statistics.median(others.durations) / baseline:.1f}x the round with nothing held"
    )
    print(_figures(held))
    assert others.failures == []
    assert others.durations
    # What closed them: the head timeout (both paths, every kind of late head), the body
    # timeout (400), the keep-alive timeout (idle after a response; not counted).
    assert samples["liveboard_head_timeouts_total"] == 2 * HALF_OPEN + 2 * EXTRA
    assert samples["liveboard_body_timeouts_total"] == HALF_OPEN // 2
    authenticated = [h for h in held if h.kind == "partial POST body, with a token"]
    assert all(h.received.startswith(b"HTTP/1.1 400 ") for h in authenticated)
    # Every connection the guard held was released: only this scrape's own is left.
    assert samples["liveboard_unauthenticated_connections"] == 1
    # Counted in the log, not logged one by one.
    assert 1 <= len(_guard_lines(server.log_path)) <= 20


def _limits(pid: int) -> tuple[int, int]:
    text = Path(f"/proc/{pid}/limits").read_text()
    match = re.search(r"Max open files\s+(\d+)\s+(\d+)", text)
    assert match is not None, text
    return int(match.group(1)), int(match.group(2))


@pytest.mark.parametrize("raisable", [True, False], ids=["hard-limit-above", "hard-limit-1024"])
async def test_one_address_holding_idle_connections_does_not_starve_others(
    server_factory: Callable[..., LiveboardProcess], raisable: bool
) -> None:
    _, own_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard = own_hard if raisable else 1024
    # Idle connections stay held for the whole test: only the cap can keep them in check.
    server = server_factory(env={"LIVEBOARD_HEAD_TIMEOUT": "120"}, nofile=(1024, hard))
    assert _limits(server.pid) == (hard, hard)
    if raisable:
        assert f"open files limit raised from 1024 to {hard}" in server.log()
    else:
        assert "open files limit is 1024 (the hard limit)" in server.log()

    count = 1100
    gate = asyncio.Semaphore(200)
    async with Board(server, local_addr=OTHERS) as board:
        owner = board.user("owner")
        wid = await board.workspace(owner)
        watcher = await board.connect(owner)
        await watcher.subscribe(workspace_room(wid))

        held = await asyncio.gather(*(_open(server.port, "idle", b"", gate) for _ in range(count)))

        async def settled() -> dict[str, float]:
            # Old code: the server is out of descriptors and this scrape fails.
            while True:
                samples = await _scrape(server)
                pending = samples["liveboard_unauthenticated_connections"] - 1  # this scrape
                if samples["liveboard_connections_refused_total"] + pending >= count:
                    return samples
                await asyncio.sleep(0.1)

        samples = await asyncio.wait_for(settled(), timeout(30))
        await wait_until(
            lambda: sum(h.closed_after is not None for h in held) >= count - DEFAULT_CAP
        )
        refused = [h for h in held if h.closed_after is not None]
        print(
            f"\nlimit {hard}: {count} idle connections from {HOLDER}: {count - len(refused)} held,"
            f" {len(refused)} refused; the server holds {open_fds(server.pid)} descriptors"
        )
        assert len(refused) == count - DEFAULT_CAP
        assert samples["liveboard_connections_refused_total"] == count - DEFAULT_CAP
        assert samples["liveboard_unauthenticated_connections"] == DEFAULT_CAP + 1
        for h in refused:
            assert h.received.startswith(b"HTTP/1.1 429 "), bytes(h.received[:200])
            assert b'"code":"rate_limited"' in h.received

        # Everybody else is served meanwhile: REST, an event to a WebSocket, a new WebSocket.
        pid = (await board.project(owner, wid))["id"]
        event = await watcher.next("project:created")
        assert event["type"] == "project:created"
        newcomer = await board.connect(board.user("newcomer"))
        assert newcomer.connected["type"] == "connected"
        await board.task(owner, pid, "still served")

        # The holder lets go: its connections are released, and it is admitted again.
        for h in held:
            h.writer.close()
        await asyncio.wait_for(asyncio.gather(*(h.tasks[0] for h in held)), timeout(10))

        async def released() -> bool:
            samples = await _scrape(server)
            return samples["liveboard_unauthenticated_connections"] == 1

        await wait_until(released, wait=10, interval=0.1)
        again = await _open(server.port, "again", full_request(), gate, then=_first_response)
        again.writer.close()

    lines = _guard_lines(server.log_path)
    assert any("too many unauthenticated connections" in line and HOLDER in line for line in lines)
    assert len(lines) <= 5


async def test_nearing_the_open_files_limit_is_logged(
    server_factory: Callable[..., LiveboardProcess],
) -> None:
    # With the cap off, nothing else stops one address: at least the operator hears of it (the
    # event loop's accept drops what it cannot keep without a word).
    server = server_factory(
        env={"LIVEBOARD_HEAD_TIMEOUT": "120", "LIVEBOARD_MAX_PENDING_PER_ADDRESS": "0"},
        nofile=(1024, 1024),
    )
    gate = asyncio.Semaphore(200)
    held = await asyncio.gather(*(_open(server.port, "idle", b"", gate) for _ in range(960)))
    try:
        await wait_until(lambda: "file descriptors open: at the limit" in server.log(), wait=20)
        samples = await _scrape(server)
        assert samples["liveboard_max_fds"] == 1024
        assert samples["liveboard_open_fds"] >= 0.9 * 1024
    finally:
        for h in held:
            for task in h.tasks:
                task.cancel()
            h.writer.close()
    await wait_until(lambda: "file descriptors open: below the limit again" in server.log(), 20)
    assert server.log().count("file descriptors open: at the limit") == 1


async def test_a_client_that_never_reads_its_responses_is_cut_after_the_send_timeout(
    server_factory: Callable[..., LiveboardProcess],
) -> None:
    # Pipelined requests whose responses are never read: aiohttp waits for the client to read,
    # with no timer of its own, for as long as the client likes.
    server = server_factory(
        env={"LIVEBOARD_SEND_TIMEOUT": "2", "LIVEBOARD_MAX_PENDING_PER_ADDRESS": "0"}
    )
    loop = asyncio.get_running_loop()
    # 23 KB each: the buffers on the way are full after a few dozen.
    requests = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 200
    writers: dict[int, tuple[asyncio.StreamWriter, float]] = {}
    for _ in range(NON_READERS):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        _, writer = await asyncio.open_connection(sock=sock)
        writer.write(requests)
        writers[sock.getsockname()[1]] = (writer, time.monotonic())
    cut_after: dict[int, float] = {}
    async with Board(server, local_addr=OTHERS) as board:
        others = Others(board, board.user("other"))
        stop = asyncio.Event()
        serving = asyncio.create_task(others.run(stop))
        try:
            async with asyncio.timeout(timeout(60)):  # old code: held for good
                while len(cut_after) < len(writers):
                    for port, (_, opened) in writers.items():
                        if port not in cut_after and not holds_connection(
                            server.pid, server.port, port
                        ):
                            cut_after[port] = time.monotonic() - opened
                    await asyncio.sleep(0.1)
        finally:
            stop.set()
            await serving
            for writer, _ in writers.values():
                writer.close()
        samples = await _scrape(server)
    times = sorted(cut_after.values())
    print(
        f"\n{NON_READERS} clients pipelining 200 requests each, reading nothing: cut after"
        f" median {statistics.median(times):.2f} s, max {times[-1]:.2f} s;"
        f" {len(others.durations)} rounds of others"
    )
    assert others.failures == []
    assert samples["liveboard_send_timeouts_total"] == NON_READERS
