"""CONTRACT §6.5: the token as a subprotocol (``liveboard.protocol.subprotocols``, pure)."""

from __future__ import annotations

import pytest

from liveboard.protocol.subprotocols import (
    SUBPROTOCOL,
    AmbiguousTokenError,
    selected_subprotocol,
    subprotocol_token,
    token_subprotocol,
)
from liveboard.realtime.transport import handshake

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def test_the_token_entry_round_trips() -> None:
    assert subprotocol_token([SUBPROTOCOL, token_subprotocol(JWT)]) == JWT


@pytest.mark.parametrize("offered", [[], [SUBPROTOCOL], ["chat"], ["liveboard.token."]])
def test_no_token_entry_is_no_token(offered: list[str]) -> None:
    assert subprotocol_token(offered) is None


def test_two_token_entries_are_ambiguous() -> None:
    with pytest.raises(AmbiguousTokenError):
        subprotocol_token([token_subprotocol(JWT), token_subprotocol(JWT + "x")])


@pytest.mark.parametrize(
    ("offered", "selected"),
    [
        ([SUBPROTOCOL, token_subprotocol(JWT)], SUBPROTOCOL),
        ([token_subprotocol(JWT), SUBPROTOCOL], SUBPROTOCOL),
        ([token_subprotocol(JWT)], None),  # never the token entry
        (["chat", "superchat"], None),
        ([], None),
    ],
)
def test_only_the_version_is_ever_selected(offered: list[str], selected: str | None) -> None:
    assert selected_subprotocol(offered) == selected


def _headers(*extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [
        ("Host", "127.0.0.1"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
        *extra,
    ]


def test_the_handshake_reads_the_offered_entries_in_order() -> None:
    value = f" {SUBPROTOCOL} ,{token_subprotocol(JWT)},, "
    upgrade = handshake.check_upgrade(
        (1, 1), "/ws", "", _headers(("Sec-WebSocket-Protocol", value))
    )
    assert isinstance(upgrade, handshake.Upgrade)
    assert upgrade.subprotocols == (SUBPROTOCOL, token_subprotocol(JWT))


def test_a_repeated_protocol_line_is_refused() -> None:
    headers = _headers(
        ("Sec-WebSocket-Protocol", SUBPROTOCOL),
        ("Sec-WebSocket-Protocol", token_subprotocol(JWT)),
    )
    refused = handshake.check_upgrade((1, 1), "/ws", "", headers)
    assert isinstance(refused, handshake.BadUpgrade)
    assert "sec-websocket-protocol" in refused.message


def test_the_101_names_the_selected_subprotocol_only() -> None:
    answer = handshake.switching_protocols(KEY, SUBPROTOCOL).decode("ascii")
    assert f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n" in answer
    assert "token" not in answer
    assert "Sec-WebSocket-Protocol" not in handshake.switching_protocols(KEY).decode("ascii")
