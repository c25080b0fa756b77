"""The SDK against a scripted WebSocket server: what a real server never does on purpose.

Gaps, duplicates, ``resync`` notices, each close code (1003/1008/1009 fatal; 1011, 4008, 1012
reconnect; 4001 reconnects with a provider's new token and stops with a fixed one), a server
that stops answering pings, a resubscribe that is refused. Each test scripts what the fake
server sends and checks what the SDK delivers and what it sends back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from liveboard.client import (
    ConnectionState,
    Event,
    FatalConnectionError,
    LiveboardClient,
    LiveboardClientError,
    Position,
    PresenceUpdate,
    Resync,
    Revoked,
    Subscription,
    SubscriptionItem,
)
from tests.support.timing import timeout, wait_until
from tests.support.tokens import make_token

Json = dict[str, Any]
ROOM = "project:p1"
EPOCH = "e1"


class FakeConnection:
    """The server side of one connection: ``recv`` what the client sent, ``send``, ``close``."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, number: int) -> None:
        self.ws = ws
        self.request = request
        self.number = number
        self.opened_at = time.monotonic()
        self.inbox: asyncio.Queue[Json | None] = asyncio.Queue()
        self.answer_pings = True
        self.sent_by_client: list[Json] = []

    @property
    def token(self) -> str:
        return self.request.headers.get("Authorization", "").removeprefix("Bearer ")

    async def recv(self, type: str | None = None, wait: float = 5.0) -> Json:
        """The next message from the client (of ``type``; app-level pings are skipped)."""
        while True:
            message = await asyncio.wait_for(self.inbox.get(), timeout(wait))
            if message is None:
                raise ConnectionError("the client closed the connection")
            if type is None or message.get("type") == type:
                return message

    async def send(self, message: Json) -> None:
        await self.ws.send_str(json.dumps(message))

    async def close(self, code: int) -> None:
        await self.ws.close(code=code, message=b"scripted")

    async def subscribed(self, request: Json, offset: int, **extra: Any) -> None:
        await self.send(
            {
                "type": "subscribed",
                "room": request["room"],
                "offset": offset,
                "epoch": EPOCH,
                "id": request["id"],
                **extra,
            }
        )

    async def event(self, offset: int, epoch: str = EPOCH, room: str = ROOM) -> None:
        await self.send(
            {
                "type": "task:deleted",
                "room": room,
                "offset": offset,
                "epoch": epoch,
                "ts": 1764120000000 + offset,
                "userId": "bob",
                "data": {"taskId": f"t{offset}"},
            }
        )


Script = Callable[[FakeConnection], Awaitable[None]]


class FakeServer:
    """A WebSocket endpoint whose every connection runs ``script``; records the connections."""

    def __init__(self) -> None:
        self.connections: list[FakeConnection] = []
        self.new_connection: asyncio.Queue[FakeConnection] = asyncio.Queue()
        self.script: Script | None = None
        self.refuse_with: int | None = None
        self.retry_after: str | None = None  # the refusal's Retry-After header, if any
        app = web.Application()
        app.router.add_get("/ws/connect", self._handle)
        self.server = TestServer(app)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def next_connection(self, wait: float = 10.0) -> FakeConnection:
        return await asyncio.wait_for(self.new_connection.get(), timeout(wait))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_with is not None:
            headers = {} if self.retry_after is None else {"Retry-After": self.retry_after}
            return web.json_response(
                {"error": {"code": "unauthorized", "message": "no"}},
                status=self.refuse_with,
                headers=headers,
            )
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = FakeConnection(ws, request, len(self.connections) + 1)
        self.connections.append(conn)
        await conn.send({"type": "connected", "connectionId": f"c{conn.number}", "userId": "u"})
        self.new_connection.put_nowait(conn)
        script = asyncio.ensure_future(self.script(conn)) if self.script else None
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                message = json.loads(msg.data)
                conn.sent_by_client.append(message)
                if message.get("type") == "ping":
                    if conn.answer_pings:
                        await conn.send({"type": "pong", "id": message.get("id")})
                    continue
                conn.inbox.put_nowait(message)
        finally:
            conn.inbox.put_nowait(None)
            if script is not None:
                script.cancel()
                with contextlib.suppress(BaseException):
                    await script
        return ws


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    server = FakeServer()
    await server.server.start_server()
    yield server
    await server.server.close()


async def _idle(conn: FakeConnection) -> None:
    await asyncio.sleep(3600)


