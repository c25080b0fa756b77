"""Pure parts of the open log: API keys (config, matching, redaction) and what retention prunes."""

from __future__ import annotations

import pytest

from liveboard.apikeys import ApiKeys, api_key, key_id
from liveboard.config import load_settings
from liveboard.errors import ConfigError
from liveboard.logs import redact
from liveboard.tasks.retention import prune_through

KEY_A = "a" * 16
KEY_B = "key-B_0123456789!"


def test_keys_are_read_from_a_comma_list() -> None:
    settings = load_settings({"LIVEBOARD_API_KEYS": f" {KEY_A} ,{KEY_B},,{KEY_A}"})
    assert settings.api_keys == (KEY_A, KEY_B)
    assert load_settings({}).api_keys == ()


@pytest.mark.parametrize("bad", ["short", "a" * 15, "has space in it 123", "é" * 20, "x" * 1025])
def test_weak_or_malformed_keys_stop_the_start(bad: str) -> None:
    with pytest.raises(ConfigError, match="LIVEBOARD_API_KEYS: key 2 ") as caught:
        load_settings({"LIVEBOARD_API_KEYS": f"{KEY_A},{bad}"})
    assert bad not in str(caught.value)  # the error line never quotes a key


def test_identify_names_the_key_by_its_id() -> None:
    keys = ApiKeys([KEY_A, KEY_B])
    assert keys.identify(KEY_B) == key_id(KEY_B)
    assert keys.identify(KEY_A) == key_id(KEY_A)
    assert keys.identify(KEY_A + "x") is None
    assert keys.identify(KEY_A[:-1]) is None
    assert keys.identify("") is None
    assert keys.identify("\udcff" * 20) is None  # undecodable text is compared, not an error
    assert keys.identify("x" * 5000) is None
    assert not ApiKeys([])
    assert ApiKeys([]).identify(KEY_A) is None
    assert len(key_id(KEY_A)) == 16
    assert KEY_A not in key_id(KEY_A)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"apikey {KEY_A}", KEY_A),
        (f"ApiKey   {KEY_A} ", KEY_A),
        ("Bearer abc", None),
        ("apikey", ""),
        (None, None),
        ("", None),
    ],
)
def test_authorization_scheme(header: str | None, expected: str | None) -> None:
    assert api_key(header) == expected


def test_keys_are_redacted_from_log_text() -> None:
    line = f"bad header: Authorization: apikey {KEY_B}, then ApiKey {KEY_A}"
    cleaned = redact(line)
    assert KEY_A not in cleaned
    assert KEY_B not in cleaned
    assert "[redacted]" in cleaned


# Retention: head 20,000, recovery window 1,000, keep 10,000.
def prune(oldest: int, first_young: int | None = None, age_configured: bool = False) -> int:
    """``prune_through`` at head 20,000, recovery window 1,000, keep 10,000."""
    return prune_through(
        oldest=oldest,
        head=20_000,
        keep=10_000,
        recovery_window=1_000,
        first_young=first_young,
        age_configured=age_configured,
    )


def test_count_retention_keeps_the_last_n() -> None:
    assert prune(oldest=1) == 10_000
    assert prune(oldest=10_001) == 10_000  # nothing more: oldest - 1
    assert prune_through(oldest=1, head=9_000, keep=10_000, recovery_window=1_000) == 0


def test_age_prunes_more_but_never_the_recovery_window() -> None:
    # Everything older than the age up to offset 15,000: pruned beyond the count.
    assert prune(oldest=1, first_young=15_001, age_configured=True) == 15_000
    # All events old: only the recovery window stays.
    assert prune(oldest=1, first_young=None, age_configured=True) == 19_000
    # All young: the count still applies.
    assert prune(oldest=1, first_young=1, age_configured=True) == 10_000


def test_never_past_the_recovery_window_nor_before_the_oldest() -> None:
    checked = 0
    for head in (0, 1, 999, 1000, 1001, 5000, 10_000, 10_001, 123_456):
        for oldest in (o for o in (1, 2, 500, 10_000, 50_000) if o <= head + 1):
            for first_young in (None, 1, 700, 9_999, 200_000):
                for age in (False, True):
                    target = prune_through(
                        head=head,
                        oldest=oldest,
                        keep=10_000,
                        recovery_window=1_000,
                        first_young=first_young,
                        age_configured=age,
                    )
                    assert target >= oldest - 1
                    assert target <= max(head - 1_000, oldest - 1)
                    if not age:
                        assert target <= max(head - 10_000, oldest - 1)
                    checked += 1
    assert checked > 100
