"""The shared Redis subscriber connection (``brokers.redis_subscriber``) against a real Redis,
on both event loops the code meets: asyncio's (the tests) and uvloop's (the server), whose
transports differ (uvloop's are not ``asyncio.Transport`` subclasses)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import hiredis
import pytest
import uvloop
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from liveboard.realtime.brokers.redis_subscriber import SubscriberConnection, dispatch, pack
from tests.support.redis_server import RedisServer
from tests.support.timing import timeout

Runner = Callable[[Coroutine[Any, Any, None]], None]
RUNNERS: dict[str, Runner] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture(params=sorted(RUNNERS))
def run(request: pytest.FixtureRequest) -> Runner:
    return RUNNERS[request.param]


async def _open(
    server: RedisServer,
    replies: list[list[object]],
    *,
    ping_interval: float = 1.0,
    ping_timeout: float = 2.0,
) -> SubscriberConnection:
    return await SubscriberConnection.open(
        Connection(port=server.port, protocol=2, client_name="test-sub"),
        replies.append,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
    )


async def _until(predicate: Callable[[], bool], within: float = 2.0) -> None:
    """Poll ``predicate`` until true; fail after ``within`` seconds (scaled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout(within)
    while not predicate():
        assert loop.time() < deadline, f"not true within {within} s"
        await asyncio.sleep(0.01)


def test_pack_is_resp() -> None:
    assert pack("SUBSCRIBE", b"a\r\nb") == b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\na\r\nb\r\n"


def test_dispatch_delivers_in_bounded_batches_even_when_a_reply_fails() -> None:
    delivered: list[list[int]] = []

    def on_reply(reply: object, events: list[int]) -> None:
        if reply == "bad":
            raise ValueError(reply)
        assert isinstance(reply, int)
        events.append(reply)

    dispatch([1, 2, 3, 4, 5], on_reply, delivered.append, 2)
    assert delivered == [[1, 2], [3, 4], [5]]
    delivered.clear()
    with pytest.raises(ValueError, match="bad"):
        dispatch([1, 2, 3, "bad", 4], on_reply, delivered.append, 2)
    assert delivered == [[1, 2], [3]]  # what came before the failure still went out


def test_every_reply_of_a_read_comes_in_one_call(redis_server: RedisServer, run: Runner) -> None:
    async def scenario() -> None:
        calls: list[list[object]] = []
        sub = await _open(redis_server, calls)
        publisher = Redis(port=redis_server.port)
        try:
            sub.send(("SUBSCRIBE", b"ch"))
            await _until(lambda: [b"subscribe", b"ch", 1] in [r for c in calls for r in c])
            calls.clear()
            async with publisher.pipeline(transaction=False) as pipe:
                for n in range(200):
                    pipe.publish("ch", str(n))
                await pipe.execute()
            await _until(lambda: sum(len(c) for c in calls) == 200)
            payloads = [r[2] for c in calls for r in c if isinstance(r, list)]
            assert payloads == [str(n).encode() for n in range(200)]
            # Published in one round trip, they arrive in few socket reads: one call per read.
            assert len(calls) < 20, len(calls)
        finally:
            sub.close()
            await publisher.aclose()
        with pytest.raises(RedisConnectionError):
            await sub.wait_closed()
        with pytest.raises(RedisConnectionError):
            sub.send(("PING",))

    run(scenario())


def test_an_idle_link_is_pinged_and_a_frozen_redis_ends_it(
    redis_server: RedisServer, run: Runner
) -> None:
    async def scenario() -> None:
        calls: list[list[object]] = []
        sub = await _open(redis_server, calls, ping_interval=0.2, ping_timeout=0.4)
        try:
            await _until(lambda: [b"PONG"] in calls)  # idle: PINGed, and the answer read
            await asyncio.to_thread(redis_server.pause)
            started = asyncio.get_running_loop().time()
            with pytest.raises(RedisConnectionError, match="did not answer PING"):
                async with asyncio.timeout(timeout(3.0)):
                    await sub.wait_closed()
            # At most an idle interval, then the PING's timeout (and scheduling slack).
            assert asyncio.get_running_loop().time() - started < timeout(0.2 + 0.4 + 0.4)
            assert not sub.is_connected
        finally:
            await asyncio.to_thread(redis_server.resume)
            sub.close()

    run(scenario())


def test_a_link_closed_by_redis_ends_the_connection(redis_server: RedisServer, run: Runner) -> None:
    async def scenario() -> None:
        sub = await _open(redis_server, [])
        admin = Redis(port=redis_server.port)
        try:
            assert await admin.client_kill_filter(_type="normal") >= 1
        finally:
            await admin.aclose()
        with pytest.raises(RedisConnectionError):
            async with asyncio.timeout(timeout(2.0)):
                await sub.wait_closed()
        assert not sub.is_connected

    run(scenario())


def test_an_owner_that_raises_ends_the_connection_with_its_error(
    redis_server: RedisServer, run: Runner
) -> None:
    async def scenario() -> None:
        def on_replies(replies: list[object]) -> None:
            if any(isinstance(r, hiredis.ReplyError) for r in replies):
                raise LookupError("an error reply")

        sub = await SubscriberConnection.open(
            Connection(port=redis_server.port, protocol=2),
            on_replies,
            ping_interval=1.0,
            ping_timeout=2.0,
        )
        sub.send(("NO-SUCH-COMMAND",))
        with pytest.raises(LookupError, match="an error reply"):
            async with asyncio.timeout(timeout(2.0)):
                await sub.wait_closed()
        assert not sub.is_connected

    run(scenario())