def _client(fake: FakeServer, token: Any = None, **kwargs: Any) -> LiveboardClient:
    options: dict[str, Any] = {
        "heartbeat": 60.0,
        "backoff_base": 0.05,
        "backoff_cap": 0.2,
        "restart_delay": 0.2,
    }
    options.update(kwargs)
    return LiveboardClient(fake.url, token or make_token("u"), **options)


async def _subscribe(
    client: LiveboardClient, conn: FakeConnection, offset: int = 0, **kwargs: Any
) -> tuple[Subscription, Json]:
    """Subscribe through the fake: answer the client's subscribe with ``subscribed``."""
    task = asyncio.ensure_future(client.subscribe(ROOM, **kwargs))
    request = await conn.recv("subscribe")
    await conn.subscribed(request, offset, **({"recovered": True} if "since" in request else {}))
    return await asyncio.wait_for(task, timeout(5)), request


@contextlib.asynccontextmanager
async def _subscribed(
    fake: FakeServer, offset: int = 0, **kwargs: Any
) -> AsyncIterator[tuple[LiveboardClient, FakeConnection, Subscription]]:
    """An idle fake server, a client connected to it and one subscription to ``ROOM``."""
    fake.script = _idle
    async with _client(fake) as client:
        conn = await fake.next_connection()
        sub, _ = await _subscribe(client, conn, offset, **kwargs)
        yield client, conn, sub


async def _items(sub: Subscription, count: int, wait: float = 5.0) -> list[SubscriptionItem]:
    return [await asyncio.wait_for(sub.get(), timeout(wait)) for _ in range(count)]


async def _drain(sub: Subscription) -> list[SubscriptionItem]:
    async with asyncio.timeout(timeout(5)):
        return [item async for item in sub]


def _offsets(items: list[SubscriptionItem]) -> list[int]:
    return [item.offset for item in items if isinstance(item, Event)]


async def test_duplicates_are_dropped_and_a_gap_starts_a_fresh_subscription(
    fake: FakeServer,
) -> None:
    async with _subscribed(fake) as (_, conn, sub):
        for offset in (1, 2, 2, 1, 3):
            await conn.event(offset)
        assert _offsets(await _items(sub, 3)) == [1, 2, 3]
        await conn.event(5)  # a gap: 4 is missing
        again = await conn.recv("subscribe")
        assert "since" not in again, "after a gap the SDK subscribes afresh"
        await conn.event(6)  # still the old stream: ignored until the reply
        await conn.subscribed(again, 9)
        await conn.event(10)
        resync, event = await _items(sub, 2)
        assert resync == Resync(ROOM, "gap", 9, EPOCH)
        assert isinstance(event, Event)
        assert event.offset == 10
        assert sub.position == Position(offset=10, epoch=EPOCH)


async def test_an_event_of_another_epoch_starts_the_resync_path(fake: FakeServer) -> None:
    async with _subscribed(fake, offset=3) as (_, conn, sub):
        await conn.event(4, epoch="other")
        again = await conn.recv("subscribe")
        assert "since" not in again
        await conn.subscribed(again, 4)
        assert await _items(sub, 1) == [Resync(ROOM, "epoch_mismatch", 4, EPOCH)]


async def test_join_presence_is_answered_by_an_update_that_lists_this_user(
    fake: FakeServer,
) -> None:
    """Another user's join, broadcast before ours took effect, is not the answer to ours."""
    async with _subscribed(fake) as (_, conn, sub):
        join = asyncio.ensure_future(sub.join_presence())
        assert (await conn.recv("presence"))["action"] == "join"
        alice = {"userId": "alice", "name": "Alice"}
        someone_else = {"users": [alice], "joined": ["alice"], "left": []}
        await conn.send({"type": "presence:update", "room": ROOM, **someone_else})
        await asyncio.sleep(0.1)
        assert not join.done()
        both = [alice, {"userId": "u", "name": "U"}]
        await conn.send(
            {"type": "presence:update", "room": ROOM, "users": both, "joined": ["u"], "left": []}
        )
        assert [u.user_id for u in await asyncio.wait_for(join, timeout(5))] == ["alice", "u"]


