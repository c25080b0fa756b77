"""An instance's Redis connections: what an unreachable Redis raises, and how pools are made.

An instance talks to Redis over three sets of connections, all made by ``connection_pool`` from
the one ``LIVEBOARD_REDIS_URL`` and the same defaults (``CONNECT_TIMEOUT``, ``SOCKET_TIMEOUT``;
the URL's own options win over them, and a caller's ``fixed`` options over the URL):

* the broker's publisher pool (``brokers.redis_publisher``): the PUBLISHes of events and of
  presence signals. A REST request waits on it, at most ``PUBLISH_TIMEOUT``;
* the broker's subscriber connection (``brokers.redis``), one at a time, made from a pool that
  is only its factory; it speaks RESP2, because the broker reads pub/sub replies itself;
* presence's pool (``presence_redis``): its batched writes, its reads of rooms, its heartbeats.

A Redis Cluster (``redis+cluster://host:port[,host:port…]``, ``rediss+cluster://`` for TLS)
gives the same three, per node: the publisher and presence each get a ``RedisCluster`` client
(``cluster_client``: a pool per node, commands routed by slot), and the broker (its own
``brokers.redis_cluster``) one subscriber connection per master, made from
``cluster_connection_options``. ``LIVEBOARD_REDIS_ADDRESS_MAP`` (``liveboard.redis_address_map``)
applies to all of them, through one connection class (``mapped_connection_class``): every node
keeps the address it announces as its identity (slots maps, ``MOVED`` and ``ASK`` replies name
it), and each connection to it dials the mapped address. (redis-py's own ``address_remap``
renames the nodes of ``CLUSTER SLOTS`` only: a ``MOVED`` then names a node it does not know,
which it adds unmapped. redis-py 8.1 sends a fresh client's first command to the default node,
so that happens at every start.)

Presence does not share the publisher's pool, on purpose. Its pipelines can be long (every
active room re-read every 2 s, all of an instance's entries written again after a Redis
restart), and a publish that waits ``PUBLISH_TIMEOUT`` for a free connection is dropped and marks
the broker down. The other way round, presence converges within the contract's 1 s (CONTRACT
§5.6), which a burst of publishes holding every connection would delay. With a pool each, each
side's bound is its own, and each closes its own pool in its ``aclose``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import unquote

from redis.asyncio import BlockingConnectionPool
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, parse_url
from redis.exceptions import RedisClusterException, RedisError

from liveboard.redis_address_map import AddressMapping, address_remap

#: What an unreachable or misbehaving Redis raises (``asyncio.TimeoutError`` is ``TimeoutError``;
#: a cluster client that reaches no node raises ``RedisClusterException``, not a ``RedisError``).
REDIS_ERRORS: Final = (RedisError, RedisClusterException, OSError, TimeoutError)

CLUSTER_SCHEMES: Final = ("redis+cluster://", "rediss+cluster://")

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
    socket_timeout: float | None = SOCKET_TIMEOUT,
) -> BlockingConnectionPool:
    """A pool of at most ``max_connections`` to ``redis_url``.

    Blocking: a caller finding every connection in use waits for one, at most ``timeout``
    seconds, instead of failing at once (then ``redis.exceptions.ConnectionError``). Options
    come from the defaults here, then the URL's, then ``fixed``: what the caller's code relies
    on (a protocol, a retry policy), which no URL may change. ``client_name`` names the
    connections in ``CLIENT LIST`` (none if None). ``socket_timeout``: the default of the
    connections' read and write timeout (None: none, for a caller bounding each command
    itself)."""
    defaults: dict[str, Any] = {
        "max_connections": max_connections,
        "timeout": timeout,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": socket_timeout,
    }
    if client_name is not None:
        defaults["client_name"] = client_name
    return BlockingConnectionPool(**{**defaults, **parse_url(redis_url), **(fixed or {})})


def describe(exc: BaseException) -> str:
    """``exc`` for a log line: its type, and its message if it has one."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def is_cluster_url(redis_url: str) -> bool:
    """Whether ``redis_url`` names a Redis Cluster (``redis+cluster://``)."""
    return redis_url.startswith(CLUSTER_SCHEMES)


