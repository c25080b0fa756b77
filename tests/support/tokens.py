"""Users and their tokens: the test secret, valid and hand-signed tokens, ``Authorization`` headers.

Every server the tests start (in-process or ``liveboard serve``) is configured with
``TEST_SECRET``, so ``make_token`` and ``auth`` give tokens it accepts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from liveboard.auth import issue_token

TEST_SECRET = "liveboard-test-secret-0123456789abcdef"


def make_token(user: str, *, name: str | None = None, ttl: float = 3600.0) -> str:
    return issue_token(TEST_SECRET, user, name=name, ttl=ttl)


def auth(user: str) -> dict[str, str]:
    """Headers carrying a valid token for ``user``."""
    return {"Authorization": f"Bearer {make_token(user)}"}


def signed_token(claims_json: bytes) -> str:
    """An HS256 JWT signed with ``TEST_SECRET`` whose payload is exactly ``claims_json``: for
    claims no JSON encoder writes (unpaired surrogates, numbers past a float's range)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(claims_json)
    mac = hmac.new(TEST_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def unique(name: str) -> str:
    """A user id of its own: the PostgreSQL database is shared by the whole test run."""
    return f"{name}-{secrets.token_hex(4)}"
