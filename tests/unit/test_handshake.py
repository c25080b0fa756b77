"""The opening handshake read from raw bytes (``realtime.transport.handshake``)."""

from __future__ import annotations

import json

import pytest

from liveboard.realtime.transport.handshake import (
    BadUpgrade,
    Upgrade,
    accept_value,
    check_upgrade,
    error_response,
    head_end,
    may_be_upgrade,
    parse_upgrade,
    switching_protocols,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
GOOD = [
    "GET /ws/connect?token=abc&x=1 HTTP/1.1",
    "Host: board.example:8080",
    "Upgrade: websocket",
    "Connection: Upgrade",
    f"Sec-WebSocket-Key: {KEY}",
    "Sec-WebSocket-Version: 13",
    "Origin: https://board.example",
    "Authorization: Bearer eyJ.x.y",
]


def head(lines: list[str]) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def replaced(old_prefix: str, new: str | None) -> list[str]:
    lines = [line for line in GOOD if not line.startswith(old_prefix)]
    return lines if new is None else [*lines, new]


def test_a_browser_style_upgrade_is_parsed() -> None:
    assert parse_upgrade(head(GOOD)) == Upgrade(
        path="/ws/connect",
        raw_query="token=abc&x=1",
        host="board.example:8080",
        origin="https://board.example",
        authorization="Bearer eyJ.x.y",
        key=KEY,
    )


def test_header_names_are_case_insensitive_and_tokens_are_lists() -> None:
    lines = [
        "GET /ws HTTP/1.1",
        "host: h",
        "UPGRADE: WebSocket",
        "connection: keep-alive, Upgrade",
        f"sec-websocket-key: {KEY}",
        "SEC-WEBSOCKET-VERSION: 13",
    ]
    upgrade = parse_upgrade(head(lines))
    assert upgrade is not None
    assert (upgrade.path, upgrade.raw_query, upgrade.origin, upgrade.authorization) == (
        "/ws",
        "",
        None,
        None,
    )


def test_repeated_list_headers_are_one_list() -> None:
    upgrade = parse_upgrade(head([*GOOD, "Connection: keep-alive", "X-Other: 1", "X-Other: 2"]))
    assert upgrade is not None
    lines = [line for line in GOOD if not line.startswith("Connection")]
    assert parse_upgrade(head([*lines, "Connection: keep-alive", "Connection: upgrade"]))


NOT_OURS = {
    "POST": ["POST /ws HTTP/1.1", *GOOD[1:]],
    "HTTP/1.0": ["GET /ws HTTP/1.0", *GOOD[1:]],
    "another path": ["GET /ws/other HTTP/1.1", *GOOD[1:]],
    "a trailing slash": ["GET /ws/ HTTP/1.1", *GOOD[1:]],
    "an encoded path": ["GET /ws%2Fconnect HTTP/1.1", *GOOD[1:]],
    "a fragment": ["GET /ws#x HTTP/1.1", *GOOD[1:]],
    "no key": replaced("Sec-WebSocket-Key", None),
    "a 15-byte key": replaced("Sec-WebSocket-Key", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA"),
    "a key that is not base64": replaced("Sec-WebSocket-Key", "Sec-WebSocket-Key: !!!!"),
    "version 8": replaced("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8"),
    "no Upgrade": replaced("Upgrade", None),
    "Connection without upgrade": replaced("Connection", "Connection: keep-alive"),
    "no Host": replaced("Host", None),
    "two Hosts": [*GOOD, "Host: other"],
    "an empty Host": replaced("Host", "Host: "),
    "two keys": [*GOOD, "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA=="],
    "the key twice": [*GOOD, f"Sec-WebSocket-Key: {KEY}"],
    "two versions": [*GOOD, "Sec-WebSocket-Version: 13"],
    "two Origins": [*GOOD, "Origin: https://board.example"],
    "two Authorizations": [*GOOD, "Authorization: Bearer second"],
    "two Upgrades": [*GOOD, "Upgrade: websocket"],
    "Upgrade: a list": replaced("Upgrade", "Upgrade: h2c, websocket"),
    "HEAD": ["HEAD /ws HTTP/1.1", *GOOD[1:]],
    "a header name X(y": [*GOOD, "X(y: 1"],
    "a header name X@y": [*GOOD, "X@y: 1"],
    "a header name X{y}": [*GOOD, "X{y}: 1"],
    "a header name with a slash": [*GOOD, "X/y: 1"],
    "an empty header name": [*GOOD, ": 1"],
    "a body": [*GOOD, "Content-Length: 3"],
    "chunked": [*GOOD, "Transfer-Encoding: chunked"],
    "a folded header": [*GOOD, " folded"],
    "a header without a colon": [*GOOD, "Broken"],
    "a space before the colon": [*GOOD, "X-Thing : 1"],
    "non-ASCII": [*GOOD, "X-Name: café"],
    "a control character": [*GOOD, "X-Name: a\x01b"],
    "a line over 8190 bytes": [*GOOD, "X-Long: " + "a" * 8190],
    "over 128 headers": GOOD + [f"X-{i}: 1" for i in range(130)],
}


@pytest.mark.parametrize("case", list(NOT_OURS))
def test_anything_else_is_left_to_the_http_server(case: str) -> None:
    assert parse_upgrade(head(NOT_OURS[case])) is None


def test_the_first_bytes_rule_out_other_requests() -> None:
    assert may_be_upgrade(b"")
    assert may_be_upgrade(b"GE")
    assert may_be_upgrade(b"GET /ws/connect?token=")
    assert not may_be_upgrade(b"GET /api/workspaces HTTP/1.1\r\n")
    assert not may_be_upgrade(b"POST /ws")
    assert not may_be_upgrade(b"\x16\x03\x01")  # a TLS hello


def test_head_end() -> None:
    assert head_end(b"GET / HTTP/1.1\r\nHost: x\r\n") == -1
    assert head_end(b"GET / HTTP/1.1\r\n\r\nrest") == len(b"GET / HTTP/1.1\r\n\r\n")


def test_accept_value_is_the_rfc_example() -> None:
    # RFC 6455 §1.3
    assert accept_value(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    response = switching_protocols(KEY).decode()
    assert response.startswith("HTTP/1.1 101 Switching Protocols\r\n")
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    assert response.endswith("\r\n\r\n")


def test_error_responses_carry_the_rest_error_body() -> None:
    raw = error_response(401, "unauthorized", "missing token")
    head_part, body = raw.split(b"\r\n\r\n", 1)
    lines = head_part.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 401 Unauthorized"
    assert "WWW-Authenticate: Bearer" in lines
    assert "Connection: close" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert json.loads(body) == {"error": {"code": "unauthorized", "message": "missing token"}}
    raw = error_response(429, "rate_limited", "slow down", {"limit": 5})
    assert b"WWW-Authenticate" not in raw
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["error"]["details"] == {"limit": 5}


def test_header_names_may_use_every_token_character() -> None:
    assert parse_upgrade(head([*GOOD, "!#$%&'*+-.^_`|~09az: 1"])) is not None


CHECKED = [
    ("Host", "h"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Version", "13"),
]


def test_check_upgrade_is_the_rule_of_both_paths() -> None:
    assert check_upgrade((1, 1), "/ws", "token=t", CHECKED) == Upgrade(
        "/ws", "token=t", "h", None, None, KEY
    )
    # Header values as aiohttp may hand them over: spaces around them do not count.
    spaced = [(name, f" {value}\t") for name, value in CHECKED]
    assert isinstance(check_upgrade((1, 1), "/ws", "", spaced), Upgrade)


@pytest.mark.parametrize(
    ("version", "headers", "reason", "names_13"),
    [
        ((1, 0), CHECKED, "HTTP/1.1", False),
        ((1, 1), [*CHECKED, ("Sec-WebSocket-Key", KEY)], "more than one sec-websocket-key", False),
        ((1, 1), [*CHECKED, ("sec-websocket-version", "13")], "more than one", True),
        ((1, 1), [*CHECKED, ("Content-Length", "0")], "no body", False),
        ((1, 1), [*CHECKED[:4], ("Sec-WebSocket-Version", "8")], "must be 13", True),
        ((1, 1), CHECKED[:4], "must be 13", True),
    ],
)
def test_check_upgrade_says_why_it_refuses(
    version: tuple[int, int], headers: list[tuple[str, str]], reason: str, names_13: bool
) -> None:
    refused = check_upgrade(version, "/ws", "", headers)
    assert isinstance(refused, BadUpgrade)
    assert reason in refused.message
    # RFC 6455 §4.4: a refused version names the one the server speaks.
    assert (("Sec-WebSocket-Version", "13") in refused.headers) == names_13
