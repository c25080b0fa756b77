"""``--dev``'s rule for the hosts it answers (``dev.is_loopback_host``); the server's side is in
tests/integration/test_dev_mode.py."""

from __future__ import annotations

import pytest

from liveboard.dev import is_loopback_host


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost:8000", True),
        ("LOCALHOST.:8000", True),
        ("board.localhost:8000", True),
        ("127.0.0.1", True),
        ("127.0.0.1:8000", True),
        ("127.8.9.10:1", True),
        ("[::1]", True),
        ("[::1]:8000", True),
        ("evil.example", False),
        ("evil.example:8000", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.evil.example", False),
        ("10.0.0.1:8000", False),
        ("0.0.0.0:8000", False),
        ("[::2]:8000", False),
        ("[::1", False),
        ("::1", True),  # not a valid Host (no brackets), but loopback all the same
        ("", False),
        (None, False),
    ],
)
def test_loopback_hosts(host: str | None, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
