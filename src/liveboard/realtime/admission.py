"""Who may open a WebSocket: the checks before the upgrade, the same on both paths.

``admit`` returns the principal, or a ``Refusal`` answered before any handshake with the REST
error body: 503 while the server shuts down, 403 for a forbidden ``Origin`` (or, in dev mode, a
host that is not loopback), 401 for a missing or bad token, 429 for a user who holds
``max_connections_per_user`` connections already, 503 with ``Retry-After`` while
``max_handshakes`` subscribes are under way (a reconnect storm: the client comes back a moment
later instead of waiting in a queue until its handshake times out). The token is looked for in
``Authorization: Bearer``, then a ``liveboard.token.<jwt>`` subprotocol (CONTRACT §6.5), then
``?token=``. Every refusal but the shutdown's 503 (and a 500 for a bug) is counted in
``connections_rejected`` under its reason (``metrics.REFUSAL_REASONS``).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from liveboard import dev
from liveboard.auth import Principal, TokenVerifier, bearer_token
from liveboard.config import Settings
from liveboard.errors import AuthError
from liveboard.protocol.subprotocols import AmbiguousTokenError, subprotocol_token
from liveboard.realtime.node import Node

log = logging.getLogger("liveboard.ws")

RESTARTING_MESSAGE = "server is restarting; reconnect shortly"
BUSY_MESSAGE = "server busy with reconnects; retry after {seconds} s"
MISSING_TOKEN_MESSAGE = (
    "missing token: send Authorization: Bearer <jwt>, "
    "Sec-WebSocket-Protocol: liveboard.v1, liveboard.token.<jwt>, or ?token=<jwt>"
)


class Refusal(NamedTuple):
    """An upgrade turned down before the handshake: HTTP status and the error body's fields."""

    status: int
    code: str
    message: str
    details: dict[str, Any] | None = None
    retry_after: int | None = None  # seconds, sent as ``Retry-After``


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...] | None) -> bool:
    """CONTRACT §1 ``LIVEBOARD_ALLOWED_ORIGINS``: unset → no Origin or same host; ``*`` → any."""
    if allowed is not None and "*" in allowed:
        return True
    if origin is None:
        return True
    if allowed is None:
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:  # not a URL (``http://[``): not the same host
            return False
        return host is not None and netloc.lower() == host.lower()
    return origin.rstrip("/") in allowed


def query_token(raw_query: str) -> str | None:
    """The first ``token`` parameter of a raw query string (``token=…&…``), or None.

    Given ``request.rel_url.raw_query_string`` rather than read from ``request.query``, which
    parses the whole query and caches it, token included, on the request's URL: that object
    lives as long as the connection, about 0.6 KB each. Decoded as ``request.query`` would
    (``%XX``, ``+``; ``;`` is not a separator).
    """
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        if name == "token":
            return value
    return None


async def admit(
    node: Node,
    settings: Settings,
    verifier: TokenVerifier,
    *,
    origin: str | None,
    host: str | None,
    authorization: str | None,
    raw_query: str,
    subprotocols: tuple[str, ...] = (),
) -> Principal | Refusal:
    """The checks before the upgrade, the same on both paths: the principal, or a refusal."""
    try:
        if not node.accepting:
            return Refusal(503, "unavailable", RESTARTING_MESSAGE)
        if settings.max_handshakes and node.handshakes >= settings.max_handshakes:
            # Before the token is verified: a refusal under load should cost next to nothing.
            seconds = settings.handshake_retry_after
            busy = Refusal(503, "unavailable", BUSY_MESSAGE.format(seconds=seconds), None, seconds)
            return _rejected(node, "busy", busy)
        if settings.dev and not dev.is_loopback_host(host):  # DNS rebinding: see ``dev``
            return _rejected(node, "host", Refusal(403, "forbidden", dev.NOT_LOOPBACK_MESSAGE))
        if not origin_allowed(origin, host, settings.allowed_origins):
            return _rejected(node, "origin", Refusal(403, "forbidden", "origin not allowed"))
        try:
            token = (
                bearer_token(authorization)
                or subprotocol_token(subprotocols)
                or query_token(raw_query)
            )
        except AmbiguousTokenError as exc:
            return _rejected(node, "invalid_token", Refusal(401, "unauthorized", str(exc)))
        if not token:
            message = MISSING_TOKEN_MESSAGE
            return _rejected(node, "missing_token", Refusal(401, "unauthorized", message))
        try:
            principal = await verifier.verify(token)
        except AuthError as exc:
            return _rejected(node, "invalid_token", Refusal(401, "unauthorized", exc.message))
        if node.connections_of(principal.user_id) >= settings.max_connections_per_user:
            message = "too many connections for this user"
            return _rejected(node, "user_limit", Refusal(429, "rate_limited", message))
    except Exception:
        log.exception("unhandled error admitting a WebSocket connection")
        return Refusal(500, "internal_error", "internal server error")
    return principal


def _rejected(node: Node, reason: str, refusal: Refusal) -> Refusal:
    node.metrics.connections_rejected.labels(reason).inc()
    return refusal
