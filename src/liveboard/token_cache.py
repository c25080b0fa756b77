"""Verified tokens remembered for a while, so a token is not verified again on every request.

A REST client sends the same bearer token with every call and a reconnecting client the same
token with every upgrade; verifying its signature (HS256 about 85 µs, RS256/ES256 more) was 10 %
of a PATCH's server CPU (issue 20). ``VerifiedTokens`` remembers the ``Principal`` of a token
that verified, keyed by the token's SHA-256 digest (the token itself is not kept), and answers
for it until the earliest of:

* the token's ``exp`` (with the verifier's leeway, as PyJWT judges it), so an expired token is
  never accepted from the cache;
* ``max_age`` seconds after it was verified (the owner also ``clear()``s it when the keys
  change, so a removed signing key is not honoured from memory);

and only while it is among the ``capacity`` most recently used (least recently used evicted
first). A token that failed verification is never remembered. Pure: the caller passes the time.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Generic, NamedTuple, TypeVar

Verified = TypeVar("Verified")


class _Entry(NamedTuple, Generic[Verified]):
    verified: Verified
    valid_until: float


class VerifiedTokens(Generic[Verified]):
    """A bounded, time-limited memory of verified tokens (see the module docstring): what each
    verified as (the verifier's ``Principal``)."""

    def __init__(self, capacity: int = 10_000, max_age: float = 300.0, leeway: float = 0.0) -> None:
        if capacity < 0 or max_age < 0:
            raise ValueError("capacity and max_age must be >= 0")
        self.capacity = capacity
        self.max_age = max_age
        self.leeway = leeway
        self._entries: OrderedDict[bytes, _Entry[Verified]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every token (the keys they were verified with changed)."""
        self._entries.clear()

    def get(self, token: str, now: float) -> Verified | None:
        """What ``token`` verified as, if it did and is still good at ``now``; else None."""
        key = _digest(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.valid_until:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.verified

    def put(self, token: str, verified: Verified, expires_at: float, now: float) -> None:
        """Remember that ``token``, whose ``exp`` is ``expires_at``, verified at ``now`` as
        ``verified``."""
        if self.capacity == 0:
            return
        valid_until = min(expires_at + self.leeway, now + self.max_age)
        if now >= valid_until:
            return
        key = _digest(token)
        self._entries[key] = _Entry(verified, valid_until)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
