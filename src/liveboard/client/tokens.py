"""Where the client's token comes from, and when to refresh it.

A token is either a fixed string or a provider: a function (plain or ``async``) returning a
fresh JWT each time it is called. The SDK calls a provider before every connection attempt, on
401, after close 4001, and ``refresh_margin`` seconds before the current token's ``exp`` (read
from the JWT payload *without* verifying it: the client only needs to know when it runs out;
the server does the verifying).
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from typing import TypeAlias

TokenProvider: TypeAlias = Callable[[], Awaitable[str]] | Callable[[], str]
TokenSpec: TypeAlias = str | TokenProvider

#: A refresh is never scheduled sooner than this (a provider handing back the same token must
#: not turn the refresher into a busy loop).
MIN_REFRESH_DELAY = 1.0


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (unix seconds) of a JWT, unverified; None when it cannot be read."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def refresh_delay(expires_at: float, now: float, margin: float) -> float:
    """Seconds to wait before refreshing a token that expires at ``expires_at``.

    Normally ``expires_at - margin - now``; a token that lives less than twice the margin is
    refreshed half-way through its remaining life instead, so short tokens are refreshed in
    time too. Never less than ``MIN_REFRESH_DELAY``.
    """
    remaining = expires_at - now
    delay = remaining - margin if remaining > 2 * margin else remaining / 2
    return max(MIN_REFRESH_DELAY, delay)


class TokenSource:
    """The client's token: a fixed string, or a provider called for each fresh one."""

    #: The ``Authorization`` scheme the token is sent with.
    scheme = "Bearer"

    def __init__(self, spec: TokenSpec) -> None:
        if isinstance(spec, str):
            if not spec:
                raise ValueError("token must not be empty")
            self._provider: TokenProvider | None = None
            self.current: str | None = spec
        elif callable(spec):
            self._provider = spec
            self.current = None
        else:
            raise TypeError("token must be a string or a callable returning one")

    @property
    def static(self) -> bool:
        """True for a fixed string: nothing can replace it once it has expired."""
        return self._provider is None

    async def fresh(self) -> str:
        """Ask the provider for a new token (a static token is returned as is)."""
        if self._provider is None:
            assert self.current is not None
            return self.current
        result = self._provider()
        token = await result if inspect.isawaitable(result) else result
        if not isinstance(token, str) or not token:
            raise TypeError("the token provider must return a non-empty string")
        self.current = token
        return token

    async def valid(self, margin: float) -> str:
        """The current token, or a fresh one when it is missing or within ``margin`` of exp."""
        token = self.current
        if token is not None:
            exp = jwt_expiry(token)
            if self.static or exp is None or exp - margin > time.time():
                return token
        return await self.fresh()


class ApiKey(TokenSource):
    """A service key (CONTRACT §6.3), sent as ``Authorization: apikey <key>``: fixed, never
    refreshed, and never read as a JWT."""

    scheme = "apikey"

    def __init__(self, key: str) -> None:
        if not isinstance(key, str) or not key:
            raise ValueError("api_key must be a non-empty string")
        super().__init__(key)

    async def valid(self, margin: float) -> str:
        assert self.current is not None
        return self.current
