"""``LIVEBOARD_REDIS_ADDRESS_MAP``: the parser, the remap function, the setting and how
``check-config`` shows it; and that the cluster clients are given the map.

No Redis needed: a ``RedisCluster`` client connects on its first command only. That every
connection of an instance goes through the mapped addresses is shown by the partition tests
(``tests/integration/test_presence_outages.py``, ``test_cluster_revocation.py``): each node's
proxy must have carried connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

import pytest
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from liveboard.config import load_settings
from liveboard.errors import ConfigError
from liveboard.realtime.brokers.redis_pools import cluster_client, mapped_connection_class
from liveboard.redis_address_map import AddressMapping, address_remap, parse_address_map
from liveboard.settings_report import effective_settings

CLUSTER = "redis+cluster://10.0.0.6:6379"


def test_a_map_is_parsed_item_by_item() -> None:
    raw = (
        " 10.0.0.6:6379=203.0.113.6:16379 , redis-1:6380 = 127.0.0.1:7001,[fd00::7]:6379=[::1]:7002"
    )
    assert parse_address_map(raw) == (
        AddressMapping("10.0.0.6", 6379, "203.0.113.6", 16379),
        AddressMapping("redis-1", 6380, "127.0.0.1", 7001),
        AddressMapping("fd00::7", 6379, "::1", 7002),
    )


def test_a_mapping_prints_as_its_item_normalised() -> None:
    (v4, v6) = parse_address_map("10.0.0.6:6379 = 203.0.113.6:16379,[fd00::7]:6379=[::1]:7002")
    assert str(v4) == "10.0.0.6:6379=203.0.113.6:16379"
    assert str(v6) == "[fd00::7]:6379=[::1]:7002"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("10.0.0.6:6379", "item 1 ('10.0.0.6:6379') must be HOST:PORT=HOST:PORT"),
        ("a:1=b:2=c:3", "item 1 ('a:1=b:2=c:3') must be"),
        ("a:1=b:2,", "item 2 is empty"),
        ("a:1=b:2,,c:3=d:4", "item 2 is empty"),
        ("", "item 1 is empty"),
        ("a:1=b", "item 1 ('a:1=b') must be"),
        ("a=b:2", "must be"),
        (":1=b:2", "must be"),
        ("a:1=b:0", "must be"),
        ("a:1=b:65536", "must be"),
        ("a:1=b:-1", "must be"),
        ("a:1=b:+2", "must be"),
        ("a:1=b:²", "must be"),
        ("a:x=b:2", "must be"),
        ("fd00::7:6379=b:2", "must be"),  # IPv6 without brackets: which part is the port?
        ("[]:1=b:2", "must be"),
        ("a b:1=c:2", "must be"),
        ("a:1=b:2,a:1=c:3", "a:1 is mapped twice (item 2)"),
    ],
)
def test_anything_else_is_refused_naming_the_item(raw: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_address_map(raw)


def test_the_remap_maps_named_addresses_once_and_leaves_the_others() -> None:
    remap = address_remap(parse_address_map("a:1=b:2,b:2=c:3"))
    assert remap(("a", 1)) == ("b", 2)  # not on to c:3: applied once
    assert remap(("b", 2)) == ("c", 3)
    assert remap(("a", 2)) == ("a", 2)
    assert address_remap(())(("a", 1)) == ("a", 1)


def test_the_setting_is_parsed_and_a_bad_value_is_one_config_error() -> None:
    env = {"LIVEBOARD_REDIS_URL": CLUSTER}
    assert load_settings(env).redis_address_map == ()
    loaded = load_settings({**env, "LIVEBOARD_REDIS_ADDRESS_MAP": "10.0.0.6:6379=127.0.0.1:7000"})
    assert loaded.redis_address_map == (AddressMapping("10.0.0.6", 6379, "127.0.0.1", 7000),)
    with pytest.raises(ConfigError) as caught:
        load_settings({**env, "LIVEBOARD_REDIS_ADDRESS_MAP": "10.0.0.6:6379"})
    message = str(caught.value)
    assert message.startswith("LIVEBOARD_REDIS_ADDRESS_MAP: item 1 ('10.0.0.6:6379') must be")
    assert "\n" not in message


@pytest.mark.parametrize("url", [None, "redis://10.0.0.6:6379/0"])
def test_a_map_without_a_cluster_url_is_refused(url: str | None) -> None:
    env = {"LIVEBOARD_REDIS_ADDRESS_MAP": "10.0.0.6:6379=127.0.0.1:7000"}
    if url is not None:
        env["LIVEBOARD_REDIS_URL"] = url
    with pytest.raises(ConfigError, match="applies to a Redis Cluster only"):
        load_settings(env)


def test_check_config_shows_the_map_as_set() -> None:
    env = {
        "LIVEBOARD_REDIS_URL": CLUSTER,
        "LIVEBOARD_REDIS_ADDRESS_MAP": "10.0.0.6:6379 = 127.0.0.1:7000,10.0.0.7:6379=h:7001",
    }
    lines = effective_settings(load_settings(env))
    assert "LIVEBOARD_REDIS_ADDRESS_MAP=10.0.0.6:6379=127.0.0.1:7000,10.0.0.7:6379=h:7001" in lines
    assert "LIVEBOARD_REDIS_ADDRESS_MAP=  # default" in effective_settings(load_settings({}))


async def test_a_mapped_connection_dials_the_mapped_address_and_keeps_the_announced_one() -> None:
    accepted: list[int] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer.get_extra_info("sockname")[1])
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        # 192.0.2.1 (TEST-NET-1) is never reachable: only the map gets this connection anywhere.
        mapped = mapped_connection_class(
            Connection, parse_address_map(f"192.0.2.1:6379=127.0.0.1:{port}")
        )
        conn = mapped(host="192.0.2.1", port=6379, socket_connect_timeout=2.0)
        with contextlib.suppress(ConnectionError, RedisConnectionError):
            await conn.connect()  # type: ignore[no-untyped-call]  # (closed at once: it fails)
        await conn.disconnect()
        assert accepted == [port]
        assert (conn.host, conn.port) == ("192.0.2.1", 6379)  # its name: the announced address
    finally:
        server.close()
        await server.wait_closed()
    assert mapped_connection_class(Connection, ()) is Connection
    assert issubclass(
        mapped_connection_class(SSLConnection, parse_address_map("a:1=b:2")), SSLConnection
    )


async def test_a_cluster_client_makes_every_node_with_the_mapped_connection_class() -> None:
    """Startup nodes, and the nodes redis-py adds later (from CLUSTER SLOTS, or from a MOVED it
    follows), are made from the options of its nodes manager: all get the mapped class."""
    mappings = parse_address_map("10.0.0.6:6379=127.0.0.1:7000")
    client = cluster_client(CLUSTER + ",10.0.0.7:6379", max_connections=2, address_map=mappings)
    try:
        manager = client.nodes_manager
        mapped = manager.connection_kwargs["connection_class"]
        assert mapped.__name__ == "MappedConnection"
        assert issubclass(mapped, Connection)
        startup = {name: node.connection_class for name, node in manager.startup_nodes.items()}
        assert startup == {"10.0.0.6:6379": mapped, "10.0.0.7:6379": mapped}
        assert manager.address_remap is None  # names stay the announced addresses
    finally:
        await client.aclose()
    plain = cluster_client(CLUSTER, max_connections=2)
    try:
        assert plain.nodes_manager.connection_kwargs["connection_class"] is Connection
    finally:
        await plain.aclose()
