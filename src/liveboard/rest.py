"""REST plumbing shared by every route: JSON bodies, the error shape, authentication, limits.

Every error leaves as ``{"error": {"code", "message", "details"?}}`` with the contract's status
(CONTRACT §3); an unexpected exception is logged and answered 500 ``internal_error`` without
internals. Query strings never reach the logs (they may hold tokens).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import msgspec
from aiohttp import web

from liveboard import errors, log_context
from liveboard.apikeys import ApiKeys, api_key
from liveboard.auth import Actor, Principal, TokenVerifier, bearer_token
from liveboard.connection_ids import issued_to_another
from liveboard.ratelimit import TokenBucket
from liveboard.realtime.transport.guard import GUARD_KEY
from liveboard.text import NO_NUL_PATTERN

log = logging.getLogger("liveboard.rest")

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PRINCIPAL_KEY: Final = web.RequestKey("principal", Principal)
#: A request authenticated with an API key: the key's id (``apikeys.key_id``), never the key.
API_KEY_ID_KEY: Final = web.RequestKey("api_key_id", str)
VERIFIER_KEY: Final = web.AppKey("verifier", TokenVerifier)
API_KEYS_KEY: Final = web.AppKey("api_keys", ApiKeys)

_encoder = msgspec.json.Encoder()
_FIELD_AT = re.compile(r"at `\$\.?([^`]*)`")
_FIELD_MISSING = re.compile(r"missing required field `([^`]+)`")
_CONNECTION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
# Paths under /api/ that need no token.
_PUBLIC_API_PATHS = frozenset({"/api/dev/token"})


def json_response(
    value: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response; ``value`` may be a msgspec Struct, a list of them or builtins."""
    return web.Response(
        body=_encoder.encode(value),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    retry_after: int | None = None,
) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
    return json_response(errors.error_body(code, message, details), status=status, headers=headers)


async def read_body(request: web.Request, model: type[T]) -> T:
    """Decode and validate a JSON body into ``model``: 400 if it is not JSON, 422 if invalid.

    Whatever the bytes, the answer is one of those two (or 413 past the size limit): invalid
    UTF-8, nesting deeper than the decoder recurses (even inside a field the model ignores) and
    a body that breaks its own framing are 400s (``read_raw``).
    """
    raw = await read_raw(request)
    if not raw:
        raise errors.bad_request("a JSON body is required")
    try:
        return msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = _field_of(message)
        if field is None:
            raise errors.bad_request(f"the body must be a JSON object ({message})") from None
        reason = message.split(" - at ", 1)[0]
        if repr(NO_NUL_PATTERN) in reason:  # msgspec quotes the pattern: say it plainly
            reason = "must not contain U+0000"
        raise errors.validation_error(field, reason) from None
    except msgspec.DecodeError:
        raise errors.bad_request("the body is not valid JSON") from None
    except UnicodeDecodeError:
        raise errors.bad_request("the body is not valid JSON (invalid UTF-8)") from None
    except RecursionError:
        raise errors.bad_request("the body is not valid JSON (nested too deeply)") from None


async def read_raw(request: web.Request) -> bytes:
    """The request's whole body (empty when it has none); read once, later calls are free.

    A client that leaves before its body is read gets a 400: it is gone and never sees it, and
    the access log records its request as the client's mistake (one line), not as a server
    error. A body not complete within the guard's ``body_timeout`` of the head is a 400 too;
    after it, aiohttp reads and drops the rest for up to its ``lingering_time`` (set in
    ``cli.serve``) and closes the connection if the rest has not arrived by then. Broken
    chunked framing or undecodable gzip/deflate is a 400.
    """
    if request.content.is_eof() and not request.content.exception():
        # Already here whole (a small body comes with its head): nothing to wait for.
        return await request.read()
    guard = request.app[GUARD_KEY]
    try:
        async with asyncio.timeout(guard.body_timeout):
            return await request.read()
    except TimeoutError:
        guard.body_timed_out(request.transport)
        message = f"the request body did not arrive within {guard.body_timeout:g}s"
        raise errors.bad_request(message) from None
    except ConnectionError:
        # aiohttp ends the body's stream with ConnectionResetError when the peer leaves.
        raise errors.bad_request("the connection closed before the body was complete") from None
    except web.RequestPayloadError as exc:  # broken chunked framing, undecodable gzip/deflate
        raise errors.bad_request(f"the body could not be read: {exc}") from None


def _field_of(message: str) -> str | None:
    match = _FIELD_AT.search(message) or _FIELD_MISSING.search(message)
    return match.group(1) if match else None


def principal(request: web.Request) -> Principal:
    try:
        return request[PRINCIPAL_KEY]
    except KeyError:  # only reachable through a routing mistake
        raise errors.ApiError(401, "unauthorized", "authentication required") from None


def service_key_id(request: web.Request) -> str | None:
    """The id of the API key the request was authenticated with; None for a user's token."""
    return request.get(API_KEY_ID_KEY)


