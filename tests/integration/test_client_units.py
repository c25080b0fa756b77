"""The SDK's pure parts: full-jitter backoff, close-code policy, JWT expiry, refresh timing,
server-message decoding, the tail formatter and the board's event application.

(Pure functions, no server: they live next to the SDK's integration tests so that
``pytest tests/integration -k client`` runs everything about the client.)
"""

from __future__ import annotations

import random
import time

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveboard import protocol
from liveboard.client import Backoff, CloseAction, Event, close_action, full_jitter, jwt_expiry
from liveboard.client.backoff import MAX_RETRY_AFTER, backoff_ceiling, parse_retry_after
from liveboard.client.board import iso_from_ms
from liveboard.client.connection import websocket_url
from liveboard.client.tail import format_event, summarize
from liveboard.client.tokens import MIN_REFRESH_DELAY, refresh_delay
from liveboard.protocol import (
    Connected,
    PresenceUpdate,
    PresenceUser,
    ResyncNotice,
    Subscribed,
    decode_server_message,
)
from tests.support.tokens import make_token

# Backoff


@given(
    attempt=st.integers(min_value=0, max_value=200),
    base=st.floats(min_value=0.0, max_value=10.0),
    cap=st.floats(min_value=0.0, max_value=120.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_full_jitter_stays_within_zero_and_the_capped_exponential(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    delay = full_jitter(attempt, base, cap, random.Random(seed).uniform)
    assert 0.0 <= delay <= min(cap, base * 2.0 ** min(attempt, 62))


def test_full_jitter_reaches_both_ends_of_its_interval() -> None:
    assert full_jitter(3, 0.5, 30.0, lambda a, b: a) == 0.0
    assert full_jitter(3, 0.5, 30.0, lambda a, b: b) == 4.0
    assert full_jitter(10, 0.5, 30.0, lambda a, b: b) == 30.0  # capped
    assert backoff_ceiling(0, 0.5, 30.0) == 0.5
    assert backoff_ceiling(1000, 0.5, 30.0) == 30.0  # no overflow


def test_full_jitter_is_spread_over_the_interval() -> None:
    rng = random.Random(7)
    delays = [full_jitter(4, 0.5, 30.0, rng.uniform) for _ in range(4000)]  # ceiling 8
    assert min(delays) < 0.2
    assert max(delays) > 7.8
    assert 3.7 < sum(delays) / len(delays) < 4.3  # uniform: mean = ceiling / 2


def test_backoff_grows_is_capped_and_resets() -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    backoff = Backoff(0.5, 4.0, Top())
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.attempt == 6
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_a_restart_window_gives_flat_short_delays_then_the_backoff_again() -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    backoff = Backoff(0.5, 8.0, Top(), restart_delay=1.5, restart_window=30.0)
    backoff.next_delay(0.0)
    backoff.next_delay(0.0)
    backoff.server_restarting(100.0)
    assert backoff.restarting(129.9)
    # Refused connects inside the window: flat, and not counted as attempts.
    assert [backoff.next_delay(100.0 + t) for t in range(0, 30, 3)] == [1.5] * 10
    assert backoff.attempt == 0
    # The window over (the server never came back): the backoff from its first step.
    assert not backoff.restarting(130.0)
    assert [backoff.next_delay(130.0) for _ in range(3)] == [0.5, 1.0, 2.0]


def test_a_connection_ends_the_restart_window() -> None:
    backoff = Backoff(0.5, 8.0, random.Random(1), restart_delay=1.5, restart_window=30.0)
    backoff.server_restarting(0.0)
    assert backoff.restarting(1.0)
    backoff.connected()
    assert not backoff.restarting(1.0)
    assert backoff.next_delay(1.0) <= 0.5  # attempt 0 of the usual backoff


def test_restart_delays_are_spread_over_the_whole_range() -> None:
    backoff = Backoff(0.5, 8.0, random.Random(7), restart_delay=1.5, restart_window=30.0)
    backoff.server_restarting(0.0)
    delays = [backoff.next_delay(1.0) for _ in range(4000)]
    assert 0.0 <= min(delays) < 0.05
    assert 1.45 < max(delays) <= 1.5
    assert 0.70 < sum(delays) / len(delays) < 0.80  # uniform: mean = restart_delay / 2


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("1", 1.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("3600", MAX_RETRY_AFTER),
        ("Sun, 06 Nov 1994 08:49:37 GMT", MAX_RETRY_AFTER),
        (None, None),
        ("", None),
        ("-1", None),
        ("1.5", None),
        ("soon", None),
        ("\u0661", None),  # a digit, but not ASCII
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_waits_at_least_what_was_asked_with_jitter_and_counts_no_attempt() -> None:
    backoff = Backoff(0.5, 8.0, random.Random(3), restart_delay=1.5)
    backoff.next_delay()
    delays = [backoff.retry_after(2.0) for _ in range(2000)]
    assert all(2.0 <= d <= 3.5 for d in delays)
    assert 2.7 < sum(delays) / len(delays) < 2.8  # spread over the jitter: mean 2 + 0.75
    assert backoff.attempt == 1
    assert backoff.retry_after(1e9) <= MAX_RETRY_AFTER + 1.5
    assert backoff.retry_after(-5.0) <= 1.5


def test_backoff_rejects_negative_parameters() -> None:
    with pytest.raises(ValueError, match="base, cap"):
        Backoff(-1.0, 1.0)
    with pytest.raises(ValueError, match="attempt"):
        backoff_ceiling(-1, 1.0, 1.0)


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (None, CloseAction.RECONNECT),
        (1000, CloseAction.RECONNECT),
        (1001, CloseAction.RECONNECT),
        (1006, CloseAction.RECONNECT),
        (1011, CloseAction.RECONNECT),
        (4008, CloseAction.RECONNECT),
        (4999, CloseAction.RECONNECT),
        (1012, CloseAction.RECONNECT_LATER),
        (1013, CloseAction.RECONNECT_LATER),
        (4001, CloseAction.NEW_TOKEN),
        (1003, CloseAction.FATAL),
        (1008, CloseAction.FATAL),
        (1009, CloseAction.FATAL),
        (1002, CloseAction.FATAL),
    ],
)
def test_close_codes_map_to_the_documented_reaction(code: int | None, action: CloseAction) -> None:
    assert close_action(code) is action


# Tokens


def test_jwt_expiry_reads_exp_without_verifying() -> None:
    before = int(time.time())
    exp = jwt_expiry(make_token("alice", ttl=120))
    assert exp is not None
    assert before + 119 <= exp <= before + 121
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.b.c") is None
    assert jwt_expiry("a.e30.c") is None  # {} has no exp


@pytest.mark.parametrize(
    ("remaining", "margin", "expected"),
    [
        (3600.0, 30.0, 3570.0),  # the usual case: margin seconds before exp
        (61.0, 30.0, 31.0),
        (40.0, 30.0, 20.0),  # shorter than twice the margin: half-way
        (4.0, 30.0, 2.0),
        (1.0, 30.0, MIN_REFRESH_DELAY),  # never a busy loop
        (-5.0, 30.0, MIN_REFRESH_DELAY),
    ],
)
def test_refresh_delay(remaining: float, margin: float, expected: float) -> None:
    assert refresh_delay(1000.0 + remaining, 1000.0, margin) == pytest.approx(expected)


# Messages


def test_decodes_every_server_message_the_sdk_knows() -> None:
    assert decode_server_message(protocol.encode_connected("c1", "alice")) == Connected(
        "c1", "alice"
    )
    subscribed = decode_server_message(
        protocol.encode_subscribed("project:p", 4, "e1", id=7, recovered=False)
    )
    assert subscribed == Subscribed("project:p", 4, "e1", recovered=False, id=7)
    update = decode_server_message(
        protocol.encode_presence_update("project:p", [("alice", "Alice")], ["alice"], [])
    )
    assert update == PresenceUpdate("project:p", [PresenceUser("alice", "Alice")], ["alice"], [])
    resync = decode_server_message(protocol.encode_resync("project:p", "continuity_lost"))
    assert resync == ResyncNotice("project:p", "continuity_lost")
    event = decode_server_message(
        b'{"type":"task:deleted","room":"project:p","offset":3,"epoch":"e","ts":1,'
        b'"userId":"bob","data":{"taskId":"t1"},"future":1}'
    )
    assert isinstance(event, Event)
    assert event.offset == 3
    assert decode_server_message(b'{"type":"from:the-future","x":1}') is None
    with pytest.raises(msgspec.DecodeError):
        decode_server_message(b"not json")


def test_websocket_url() -> None:
    assert websocket_url("http://h:1") == "ws://h:1/ws/connect"
    assert websocket_url("https://h/base/") == "wss://h/base/ws/connect"
    with pytest.raises(ValueError, match="http"):
        websocket_url("ftp://h")


# Presentation and the board model


def _event(kind: str, data: dict[str, object], offset: int = 5) -> Event:
    return Event(kind, "project:p", offset, "e", 1764120000123, "alice", data)


def test_tail_summaries() -> None:
    task = {"id": "t1", "title": "Write docs", "status": "todo"}
    assert summarize(_event("task:created", {"task": task})) == "'Write docs' in todo (t1)"
    moved = {"taskId": "t1", "fromStatus": "todo", "toStatus": "done", "order": 2.0}
    assert summarize(_event("task:moved", moved)) == "t1 todo → done (order 2.0)"
    changes = {"title": {"from": "A", "to": "B"}}
    assert summarize(_event("task:updated", {"task": task, "changes": changes})) == (
        "'Write docs': title 'A' → 'B'"
    )
    assert summarize(_event("member:added", {"userId": "bob", "role": "admin"})) == "bob as admin"
    line = format_event(_event("task:deleted", {"taskId": "t1"}, offset=42))
    assert "  #42  task:deleted  alice  t1" in line


def test_iso_from_ms_matches_the_server_format() -> None:
    assert iso_from_ms(1764120000123) == "2025-11-26T01:20:00.123Z"
    assert iso_from_ms(1764120000005) == "2025-11-26T01:20:00.005Z"
