"""The pure parts of the connection guard and of the open-files limit, and their settings."""

from __future__ import annotations

import asyncio
import logging
import resource

import pytest

from liveboard.config import load_settings
from liveboard.errors import ConfigError
from liveboard.fdlimit import Watermark, target_soft_limit
from liveboard.realtime.transport.guard import AddressCounts, Tally, address_key

INF = resource.RLIM_INFINITY


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4-mapped: the IPv4 client it is
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),  # one /64, however many addresses
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::1", "::/64"),
        ("/run/liveboard.sock", "/run/liveboard.sock"),
        (None, "?"),
        ("", "?"),
    ],
)
def test_address_key(host: str | None, key: str) -> None:
    assert address_key(host) == key


def test_address_counts_cap_each_address_and_free_places_as_connections_end() -> None:
    counts = AddressCounts(2)
    assert counts.add("a")
    assert counts.add("a")
    assert not counts.add("a")  # refused: nothing counted
    assert counts.of("a") == 2
    assert counts.add("b")
    counts.remove("a")
    assert counts.add("a")
    counts.remove("a")
    counts.remove("a")
    assert counts.of("a") == 0
    counts.remove("a")  # more removes than adds never go below zero
    assert counts.of("a") == 0


def test_address_counts_without_a_cap() -> None:
    counts = AddressCounts(0)
    assert all(counts.add("a") for _ in range(10_000))
    assert counts.of("a") == 10_000


@pytest.mark.parametrize(
    ("soft", "hard", "ceiling", "target"),
    [
        (1024, 20_000, 1 << 20, 20_000),
        (1024, 1024, 1 << 20, 1024),
        (1024, INF, 1 << 20, 1 << 20),  # Linux refuses an infinite soft limit for files
        (INF, INF, 1 << 20, INF),
        (65_536, 65_536, 1 << 20, 65_536),
    ],
)
def test_the_soft_limit_goes_up_to_the_hard_limit(
    soft: int, hard: int, ceiling: int, target: int
) -> None:
    assert target_soft_limit(soft, hard, ceiling) == target


def test_guard_settings() -> None:
    defaults = load_settings({})
    assert (defaults.head_timeout, defaults.body_timeout, defaults.keepalive_timeout) == (
        10.0,
        30.0,
        75.0,
    )
    assert defaults.max_pending_per_address == 256
    custom = load_settings(
        {
            "LIVEBOARD_HEAD_TIMEOUT": "2.5",
            "LIVEBOARD_BODY_TIMEOUT": "4",
            "LIVEBOARD_KEEPALIVE_TIMEOUT": "90",
            "LIVEBOARD_MAX_PENDING_PER_ADDRESS": "0",
        }
    )
    assert (custom.head_timeout, custom.body_timeout, custom.keepalive_timeout) == (2.5, 4.0, 90.0)
    assert custom.max_pending_per_address == 0
    for name, value in (
        ("LIVEBOARD_HEAD_TIMEOUT", "0"),
        ("LIVEBOARD_BODY_TIMEOUT", "nan"),
        ("LIVEBOARD_KEEPALIVE_TIMEOUT", "-1"),
        ("LIVEBOARD_MAX_PENDING_PER_ADDRESS", "-1"),
        ("LIVEBOARD_MAX_PENDING_PER_ADDRESS", "many"),
    ):
        with pytest.raises(ConfigError, match=name):
            load_settings({name: value})


async def test_a_tally_logs_the_first_at_once_then_one_count_per_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="liveboard.guard")
    tally = Tally("connection refused", logging.WARNING, window=0.05)
    tally.record("10.0.0.1")
    assert [r.getMessage() for r in caplog.records] == ["connection refused: 10.0.0.1"]
    for key in ("10.0.0.1", "10.0.0.2", "10.0.0.2", "10.0.0.2"):
        tally.record(key)
    assert len(caplog.records) == 1  # counted, not logged one by one
    await asyncio.sleep(0.12)
    assert [r.getMessage() for r in caplog.records][1:] == [
        "connection refused: 4 more in the last 0.05s, from 2 address(es), most from 10.0.0.2 (3)"
    ]
    await asyncio.sleep(0.1)  # a quiet window: nothing to log, and the next is logged at once
    assert len(caplog.records) == 2
    tally.record("10.0.0.3")
    assert caplog.records[-1].getMessage() == "connection refused: 10.0.0.3"


def test_the_open_files_watermark_reports_each_crossing_once() -> None:
    mark = Watermark(high=0.9, low=0.8)
    assert mark.update(100, 1000) is None
    assert mark.update(900, 1000) is True
    assert mark.update(950, 1000) is None  # still high: no second line
    assert mark.update(850, 1000) is None  # between the marks: still high
    assert mark.update(799, 1000) is False
    assert mark.update(500, 1000) is None
    assert mark.update(-1, 1000) is None  # unknown
    assert mark.update(10**9, resource.RLIM_INFINITY) is None
