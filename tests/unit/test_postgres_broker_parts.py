"""The postgres broker's pure parts: its notifications, presence messages, and how it is chosen.

Notifications: ``"<room> <offset>"`` from ``liveboard_emit``, ``"<room> <offset> <instance>
<first>"`` from the broker, anything else malformed. Presence messages: every one within
PostgreSQL's payload limit, a room too big for one split in parts that join back to it.
Configuration: ``LIVEBOARD_BROKER`` (``auto`` keeps Redis-or-memory), ``postgres`` refused on
SQLite, and it counts as a broker for ``--workers``; ``check-config`` names the broker in use.
"""

from __future__ import annotations

import json

import pytest

from liveboard.config import broker_kind, check_workers, load_settings
from liveboard.errors import ConfigError
from liveboard.realtime.brokers.postgres import payload_of
from liveboard.realtime.brokers.wakeup import parse, parse_sender
from liveboard.realtime.presence_postgres import MAX_PAYLOAD, pack_states, presence_channel
from liveboard.settings_report import effective_settings

PG = "postgresql://app@db/lb"


def test_a_broker_notification_names_room_offsets_and_sender() -> None:
    payload = payload_of("project:p1", 5, 9, "abc123")
    assert parse_sender(payload) == ("project:p1", 9, "abc123", 5)
    assert parse(payload) == ("project:p1", 9)  # the plain wake-up reads it too
    assert parse_sender("project:p1 7") == ("project:p1", 7, None, 7)  # liveboard_emit's
    for malformed in (
        "",
        "garbage",
        "project:p1 x",
        "project:p1 7 abc",  # three parts: neither form
        "project:p1 7 abc 8",  # first past the offset
        "project:p1 7  3",  # no sender
        "project:p1 7 abc x",
        "project:p1 1 2 3 4",
    ):
        assert parse_sender(malformed) is None, malformed


def test_presence_messages_fit_and_carry_every_room() -> None:
    states = {f"project:p{n}": {f"u{n}-{k}": f"User {k}" for k in range(3)} for n in range(400)}
    messages = pack_states("i1", states, asks=["project:x"])
    assert len(messages) > 1
    assert all(len(m.encode()) <= MAX_PAYLOAD for m in messages)
    decoded = [json.loads(m) for m in messages]
    assert {d["i"] for d in decoded} == {"i1"}
    assert decoded[0]["a"] == ["project:x"]  # asked once
    assert sum("a" in d for d in decoded) == 1
    carried = {s[0]: s[1] for d in decoded for s in d["s"]}
    assert carried == states
    assert all(s[2:] == [0, 1] for d in decoded for s in d["s"])  # each whole


def test_a_room_too_big_for_one_message_is_split_in_parts() -> None:
    users = {f"user-{n:05d}": "N" * 40 for n in range(600)}
    messages = pack_states("i1", {"project:big": users})
    assert len(messages) > 1
    assert all(len(m.encode()) <= MAX_PAYLOAD for m in messages)
    pieces = [s for m in messages for s in json.loads(m)["s"]]
    assert [p[2] for p in pieces] == list(range(len(pieces)))
    assert {p[3] for p in pieces} == {len(pieces)}
    joined = {u: n for p in pieces for u, n in p[1].items()}
    assert joined == users


def test_an_instance_with_nothing_to_say_still_says_it_is_alive() -> None:
    assert [json.loads(m) for m in pack_states("i1", {})] == [{"i": "i1", "s": []}]
    assert presence_channel("liveboard") == "liveboard_presence"


def test_the_broker_is_chosen_by_liveboard_broker() -> None:
    assert broker_kind(load_settings({})) == "memory"
    assert broker_kind(load_settings({"LIVEBOARD_REDIS_URL": "redis://r:6379/0"})) == "redis"
    on_pg = load_settings({"LIVEBOARD_DATABASE_URL": PG, "LIVEBOARD_BROKER": "postgres"})
    assert broker_kind(on_pg) == "postgres"
    both = {"LIVEBOARD_DATABASE_URL": PG, "LIVEBOARD_REDIS_URL": "redis://r:6379/0"}
    assert broker_kind(load_settings({**both, "LIVEBOARD_BROKER": "Postgres"})) == "postgres"
    assert broker_kind(load_settings({**both, "LIVEBOARD_BROKER": "memory"})) == "memory"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"LIVEBOARD_BROKER": "postgres"}, "LIVEBOARD_BROKER=postgres needs a PostgreSQL"),
        ({"LIVEBOARD_BROKER": "redis"}, "LIVEBOARD_BROKER=redis needs LIVEBOARD_REDIS_URL"),
        ({"LIVEBOARD_BROKER": "kafka"}, "LIVEBOARD_BROKER must be one of auto, memory, redis"),
    ],
)
def test_a_broker_that_cannot_work_is_refused(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings(env)


def test_the_postgres_broker_counts_as_a_broker_for_workers() -> None:
    check_workers(
        load_settings(
            {"LIVEBOARD_DATABASE_URL": PG, "LIVEBOARD_BROKER": "postgres", "LIVEBOARD_WORKERS": "2"}
        )
    )
    with pytest.raises(ConfigError, match="LIVEBOARD_BROKER=postgres"):
        check_workers(load_settings({"LIVEBOARD_DATABASE_URL": PG, "LIVEBOARD_WORKERS": "2"}))


def test_check_config_names_the_broker_in_use() -> None:
    lines = effective_settings(load_settings({"LIVEBOARD_REDIS_URL": "redis://r:6379/0"}))
    assert "LIVEBOARD_BROKER=auto  # default; in use: redis" in lines
    on_pg = load_settings({"LIVEBOARD_DATABASE_URL": PG, "LIVEBOARD_BROKER": "postgres"})
    assert "LIVEBOARD_BROKER=postgres  # in use: postgres" in effective_settings(on_pg)
