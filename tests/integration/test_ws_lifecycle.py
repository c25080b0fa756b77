"""Connection lifecycle: slow consumers (4008), SIGTERM (1012, exit 0), ``/metrics``.

CONTRACT §4 close codes and §5.7: a socket whose unsent data passes the server's bound is
closed with 4008 and the other subscribers still get every event; on SIGTERM every socket is
closed with 1012, new connections are refused and the process exits 0 within 10 s. ``/metrics``
exposes connections, subscriptions, events published, messages sent, broker up and a delivery
latency histogram.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import aiohttp
import pytest

from tests.support.board import Board
from tests.support.contract import offsets, project_room, workspace_room
from tests.support.servers import LiveboardProcess
from tests.support.timing import timeout, wait_until
from tests.support.tokens import make_token
from tests.support.wsclient import WsClient, small_receive_buffer

# slow consumer


async def test_slow_consumer_is_closed_4008_and_others_get_everything(board: Board) -> None:
    owner = board.user("owner")
    _, pid = await board.board(owner)
    room = project_room(pid)
    reference = await board.connect(owner)
    base = (await reference.subscribe(room))["offset"]

    # a client that subscribes and then never reads, with a tiny socket receive buffer
    slow = await WsClient.connect(
        board.ws_url,
        make_token(owner),
        read=False,
        connector=aiohttp.TCPConnector(socket_factory=small_receive_buffer(4096)),
    )
    board.clients.append(slow)
    await slow.send({"type": "subscribe", "room": room, "id": "s"})
    reply = await slow.receive_raw(timeout(5))
    assert reply is not None
    assert reply["type"] == "subscribed"

    # ~9 MB of events: a task with a 20 KB description, then edits that swap it (each
    # task:updated carries the task and both versions of the description: ~60 KB). That is well
    # past a 1 MiB bound even with a few MB absorbed by the kernel's socket buffers.
    count = 150
    task = await board.task(owner, pid, "big", description="x" * 20_000)
    for i in range(count - 1):
        await board.patch(owner, task["id"], {"description": "yz"[i % 2] * 20_000})
    events = await reference.events(count, wait=30)
    assert offsets(events) == list(range(base + 1, base + count + 1))
    assert await reference.barrier() == []

    # now read what the slow client was sent: a prefix of the stream, then the end
    received: list[int] = []
    while True:
        message = await slow.receive_raw(timeout(10))
        if message is None:
            break
        received.append(int(message["offset"]))
    assert len(received) < count, "the slow consumer was never cut off"
    assert received == list(range(base + 1, base + 1 + len(received)))  # no gap before the end
    assert slow.close_code in (4008, 1006, None), f"closed with {slow.close_code}"
    # the server let go of it: only the reference connection remains subscribed there
    assert (await reference.request({"type": "ping"}))["type"] == "pong"


# SIGTERM


async def test_sigterm_closes_sockets_1012_and_exits_0(
    server_factory: Callable[..., LiveboardProcess],
) -> None:
    server = server_factory()
    async with Board(server) as board:
        owner = board.user("owner")
        _, pid = await board.board(owner)
        clients = [await board.connect(owner) for _ in range(3)]
        for client in clients:
            await client.subscribe(project_room(pid))
        assert server.process is not None
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(c.expect_close(wait=10) for c in clients))
        assert codes == [1012, 1012, 1012]

        # new connections are refused from now on
        with pytest.raises((aiohttp.ClientConnectionError, aiohttp.WSServerHandshakeError)) as e:
            await WsClient.connect(board.ws_url, make_token(owner))
        if isinstance(e.value, aiohttp.WSServerHandshakeError):
            assert e.value.status == 503

        code = await asyncio.to_thread(server.process.wait, timeout(12))
        elapsed = time.monotonic() - started
        assert code == 0
        assert elapsed < 10, f"exit took {elapsed:.1f}s"


async def test_sigterm_refuses_upgrades_while_closing(
    server_factory: Callable[..., LiveboardProcess],
) -> None:
    """Many sockets: while they are being closed, any new attempt fails."""
    server = server_factory()
    async with Board(server) as board:
        owner = board.user("owner")
        clients = [await board.connect(owner) for _ in range(30)]
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        await clients[0].expect_close(wait=10)
        outcomes: list[str] = []
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and server.process.poll() is None:
            try:
                client = await WsClient.connect(board.ws_url, make_token(owner))
            except aiohttp.WSServerHandshakeError as exc:
                outcomes.append(f"http {exc.status}")
            except aiohttp.ClientConnectionError:
                outcomes.append("refused")
            else:
                await client.close()
                outcomes.append("accepted")
        codes = await asyncio.gather(*(c.expect_close(wait=10) for c in clients))
        assert set(codes) == {1012}
        assert await asyncio.to_thread(server.process.wait, timeout(12)) == 0
        assert outcomes
        assert set(outcomes) <= {"refused", "http 503"}, outcomes


# metrics


def _named(types: dict[str, str], kind: str, *words: str) -> str:
    names = [n for n, t in types.items() if t == kind and all(w in n for w in words)]
    assert names, f"no {kind} metric named with {words}: {sorted(types)}"
    return min(names, key=len)


async def test_metrics_after_traffic(server_factory: Callable[..., LiveboardProcess]) -> None:
    server = server_factory()
    async with Board(server) as board:
        owner = board.user("owner")
        wid, pid = await board.board(owner)
        first = await board.connect(owner)
        second = await board.connect(owner)
        await first.subscribe(project_room(pid))
        await first.subscribe(workspace_room(wid))
        await second.subscribe(project_room(pid))
        for i in range(5):
            await board.task(owner, pid, f"t{i}")
        await first.events(5)
        await second.events(5)

        types = await board.metric_types()
        samples = await board.metrics()
        connections = _named(types, "gauge", "connection")
        subscriptions = _named(types, "gauge", "subscription")
        published = _named(types, "counter", "event", "publish")
        sent = _named(types, "counter", "message", "sent")
        broker_up = _named(types, "gauge", "broker", "up")
        latency = _named(types, "histogram", "latency")

        assert samples[connections] == 2
        assert samples[subscriptions] == 3
        assert samples[_sample(samples, published)] >= 5
        assert samples[_sample(samples, sent)] >= 10
        count = samples[f"{latency}_count"]
        assert count >= 5
        assert samples[f'{latency}_bucket{{le="+Inf"}}'] == count
        buckets = [v for k, v in samples.items() if k.startswith(f"{latency}_bucket")]
        assert buckets == sorted(buckets), "histogram buckets must be cumulative"
        assert samples[f"{latency}_sum"] >= 0

        await second.close()

        async def gauges_dropped() -> bool:
            now = await board.metrics()
            return now[connections] == 1 and now[subscriptions] == 2

        await wait_until(gauges_dropped)

        # every sample is valid Prometheus text (a value is a float, not e.g. ``True``)
        assert samples.invalid == [], f"invalid samples: {samples.invalid}"
        assert samples[broker_up] == 1


def _sample(samples: dict[str, float], name: str) -> str:
    """A counter's sample name (``foo`` or ``foo_total``)."""
    for candidate in (name, f"{name}_total"):
        if candidate in samples:
            return candidate
    raise AssertionError(f"no sample for {name}")
