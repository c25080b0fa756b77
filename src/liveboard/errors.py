"""The root of liveboard's exceptions.

Every error a user can see is data: a ``code`` from the contract's closed list and a human
``message``. The tree::

    LiveboardError
    ├── ConfigError             bad or missing configuration (serve exits 2)
    ├── StartupError            a dependency unusable at start (serve and migrate exit 1)
    ├── AuthError               a token that is missing, malformed, expired or not trusted (401)
    └── ApiError                a REST error with its HTTP status (400/403/404/409/413/422/429)

``liveboard.protocol.ProtocolError`` (a WebSocket message answered with ``error``) carries a
``code`` and a ``message`` too but stands outside this tree: the protocol package imports
nothing of liveboard, so that the Python SDK can use it without the server.
"""

from __future__ import annotations

from typing import Any


class LiveboardError(Exception):
    """Base class of every error liveboard raises on purpose."""

    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(LiveboardError):
    """The configuration is unusable; the message names the variable."""

    code = "config_error"


class StartupError(LiveboardError):
    """Start-up cannot go on (the database unreachable or refusing us, a migration failing).

    The command logs the message as one line, without a traceback, and exits 1."""

    code = "unavailable"


class AuthError(LiveboardError):
    """A token could not be trusted. The message says why, without echoing the token."""

    code = "unauthorized"


class ApiError(LiveboardError):
    """A REST error: HTTP status, contract code, message and optional details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.details = details


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def not_found(message: str = "not found") -> ApiError:
    return ApiError(404, "not_found", message)


def conflict(message: str, *, details: dict[str, Any] | None = None) -> ApiError:
    return ApiError(409, "conflict", message, details=details)


def validation_error(field: str, message: str) -> ApiError:
    return ApiError(422, "validation_error", f"{field}: {message}", details={"field": field})


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The error body of CONTRACT §3: ``{"error": {"code", "message"[, "details"]}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


#: The code CONTRACT §3 pairs with each status.
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


def status_code(status: int) -> str:
    """The error code for an HTTP status: the contract's pair, else ``bad_request`` for a 4xx
    (405, 417, 431, …) and ``internal_error`` for a 5xx."""
    code = _STATUS_CODES.get(status)
    if code is not None:
        return code
    return "internal_error" if status >= 500 else "bad_request"