def parse_cluster_url(redis_url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The startup nodes of ``redis+cluster://[user:password@]host:port[,host:port…][?opts]``
    and the connection options every node shares (credentials, TLS, the query's options, as
    ``redis://`` URLs take them). A database number other than 0 is refused: a cluster has one.

    Raises ``ValueError`` for a URL that names no node or a node without a valid port."""
    scheme, _, rest = redis_url.partition("://")
    if scheme not in ("redis+cluster", "rediss+cluster"):
        raise ValueError(f"not a Redis Cluster URL: {redis_url!r}")
    netloc, sep, tail = rest.partition("/")
    if not sep:
        netloc, sep, query = rest.partition("?")
        tail = sep + query
    userinfo, at, hosts = netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"a Redis Cluster node must be host:port, got {item!r}")
        nodes.append((unquote(host.strip("[]")), int(port)))
    plain = "rediss" if scheme == "rediss+cluster" else "redis"
    first = f"{nodes[0][0]}:{nodes[0][1]}"
    options: dict[str, Any] = dict(parse_url(f"{plain}://{userinfo}{at}{first}/{tail}"))
    if int(options.pop("db", 0) or 0) != 0:
        raise ValueError("a Redis Cluster has database 0 only")
    for key in ("host", "port", "connection_class"):
        options.pop(key, None)
    if plain == "rediss":
        options["ssl"] = True
    return nodes, options


def cluster_connection_options(
    redis_url: str, *, client_name: str | None = None, fixed: Mapping[str, Any] | None = None
) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The startup nodes of ``redis_url`` and the options of a single connection to one of its
    nodes (``redis.asyncio.connection.Connection``): the defaults here, the URL's, ``fixed``."""
    nodes, options = parse_cluster_url(redis_url)
    defaults: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
    }
    if client_name is not None:
        defaults["client_name"] = client_name
    options.pop("ssl", None)  # a plain Connection has no such option (TLS: see the broker)
    return nodes, {**defaults, **options, **(fixed or {})}


def cluster_client(
    redis_url: str,
    *,
    max_connections: int,
    client_name: str | None = None,
    fixed: Mapping[str, Any] | None = None,
    address_map: Sequence[AddressMapping] = (),
) -> RedisCluster:
    """A ``RedisCluster`` client of ``redis_url`` (``redis+cluster://``), at most
    ``max_connections`` per node, with the same timeouts as ``connection_pool``. It learns the
    slots from any reachable startup node and follows MOVED and failovers by itself. Every node
    address, the URL's and the announced ones, is mapped through ``address_map`` first."""
    nodes, options = parse_cluster_url(redis_url)
    defaults: dict[str, Any] = {
        "max_connections": max_connections,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
    }
    if client_name is not None:
        defaults["client_name"] = client_name
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        **{**defaults, **options, **(fixed or {})},
    )
    if address_map:
        # RedisCluster takes no connection class: it makes every node (the startup ones now,
        # the others as it discovers them) with the class in its connection options, the
        # dict its nodes manager shares.
        kwargs = client.nodes_manager.connection_kwargs
        mapped = mapped_connection_class(kwargs["connection_class"], address_map)
        kwargs["connection_class"] = mapped
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = mapped
    return client


def mapped_connection_class(
    base: type[Connection], address_map: Sequence[AddressMapping]
) -> type[Connection]:
    """``base`` (a TCP or TLS connection), dialling the address ``address_map`` maps its
    ``host:port`` to (the address itself when the map does not name it). ``host`` and ``port``
    stay the announced ones: the node's name, and what error messages say. With TLS, the
    certificate is checked against the mapped host, as with redis-py's ``address_remap``."""
    if not address_map:
        return base
    remap = address_remap(address_map)

    def _connection_arguments(self: Connection) -> Mapping[str, Any]:
        arguments = dict(base._connection_arguments(self))
        arguments["host"], arguments["port"] = remap((self.host, self.port))
        return arguments

    return type(f"Mapped{base.__name__}", (base,), {"_connection_arguments": _connection_arguments})
