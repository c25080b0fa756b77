"""The pure parts of the Redis Cluster broker: its URL, its channel and key names, the slots map.

No Redis needed. What runs against a real cluster is in
``tests/integration/test_redis_cluster.py``.
"""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from liveboard.config import load_settings
from liveboard.errors import ConfigError
from liveboard.realtime.brokers.redis_pools import is_cluster_url, parse_cluster_url
from liveboard.realtime.brokers.redis_publisher import channel_of, cluster_channel_of, room_of
from liveboard.realtime.brokers.redis_slots import SlotMap, ssubscribe_commands
from liveboard.realtime.presence_layout import key_of


def test_a_cluster_url_names_its_nodes_and_their_shared_options() -> None:
    nodes, options = parse_cluster_url(
        "redis+cluster://user:p%40ss@10.0.0.6:6379,10.0.0.7:6380/0?socket_timeout=3"
    )
    assert nodes == [("10.0.0.6", 6379), ("10.0.0.7", 6380)]
    assert options == {"username": "user", "password": "p@ss", "socket_timeout": 3.0}
    nodes, options = parse_cluster_url("rediss+cluster://redis.internal:7000")
    assert nodes == [("redis.internal", 7000)]
    assert options["ssl"] is True
    assert is_cluster_url("redis+cluster://h:1")
    assert not is_cluster_url("redis://h:1/0")


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://",
        "redis+cluster://host",
        "redis+cluster://host:0",
        "redis+cluster://host:6379,other",
        "redis+cluster://host:6379/2",
        "redis://host:6379",
    ],
)
def test_a_wrong_cluster_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_cluster_url(url)


def test_the_settings_accept_a_cluster_url_and_refuse_a_wrong_one() -> None:
    url = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
    assert load_settings({"LIVEBOARD_REDIS_URL": url}).redis_url == url
    with pytest.raises(ConfigError, match="host:port"):
        load_settings({"LIVEBOARD_REDIS_URL": "redis+cluster://127.0.0.1"})
    with pytest.raises(ConfigError, match="redis\\+cluster://"):
        load_settings({"LIVEBOARD_REDIS_URL": "http://127.0.0.1:7000"})


def test_a_rooms_channel_and_presence_key_share_its_slot_on_a_cluster() -> None:
    for room in ("project:prj_abc", "workspace:wsp_x", "project:a:b"):
        channel, key = cluster_channel_of(room), key_of(room, cluster=True)
        assert channel == f"liveboard:room:{{{room}}}".encode()
        assert key == f"liveboard:presence:{{{room}}}"
        assert key_slot(channel) == key_slot(key.encode()) == key_slot(room.encode())
        assert room_of(channel, cluster=True) == room
        # A single Redis keeps the names it always had (instances of both kinds never mix).
        assert room_of(channel_of(room), cluster=False) == room
        assert key_of(room) == f"liveboard:presence:{room}"


def test_the_slots_map_finds_each_channels_master() -> None:
    reply = [
        [10923, 16383, [b"127.0.0.1", 7002, b"id3"], [b"127.0.0.1", 7005, b"id6"]],
        [0, 5460, [b"127.0.0.1", 7000, b"id1"], [b"127.0.0.1", 7003, b"id4"]],
        [5461, 10922, [b"127.0.0.1", 7001, b"id2"]],
    ]
    slots = SlotMap.parse(reply)
    assert slots.masters == {("127.0.0.1", 7000), ("127.0.0.1", 7001), ("127.0.0.1", 7002)}
    for n in range(200):
        channel = cluster_channel_of(f"project:{n}")
        slot = key_slot(channel)
        expected = 7000 if slot <= 5460 else 7001 if slot <= 10922 else 7002
        assert slots.address_of(channel) == ("127.0.0.1", expected)
    assert slots == SlotMap.parse(list(reversed(reply)))
    # Slots no master serves (a cluster being set up, or one that lost a shard).
    partial = SlotMap.parse(reply[1:2])
    served = [cluster_channel_of(f"project:{n}") for n in range(200)]
    assert {partial.address_of(c) for c in served} == {("127.0.0.1", 7000), None}


def test_ssubscribe_commands_group_channels_by_slot() -> None:
    same = [b"liveboard:room:{project:a}", b"x{project:a}"]  # one hash tag: one slot
    other = b"liveboard:room:{project:b}"
    commands = ssubscribe_commands([*same, other])
    assert sorted(commands, key=len) == [["SSUBSCRIBE", other], ["SSUBSCRIBE", *same]]
