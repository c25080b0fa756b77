"""Single commands on a kept connection (``brokers.redis_direct``) against a real Redis: the
replies, the hand-over to the client while the kept connection is busy, a Redis restart, an
error reply and a cancelled command, and what the pool holds afterwards."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from liveboard.realtime.brokers.redis_direct import DirectCommands
from liveboard.realtime.brokers.redis_pools import connection_pool
from tests.support.redis_server import RedisServer


def _direct(server: RedisServer) -> tuple[Redis, DirectCommands]:
    pool = connection_pool(server.url, max_connections=4, timeout=1.0, socket_timeout=None)
    client = Redis(connection_pool=pool)
    return client, DirectCommands(client, pool)


async def _in_use(client: Redis) -> int:
    return len(client.connection_pool._in_use_connections)


async def test_commands_reuse_one_kept_connection(redis_server: RedisServer) -> None:
    client, direct = _direct(redis_server)
    try:
        assert await direct.execute("SET", "k", "v") is True
        assert await direct.execute("GET", "k") == b"v"
        assert await direct.execute("PUBLISH", "channel", "payload") == 0
        assert await _in_use(client) == 1  # the kept one, checked out once
        assert int((await client.info("clients"))["connected_clients"]) == 2  # it and info's
    finally:
        await direct.aclose()
        await client.aclose(close_connection_pool=True)


async def test_a_command_while_the_kept_connection_is_busy_goes_through_the_client(
    redis_server: RedisServer,
) -> None:
    client, direct = _direct(redis_server)
    try:
        await direct.execute("DEL", "list")
        blocked = asyncio.ensure_future(direct.execute("BLPOP", "list", "5"))
        await asyncio.sleep(0.05)
        assert await direct.execute("RPUSH", "list", "x") == 1  # not queued behind BLPOP
        assert await asyncio.wait_for(blocked, 5) == (b"list", b"x")
        assert await direct.execute("PING") is True
        assert await _in_use(client) == 1
    finally:
        await direct.aclose()
        await client.aclose(close_connection_pool=True)


async def test_an_error_reply_raises_and_keeps_the_connection_in_step(
    redis_server: RedisServer,
) -> None:
    client, direct = _direct(redis_server)
    try:
        await direct.execute("SET", "text", "v")
        with pytest.raises(ResponseError):
            await direct.execute("INCR", "text")
        assert await direct.execute("GET", "text") == b"v"
        assert await _in_use(client) == 1
    finally:
        await direct.aclose()
        await client.aclose(close_connection_pool=True)


async def test_after_a_redis_restart_the_command_is_sent_once_more_on_a_fresh_connection(
    redis_server: RedisServer,
) -> None:
    client, direct = _direct(redis_server)
    try:
        assert await direct.execute("PING") is True
        redis_server.restart()  # the kept connection is now dead
        assert await direct.execute("SET", "after", "1") is True
        assert await direct.execute("GET", "after") == b"1"
        assert await _in_use(client) == 1
    finally:
        await direct.aclose()
        await client.aclose(close_connection_pool=True)


async def test_a_cancelled_command_leaves_no_reply_for_the_next(
    redis_server: RedisServer,
) -> None:
    client, direct = _direct(redis_server)
    try:
        await direct.execute("DEL", "queue")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await direct.execute("BLPOP", "queue", "1")
        assert await _in_use(client) == 0  # given back (disconnected by redis-py)
        await direct.execute("RPUSH", "queue", "a")
        # The BLPOP's connection is gone, so nothing took the element and no late reply is
        # read as this command's.
        assert await direct.execute("LRANGE", "queue", "0", "-1") == [b"a"]
    finally:
        await direct.aclose()
        await client.aclose(close_connection_pool=True)


async def test_aclose_gives_the_kept_connection_back(redis_server: RedisServer) -> None:
    client, direct = _direct(redis_server)
    try:
        await direct.execute("PING")
        await direct.aclose()
        assert await _in_use(client) == 0
        assert await direct.execute("PING") is True  # through the client once closed
    finally:
        await client.aclose(close_connection_pool=True)
