"""What joins log lines up: the request id, connection id and user id of the line's work.

* A REST request gets a request id: the client's ``X-Request-Id`` when it is sane (1-128
  printable ASCII characters, no space), else a new random one (32 hex digits). The answer
  echoes it in ``X-Request-Id``, and every line written while the request is handled carries
  it (``request_id``), its access line included, with the authenticated user (``user_id``) and
  the client's address behind trusted proxies (``remote``, see ``forwarded.py``). With tracing
  on, they carry the request's trace too (``trace_id``, 32 hex digits, as tracing backends
  show it).
* A WebSocket connection's lines carry ``connection_id`` and ``user_id``: ``bind_connection``
  sets them for the task that serves it (and the timers it starts); lines written for it from
  elsewhere (the hub closing a slow consumer) pass them as ``extra``.

The ids travel in context variables, so a line needs no argument to carry them, and
``ContextFilter`` (installed on the log handler by ``logs.configure_logging``) copies them onto
each record. A field a line sets itself (``extra``) wins.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from liveboard.forwarded import Network, client_address

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID_HEADER: Final = "X-Request-Id"
_SANE_REQUEST_ID = re.compile(r"[!-~]{1,128}")

request_id: ContextVar[str | None] = ContextVar("liveboard_request_id", default=None)
connection_id: ContextVar[str | None] = ContextVar("liveboard_connection_id", default=None)
user_id: ContextVar[str | None] = ContextVar("liveboard_user_id", default=None)
#: With tracing on, the trace of the request being handled (set by ``tracing.py``).
trace_id: ContextVar[str | None] = ContextVar("liveboard_trace_id", default=None)

#: What the access log reads back from a request (it runs after the middleware has returned).
REQUEST_ID_KEY: Final = web.RequestKey("request_id", str)
USER_ID_KEY: Final = web.RequestKey("user_id", str)
CLIENT_KEY: Final = web.RequestKey("client_address", str)
TRACE_ID_KEY: Final = web.RequestKey("trace_id", str)

_FIELDS: Final = (
    ("request_id", request_id),
    ("connection_id", connection_id),
    ("user_id", user_id),
    ("trace_id", trace_id),
)


def accepted_request_id(value: str | None) -> str | None:
    """``value`` when it is a sane request id (see the module's doc), else None."""
    if value is not None and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return None


def new_request_id() -> str:
    return os.urandom(16).hex()


class ContextFilter(logging.Filter):
    """Copies the context's ids onto each record that does not carry its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _FIELDS:
            value = var.get()
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        return True


def bind_connection(connection: str, user: str) -> None:
    """Mark the current task's lines (and of the callbacks it schedules from now on) as this
    WebSocket connection's. For the task that serves the connection, which it owns."""
    connection_id.set(connection)
    user_id.set(user)


def bind_user(user: str) -> None:
    """The request being handled was authenticated as ``user`` (its lines say so from here)."""
    user_id.set(user)


def request_context(
    trusted_proxies: Sequence[Network], skip: frozenset[str] = frozenset()
) -> Middleware:
    """The middleware that gives each request its id and client address (``skip``: paths it
    passes straight through, the long-lived WebSocket routes)."""

    @web.middleware
    def middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        if request.path in skip:
            return handler(request)
        return _handle(request, handler)

    async def _handle(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = accepted_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
        request[REQUEST_ID_KEY] = rid
        remote = client_address(
            request.remote,
            trusted_proxies,
            forwarded=request.headers.getall("Forwarded", ()),
            x_forwarded=request.headers.getall("X-Forwarded-For", ()),
        )
        if remote is not None:
            request[CLIENT_KEY] = remote
        rid_token, user_token = request_id.set(rid), user_id.set(None)
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # a redirect, or an error the app lets aiohttp answer
            exc.headers[REQUEST_ID_HEADER] = rid
            raise
        finally:
            user = user_id.get()
            if user is not None:
                request[USER_ID_KEY] = user
            user_id.reset(user_token)
            request_id.reset(rid_token)
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = rid
        return response

    return middleware