async def test_a_server_resync_resubscribes_and_rejoins_presence(fake: FakeServer) -> None:
    async with _subscribed(fake) as (_, conn, sub):
        join = asyncio.ensure_future(sub.join_presence())
        assert (await conn.recv("presence"))["action"] == "join"
        users = [{"userId": "u", "name": "U"}]
        await conn.send(
            {"type": "presence:update", "room": ROOM, "users": users, "joined": ["u"], "left": []}
        )
        assert [u.user_id for u in await asyncio.wait_for(join, timeout(5))] == ["u"]
        await conn.event(1)
        await conn.send({"type": "resync", "room": ROOM, "reason": "continuity_lost"})
        again = await conn.recv("subscribe")
        assert "since" not in again
        await conn.subscribed(again, 7)
        assert (await conn.recv("presence"))["action"] == "join"  # the server ended it too
        await conn.event(8)
        items = await _items(sub, 4)
        assert isinstance(items[0], PresenceUpdate)
        assert _offsets(items) == [1, 8]
        assert items[2] == Resync(ROOM, "continuity_lost", 7, EPOCH)  # before the new stream


async def test_resubscribes_with_since_after_a_drop_and_replays_once(fake: FakeServer) -> None:
    async with _subscribed(fake) as (client, conn, sub):
        await conn.event(1)
        await conn.event(2)
        assert _offsets(await _items(sub, 2)) == [1, 2]
        await conn.close(1011)
        conn2 = await fake.next_connection()
        request = await conn2.recv("subscribe")
        assert request["since"] == {"offset": 2, "epoch": EPOCH}
        await conn2.subscribed(request, 4, recovered=True)
        for offset in (2, 3, 4, 5):  # 2 is replayed by mistake: not delivered twice
            await conn2.event(offset)
        assert _offsets(await _items(sub, 3)) == [3, 4, 5]
        assert client.last_close_code == 1011


async def test_recovered_false_surfaces_one_resync(fake: FakeServer) -> None:
    async with _subscribed(fake) as (_, conn, sub):
        await conn.close(4008)
        conn2 = await fake.next_connection()
        request = await conn2.recv("subscribe")
        assert request["since"] == {"offset": 0, "epoch": EPOCH}
        await conn2.subscribed(request, 1500, recovered=False)
        await conn2.event(1501)
        items = await _items(sub, 2)
        assert items[0] == Resync(ROOM, "not_recovered", 1500, EPOCH)
        assert _offsets(items) == [1501]
        assert sub.position == Position(offset=1501, epoch=EPOCH)


@pytest.mark.parametrize("code", [1003, 1008, 1009])
async def test_client_bug_close_codes_are_fatal(fake: FakeServer, code: int) -> None:
    fake.script = _idle
    client = _client(fake)
    try:
        await client.connect()
        conn = await fake.next_connection()
        sub, _ = await _subscribe(client, conn)
        await conn.close(code)
        with pytest.raises(FatalConnectionError) as raised:
            await _drain(sub)
        assert raised.value.close_code == code
        assert client.state is ConnectionState.CLOSED
        assert client.error is raised.value
        await asyncio.sleep(0.5)
        assert len(fake.connections) == 1, "no reconnect after a client-bug close code"
        with pytest.raises(FatalConnectionError):
            await client.subscribe("project:p2")
    finally:
        await client.aclose()


CONNECTION_LOGGER = "liveboard.client"


