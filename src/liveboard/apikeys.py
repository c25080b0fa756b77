"""Service API keys (CONTRACT §6.3): ``Authorization: apikey <key>``.

Guarantees:

* A presented key is compared with every configured key with ``hmac.compare_digest``, all of
  them every time: how long a check takes says nothing about which key, or how much of one,
  matched.
* A key is never kept where it could be shown: what the rest of the server holds of a caller
  is its key's id, the first 16 hex digits of the key's SHA-256 (``key_id``), which names it in
  idempotency records and rate-limit buckets. Error messages never quote a key, and
  ``logs.redact`` removes ``apikey …`` (and ``Bearer …``) credentials from any log line.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Final

__all__ = ["API_KEY_SCHEME", "ApiKeys", "api_key", "key_id"]

#: The ``Authorization`` scheme of a service key (case-insensitive, like ``Bearer``).
API_KEY_SCHEME: Final = "apikey"
_MAX_PRESENTED_LENGTH = 1024


def key_id(key: str) -> str:
    """The public name of a key: 16 hex digits of its SHA-256 (not enough to find the key)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def api_key(authorization_header: str | None) -> str | None:
    """``"apikey <key>"`` → ``"<key>"``; anything else (a bearer token, nothing) → None."""
    if not authorization_header:
        return None
    scheme, _, rest = authorization_header.strip().partition(" ")
    if scheme.lower() != API_KEY_SCHEME:
        return None
    return rest.strip()


class ApiKeys:
    """The configured service keys; ``identify`` tells whether a presented key is one."""

    __slots__ = ("_ids", "_keys")

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = tuple(key.encode() for key in keys)
        self._ids = tuple(key_id(key) for key in keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def identify(self, presented: str) -> str | None:
        """The id of the configured key equal to ``presented``, or None.

        Every configured key is compared, in constant time each, whatever matched."""
        if len(presented) > _MAX_PRESENTED_LENGTH:  # bounds the work; no key is that long
            return None
        candidate = presented.encode("utf-8", "surrogateescape")
        found: str | None = None
        for key, identity in zip(self._keys, self._ids, strict=True):
            if hmac.compare_digest(candidate, key) and found is None:
                found = identity
        return found
