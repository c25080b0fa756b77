"""The answers aiohttp writes itself, before or around the application, with the error body.

aiohttp answers a request it cannot parse (a header name that is not a token, a control
character, a line over 8,190 bytes) and a failure that escapes every handler with a plain-text
body of its own, and the 400's text quotes the offending line: an ``Authorization`` line with its
bearer token, for one. ``JsonErrorRequestHandler`` answers both with the contract's error body
(CONTRACT §3: ``bad_request`` for a 4xx it cannot parse, ``internal_error`` for a 500) and a
fixed message that quotes nothing of the request. What aiohttp logs about them is left as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from liveboard.errors import error_body, status_code

_MESSAGES = {
    400: "the request is not valid HTTP/1.1",
    500: "internal server error",
}


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection protocol, whose own error answers have the contract's body."""

    __slots__ = ()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own handling logs the error and refuses to answer twice (a ConnectionError
        # once a response has begun); its text answer, which may quote the request, is dropped.
        super().handle_error(request, status, exc, message)
        text = _MESSAGES.get(status, "the request could not be served")
        response = web.json_response(error_body(status_code(status), text), status=status)
        response.force_close()
        return response


def json_error_handlers(server: web.Server) -> Callable[[], RequestHandler]:
    """A protocol factory for ``server`` (a runner's ``server``) whose connections answer
    their own errors with the contract's body: what ``server()`` would make, with its options."""
    loop = asyncio.get_running_loop()
    # The runner's handler options (timeouts, access log), passed on as aiohttp's Server does.
    options: dict[str, Any] = server._kwargs

    def make() -> RequestHandler:
        return JsonErrorRequestHandler(server, loop=loop, **options)

    return make