class Top(random.Random):
    """Every draw at the top of its range: the delays are their ceilings."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_1012_reconnects_after_a_short_random_restart_delay(fake: FakeServer) -> None:
    fake.script = _idle
    async with _client(fake, rng=Top(), backoff_base=0.1, restart_delay=0.6) as client:
        conn = await fake.next_connection()
        closed_at = time.monotonic()
        await conn.close(1012)
        conn2 = await fake.next_connection()
        waited = conn2.opened_at - closed_at
        assert 0.6 <= waited < 0.6 + timeout(1.0)  # the restart delay alone, no backoff on top
        assert client.last_close_code == 1012


def _reconnect_delays(records: list[logging.LogRecord]) -> list[float]:
    return [
        float(cast(float, cast(tuple[object, ...], record.args)[2]))
        for record in records
        if record.name == CONNECTION_LOGGER and "reconnecting in" in record.msg
    ]


async def test_connects_refused_after_1012_do_not_double_the_delay(
    fake: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """While the restarted server is down its clients retry every ``restart_delay`` at most;
    the exponential backoff comes back once a connection succeeded."""
    caplog.set_level(logging.INFO, logger=CONNECTION_LOGGER)
    fake.script = _idle
    options = {"backoff_base": 0.05, "backoff_cap": 5.0, "restart_delay": 0.1}
    async with _client(fake, rng=Top(), **options):
        conn = await fake.next_connection()
        fake.refuse_with = 503
        await conn.close(1012)
        await wait_until(lambda: len(_reconnect_delays(caplog.records)) >= 6, wait=10)
        assert _reconnect_delays(caplog.records)[:6] == [0.1] * 6  # not 0.05, 0.1, 0.2, 0.4…
        fake.refuse_with = None
        conn = await fake.next_connection()
        caplog.clear()
        fake.refuse_with = 503
        await conn.close(1011)  # not a restart: the usual backoff, from its first step
        await wait_until(lambda: len(_reconnect_delays(caplog.records)) >= 4, wait=10)
        assert _reconnect_delays(caplog.records)[:4] == [0.05, 0.1, 0.2, 0.4]
        fake.refuse_with = None


async def test_4001_asks_the_provider_for_a_new_token(fake: FakeServer) -> None:
    tokens = iter(make_token("u", ttl=3600 + n) for n in range(100))
    calls = 0

    async def provider() -> str:
        nonlocal calls
        calls += 1
        return next(tokens)

    fake.script = _idle
    async with _client(fake, provider) as client:
        conn = await fake.next_connection()
        await conn.close(4001)
        conn2 = await fake.next_connection()
        assert conn2.token != conn.token
        assert calls == 2
        await client.wait_for_state(ConnectionState.CONNECTED)


async def test_4001_with_a_static_token_stops_without_reconnecting(fake: FakeServer) -> None:
    """A fixed token cannot be renewed: after 4001 the client stops at once with a clear error
    rather than reconnecting with a token the server refuses (this fake would accept it)."""
    fake.script = _idle
    client = _client(fake)
    try:
        await client.connect()
        conn = await fake.next_connection()
        sub, _ = await _subscribe(client, conn)
        await conn.close(4001)
        with pytest.raises(FatalConnectionError) as raised:
            await _drain(sub)
        assert raised.value.code == "unauthorized"
        assert raised.value.close_code == 4001
        assert "pass a token provider" in raised.value.message
        assert client.state is ConnectionState.CLOSED
        assert client.error is raised.value
        assert client.last_close_code == 4001
        await asyncio.sleep(0.5)
        assert len(fake.connections) == 1, "no reconnect with a fixed token that expired"
    finally:
        await client.aclose()


async def test_401_with_a_static_token_is_fatal(fake: FakeServer) -> None:
    fake.refuse_with = 401
    client = _client(fake)
    with pytest.raises(FatalConnectionError) as raised:
        async with asyncio.timeout(timeout(5)):
            await client.connect()
    assert raised.value.code == "unauthorized"
    assert client.state is ConnectionState.CLOSED
    await client.aclose()


async def test_503_and_429_at_upgrade_are_retried(fake: FakeServer) -> None:
    fake.refuse_with = 503
    fake.script = _idle
    client = _client(fake)
    try:
        connecting = asyncio.ensure_future(client.connect())
        await asyncio.sleep(0.5)
        assert not connecting.done()
        assert client.state is ConnectionState.CONNECTING
        fake.refuse_with = None
        await asyncio.wait_for(connecting, timeout(5))
    finally:
        await client.aclose()


async def test_a_503_with_retry_after_waits_that_long_plus_jitter(
    fake: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A server busy with a storm says when to come back: each refused attempt waits
    ``Retry-After`` plus ``uniform(0, restart_delay)`` (here its top), inside a restart window
    too, instead of the restart pace or the backoff; without the header, the backoff."""
    caplog.set_level(logging.INFO, logger=CONNECTION_LOGGER)
    fake.script = _idle
    options = {"backoff_base": 0.05, "backoff_cap": 5.0, "restart_delay": 0.1}
    async with _client(fake, rng=Top(), **options):
        conn = await fake.next_connection()
        fake.refuse_with, fake.retry_after = 503, "1"
        closed_at = time.monotonic()
        await conn.close(1012)
        await wait_until(lambda: len(_reconnect_delays(caplog.records)) >= 3, wait=10)
        fake.refuse_with = None
        conn = await fake.next_connection()
        # The 1012's restart delay, then twice Retry-After (1 s) plus the jitter's top.
        assert _reconnect_delays(caplog.records)[:3] == [0.1, 1.1, 1.1]
        assert conn.opened_at - closed_at >= 0.1 + 1.1 + 1.1
        caplog.clear()
        fake.refuse_with, fake.retry_after = 429, None
        await conn.close(1011)
        await wait_until(lambda: len(_reconnect_delays(caplog.records)) >= 3, wait=10)
        assert _reconnect_delays(caplog.records)[:3] == [0.05, 0.1, 0.2]
        fake.refuse_with = None


