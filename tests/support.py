"""Constants and helpers shared by the test modules (tokens, timeouts, PostgreSQL location)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from liveboard.auth import issue_token

TEST_SECRET = "liveboard-test-secret-0123456789abcdef"
TIMEOUT_FACTOR = float(os.environ.get("LIVEBOARD_TEST_TIMEOUT_FACTOR", "1"))
POSTGRES_ADMIN_URL = os.environ.get(
    "LIVEBOARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_POSTGRES = os.environ.get("LIVEBOARD_REQUIRE_POSTGRES") == "1"


def timeout(seconds: float) -> float:
    """A test timeout scaled for the machine."""
    return seconds * TIMEOUT_FACTOR


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


#: The error code CONTRACT §3 pairs with each status, as the tests read the contract: kept apart
#: from the server's own table (``liveboard.errors``) so that the tests check it.
CONTRACT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
    429: "rate_limited",
}
