"""``brokers.redis_pools.connection_pool``: liveboard's defaults, then the URL's, then fixed ones.

No Redis is needed: a pool opens no connection until one is asked for.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from liveboard.realtime.brokers.redis_pools import (
    CONNECT_TIMEOUT,
    SOCKET_TIMEOUT,
    connection_pool,
)

URL = "redis://127.0.0.1:6399/2"


def test_the_defaults_apply_when_the_url_says_nothing() -> None:
    pool = connection_pool(URL, max_connections=8, timeout=2.0, client_name="liveboard:i:pub")
    assert (pool.max_connections, pool.timeout) == (8, 2.0)
    kwargs = pool.connection_kwargs
    assert kwargs["socket_connect_timeout"] == CONNECT_TIMEOUT
    assert kwargs["socket_timeout"] == SOCKET_TIMEOUT
    assert kwargs["client_name"] == "liveboard:i:pub"
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6399, 2)


def test_the_url_wins_over_the_defaults_and_fixed_options_over_the_url() -> None:
    url = URL + "?socket_timeout=5&max_connections=3&timeout=4&client_name=mine&protocol=3"
    fixed = {"protocol": 2, "retry": Retry(NoBackoff(), 1)}
    pool = connection_pool(url, max_connections=16, timeout=1.0, client_name="x", fixed=fixed)
    assert (pool.max_connections, pool.timeout) == (3, 4.0)
    kwargs = pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["client_name"]) == (5.0, "mine")
    assert kwargs["protocol"] == 2
    assert kwargs["retry"].get_retries() == 1


def test_presences_pool_has_the_options_from_url_gave_it() -> None:
    # What presence_redis built before the factory, with ``from_url``: the same options.
    url = URL + "?socket_timeout=5"
    before = BlockingConnectionPool.from_url(
        url, max_connections=8, timeout=2.0, socket_connect_timeout=1.0, socket_timeout=2.0
    )
    after = connection_pool(url, max_connections=8, timeout=2.0)
    assert (after.max_connections, after.timeout) == (before.max_connections, before.timeout)
    assert after.connection_kwargs.keys() == before.connection_kwargs.keys()
    assert _plain(after.connection_kwargs) == _plain(before.connection_kwargs)
    assert after.connection_class is before.connection_class


def _plain(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The options that are values (each pool has its own helper objects: not comparable)."""
    return {k: v for k, v in kwargs.items() if v is None or isinstance(v, str | int | float)}


def test_the_publishers_connections_have_no_socket_timeout_unless_the_url_sets_one() -> None:
    from liveboard.realtime.brokers.redis_publisher import RedisPublisher

    def socket_timeout(url: str) -> Any:
        publisher = RedisPublisher(url, instance_id="i", on_change=lambda _reason: None)
        client = publisher._redis
        assert isinstance(client, Redis)
        return client.connection_pool.connection_kwargs["socket_timeout"]

    assert socket_timeout(URL) is None  # every command is bounded by PUBLISH_TIMEOUT instead
    assert socket_timeout(URL + "?socket_timeout=0.5") == 0.5
    pool = connection_pool(URL, max_connections=1, timeout=1.0, socket_timeout=None)
    assert pool.connection_kwargs["socket_timeout"] is None
