"""An instance's Redis connections: what an unreachable Redis raises, and how pools are made.

An instance talks to Redis over three sets of connections, all made by ``connection_pool`` from
the one ``LIVEBOARD_REDIS_URL`` and the same defaults (``CONNECT_TIMEOUT``, ``SOCKET_TIMEOUT``;
the URL's own options win over them, and a caller's ``fixed`` options over the URL):

* the broker's publisher pool (``brokers.redis_publisher``): the PUBLISHes of events and of
  presence signals. A REST request waits on it, at most ``PUBLISH_TIMEOUT``;
* the broker's subscriber connection (``brokers.redis``), one at a time, made from a pool that
  is only its factory; it speaks RESP2, because the broker reads pub/sub replies itself;
* presence's pool (``presence_redis``): its batched writes, its reads of rooms, its heartbeats.

Presence does not share the publisher's pool, on purpose. Its pipelines can be long (every
active room re-read every 2 s, all of an instance's entries written again after a Redis
restart), and a publish that waits ``PUBLISH_TIMEOUT`` for a free connection is dropped and marks
the broker down. The other way round, presence converges within the contract's 1 s (CONTRACT
§5.6), which a burst of publishes holding every connection would delay. With a pool each, each
side's bound is its own, and each closes its own pool in its ``aclose``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import parse_url
from redis.exceptions import RedisError

#: What an unreachable or misbehaving Redis raises (``asyncio.TimeoutError`` is ``TimeoutError``).
REDIS_ERRORS: Final = (RedisError, OSError, TimeoutError)

# Timeouts (seconds); a URL may set its own (``?socket_timeout=…``).
CONNECT_TIMEOUT: Final = 1.0
SOCKET_TIMEOUT: Final = 2.0


def connection_pool(
    redis_url: str,
    *,
    max_connections: int,
    timeout: float,
    client_name: str | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> BlockingConnectionPool:
    """A pool of at most ``max_connections`` to ``redis_url``.

    Blocking: a caller finding every connection in use waits for one, at most ``timeout``
    seconds, instead of failing at once (then ``redis.exceptions.ConnectionError``). Options
    come from the defaults here, then the URL's, then ``fixed``: what the caller's code relies
    on (a protocol, a retry policy), which no URL may change. ``client_name`` names the
    connections in ``CLIENT LIST`` (none if None)."""
    defaults: dict[str, Any] = {
        "max_connections": max_connections,
        "timeout": timeout,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
    }
    if client_name is not None:
        defaults["client_name"] = client_name
    return BlockingConnectionPool(**{**defaults, **parse_url(redis_url), **(fixed or {})})


def describe(exc: BaseException) -> str:
    """``exc`` for a log line: its type, and its message if it has one."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