async def test_a_server_that_stops_answering_pings_is_dropped(fake: FakeServer) -> None:
    fake.script = _idle
    async with _client(fake, heartbeat=0.2, ping_timeout=0.3) as client:
        conn = await fake.next_connection()
        assert await client.ping() < 1.0
        conn.answer_pings = False
        silent_at = time.monotonic()
        await fake.next_connection()
        assert time.monotonic() - silent_at < 0.2 + 0.3 + timeout(1.5)
        assert client.connections == 2
        assert client.last_close_code is None  # dropped by the client, no close frame


async def test_error_replies_raise_typed_errors(fake: FakeServer) -> None:
    async def refuse(conn: FakeConnection) -> None:
        while True:
            request = await conn.recv()
            await conn.send(
                {"type": "error", "code": "forbidden", "message": "no", "id": request.get("id")}
            )

    fake.script = refuse
    async with _client(fake) as client:
        with pytest.raises(LiveboardClientError) as raised:
            await client.subscribe(ROOM)
        assert (raised.value.code, raised.value.message) == ("forbidden", "no")
        assert ROOM not in client.subscriptions
        with pytest.raises(LiveboardClientError, match="invalid_room"):
            await client.subscribe("nope")


async def test_server_side_unsubscribe_is_a_terminal_revoked(fake: FakeServer) -> None:
    async with _subscribed(fake) as (client, conn, sub):
        revoked: list[Revoked] = []
        sub.on_revoked(revoked.append)
        await conn.event(1)
        await conn.send({"type": "unsubscribed", "room": ROOM, "reason": "forbidden"})
        items = await _drain(sub)
        assert _offsets(items) == [1]
        assert items[-1] == Revoked(ROOM, "forbidden")
        assert revoked == [Revoked(ROOM, "forbidden")]
        assert ROOM not in client.subscriptions


async def test_a_refused_resubscribe_after_reconnect_is_revoked(fake: FakeServer) -> None:
    async with _subscribed(fake) as (_, conn, sub):
        await conn.close(1011)
        conn2 = await fake.next_connection()
        request = await conn2.recv("subscribe")
        await conn2.send(
            {"type": "error", "code": "forbidden", "message": "gone", "id": request["id"]}
        )
        assert await _items(sub, 1) == [Revoked(ROOM, "forbidden")]
        assert sub.closed


async def test_callbacks_sync_and_async_run_in_order(fake: FakeServer) -> None:
    async with _subscribed(fake, buffer=False) as (_, conn, sub):
        seen: list[tuple[str, int]] = []
        done = asyncio.Event()

        def sync_cb(event: Event) -> None:
            seen.append(("sync", event.offset))

        async def async_cb(event: Event) -> None:
            await asyncio.sleep(0.01 * (4 - event.offset))  # later events wait less
            seen.append(("async", event.offset))
            if event.offset == 3:
                done.set()

        def failing(event: Event) -> None:
            raise RuntimeError("a broken callback does not stop the stream")

        sub.on_event(failing)
        sub.on_event(sync_cb)
        sub.on_event(async_cb)
        for offset in (1, 2, 3):
            await conn.event(offset)
        await asyncio.wait_for(done.wait(), timeout(5))
        assert [o for kind, o in seen if kind == "sync"] == [1, 2, 3]
        assert [o for kind, o in seen if kind == "async"] == [1, 2, 3]
        with pytest.raises(RuntimeError, match="buffer=False"):
            await sub.get()


async def test_state_changes_are_reported(fake: FakeServer) -> None:
    fake.script = _idle
    states: list[ConnectionState] = []
    client = _client(fake)
    client.on_state_change(states.append)
    await client.connect()
    conn = await fake.next_connection()
    await conn.close(1011)
    await fake.next_connection()
    await client.wait_for_state(ConnectionState.CONNECTED)
    await client.aclose()
    assert states == [
        ConnectionState.CONNECTING,
        ConnectionState.CONNECTED,
        ConnectionState.RECONNECTING,
        ConnectionState.CONNECTED,
        ConnectionState.CLOSED,
    ]