def require_service(request: web.Request) -> str:
    """The request's API key id; 403 ``forbidden`` for a user's token (CONTRACT §6.3)."""
    key = service_key_id(request)
    if key is None:
        raise errors.forbidden("this call needs an API key (Authorization: apikey <key>)")
    return key


def idempotency_scope(request: web.Request) -> tuple[str, bool]:
    """Whose ``Idempotency-Key`` a request carries (CONTRACT §6.1): ``(user id, False)``, or
    ``(API key id, True)``; keys of users and of services are kept apart."""
    key = service_key_id(request)
    if key is not None:
        return key, True
    return principal(request).user_id, False


def actor(request: web.Request) -> Actor:
    """The caller and, from ``X-Connection-Id``, the WebSocket connection the change comes from.

    A service (an API key) has no connection: ``X-Connection-Id`` from it is a 400."""
    origin = request.headers.get("X-Connection-Id")
    key = service_key_id(request)
    if key is not None:
        if origin is not None:
            raise errors.bad_request("X-Connection-Id names a user's connection, not a service's")
        return Actor.service(key)
    user_id = principal(request).user_id
    if origin is not None:
        if not _CONNECTION_ID.match(origin):
            raise errors.bad_request("X-Connection-Id must be a connection id from `connected`")
        if issued_to_another(origin, user_id):  # another user's tab would take it for its echo
            raise errors.bad_request("X-Connection-Id must be one of your own connections")
    return Actor(user_id=user_id, origin=origin)


class RateLimiter:
    """Per-user token buckets for REST calls; idle buckets are forgotten on the way."""

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._next_sweep = clock() + 60.0

    def allow(self, key: str) -> bool:
        now = self._clock()
        if now >= self._next_sweep:
            self._buckets = {k: b for k, b in self._buckets.items() if not b.full(now)}
            self._next_sweep = now + 60.0
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)


RATE_LIMITER_KEY: Final = web.AppKey("rest_rate_limiter", RateLimiter)


#: Routes that hold their request for a whole connection: the middlewares hand them straight to
#: their handler (which answers its own errors), so that no middleware coroutine stays alive per
#: connection (a few hundred bytes each, times 20,000 sockets).
LONG_LIVED_PATHS: Final = frozenset({"/ws", "/ws/connect"})


@web.middleware
def error_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Turn every failure into the contract's error body."""
    if (
        request.method == "GET"
        and request.path in LONG_LIVED_PATHS
        # The decoded path: ``/ws%2Fconnect`` reads as ``/ws/connect`` but matches no route.
        and request.match_info.http_exception is None
    ):
        return handler(request)
    return _with_error_body(request, handler)


async def _with_error_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    except errors.AuthError as exc:
        return error_response(401, "unauthorized", exc.message)
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "payload_too_large", "the request body is too large")
    except web.HTTPNotFound:
        return error_response(404, "not_found", "no such resource")
    except web.HTTPMethodNotAllowed as exc:
        return error_response(405, "bad_request", f"method {exc.method} is not allowed here")
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error_response(exc.status, errors.status_code(exc.status), exc.reason)
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal server error")


@web.middleware
def auth_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Authenticate every call under /api/ (but /api/dev/token) and apply the rate limit."""
    if request.path.startswith("/api/") and request.path not in _PUBLIC_API_PATHS:
        return _authenticated(request, handler)
    return handler(request)


async def _authenticated(request: web.Request, handler: Handler) -> web.StreamResponse:
    authorization = request.headers.get("Authorization")
    token = bearer_token(authorization)
    if token is None:
        presented = api_key(authorization)
        if presented is None:
            raise errors.AuthError("missing bearer token")
        return await _as_service(request, handler, presented)
    who = await request.app[VERIFIER_KEY].verify(token)
    request[PRINCIPAL_KEY] = who
    log_context.bind_user(who.user_id)
    request.app[GUARD_KEY].release(request.transport)  # authenticated: off the per-address cap
    limiter = request.app.get(RATE_LIMITER_KEY)
    if limiter is not None and not limiter.allow(who.user_id):
        raise errors.ApiError(429, "rate_limited", "too many requests; slow down")
    return await handler(request)


async def _as_service(request: web.Request, handler: Handler, presented: str) -> web.StreamResponse:
    """A request with ``Authorization: apikey <key>``: 401 unless the key is configured.

    Services are not rate-limited per caller like users: a backend publishing for many users
    is one caller (``LIVEBOARD_API_KEYS`` is for trusted backends only)."""
    keys = request.app.get(API_KEYS_KEY)
    identity = None if keys is None else keys.identify(presented)
    if identity is None:
        raise errors.AuthError("unknown API key")
    request[API_KEY_ID_KEY] = identity
    log_context.bind_user(f"apikey:{identity}")  # the key's public id (never the key)
    request.app[GUARD_KEY].release(request.transport)  # authenticated: off the per-address cap
    return await handler(request)
