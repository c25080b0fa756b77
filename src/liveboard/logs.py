"""Logging set-up: plain text or one JSON object per line (``--log-format json``).

The access log writes the method, the path without its query string (a WebSocket may carry its
token there), the status and the duration: tokens and API keys never reach the logs (nor do
headers; ``redact`` also removes an ``apikey …``/``Bearer …`` credential a library quotes). It
writes at INFO, like every web server's access log: ``LIVEBOARD_LOG_LEVEL=WARNING`` leaves it out.

Each line carries the ids of the work it belongs to (``log_context``): ``request_id``,
``connection_id``, ``user_id``. In JSON they are fields, with ``ts`` an ISO 8601 UTC time with
milliseconds (``2026-12-06T11:46:28.123Z``); in text they follow the message as ``name=value``.

A client cannot forge a log line (CWE-117). In the text format every record is one line that
starts with its timestamp: control characters in the message (C0, DEL, C1, U+2028/U+2029 and
the bidirectional overrides: whatever a client put in a path, a header or a body that a message
quotes) are written as escapes (``\\r``, ``\\n``, ``\\x1b``, ``\\u2028``), and a traceback's lines,
escaped the same way, are indented. In the JSON format the encoder escapes C0 controls, and the
three characters that other line splitters honour (U+0085, U+2028, U+2029) are escaped too.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from liveboard import log_context

_encode = msgspec.json.Encoder().encode
# A token may reach a log line through a library that quotes a request line (a malformed or
# oversized request): query strings (``?…`` after a path) and anything shaped like a JWT (even
# truncated) are replaced before a line is written.
# An ``Authorization`` value quoted whole (``apikey <key>``, ``Bearer <token>``) loses its
# credential too: a service key has no recognisable shape of its own.
_SECRETS = re.compile(
    r"(?<=[\w/])\?[^\s'\"\\]+|eyJ[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]*){0,2}"
    r"|(?i:\b(?:apikey|bearer)\s+)[^\s'\"\\,]+"
)


#: What the credential alternative of ``_SECRETS`` starts with: where neither it nor ``?`` nor
#: ``eyJ`` occurs, nothing is replaced (the common case, checked for much less than ``sub``).
_CREDENTIAL_PREFIX = re.compile(r"(?i:\b(?:apikey|bearer)\s+)")


def redact(text: str) -> str:
    """``text`` with query strings, tokens and API keys replaced by ``[redacted]``."""
    if "?" not in text and "eyJ" not in text and _CREDENTIAL_PREFIX.search(text) is None:
        return text
    return _SECRETS.sub("[redacted]", text)


_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


# Characters that end a line for some reader (\n, \r, \v, \f, \x1c-\x1e, U+0085, U+2028,
# U+2029), or restyle or reorder what a terminal shows (ESC, the bidi overrides and marks): all
# C0 and C1 controls, DEL, and those. The backslash is escaped too, so that the escaping is
# reversible: a client's literal ``\n`` is written ``\\n``, never mistaken for an escaped newline.
_CONTROLS = re.compile(
    "[\\\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
#: Put before each line of a traceback: no line but a record's first starts at column 0.
TRACEBACK_INDENT = "    "


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with each control character (see ``_CONTROLS``) written as an escape: one line."""
    return _CONTROLS.sub(_escape_one, text)


class TextFormatter(logging.Formatter):
    """The plain format: one line per record, then its traceback indented; controls escaped and
    tokens redacted."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.getMessage() + _context_suffix(record))
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        details: list[str] = []
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            details.append(record.exc_text)
        if record.stack_info:
            details.append(self.formatStack(record.stack_info))
        for block in details:
            for line in block.split("\n"):
                text += "\n" + TRACEBACK_INDENT + escape_controls(line)
        return redact(text)


_CONTEXT_FIELDS = ("request_id", "connection_id", "user_id", "trace_id")


def _context_suffix(record: logging.LogRecord) -> str:
    """`` request_id=… user_id=…``: the record's ids, for the text format."""
    parts = [
        f" {name}={value}"
        for name in _CONTEXT_FIELDS
        if (value := getattr(record, name, None)) is not None
    ]
    return "".join(parts)


def iso_timestamp(created: float) -> str:
    """``created`` (unix seconds) as ISO 8601 UTC with milliseconds: ``…T11:46:28.123Z``."""
    moment = datetime.fromtimestamp(created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(self._format(record))

    def _format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": iso_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        text = _encode(entry).decode(errors="replace")
        # Valid inside a JSON string, where alone they can occur; str.splitlines() and some
        # viewers split lines on them.
        return (
            text.replace("\x85", "\\u0085")
            .replace("\u2028", "\\u2028")
            .replace("\u2029", "\\u2029")
        )


class ClientErrorFilter(logging.Filter):
    """On aiohttp's server logger: a request the HTTP parser refused (a malformed head, broken
    chunked framing, a gzip or deflate body that does not decompress) is the client's mistake,
    not the server's.

    aiohttp logs each at ERROR with a traceback ("Error handling request" for a head, "Unhandled
    exception" when it drains a broken body after the answer), which lets any client fill the
    log for free; the request is answered 400 with an access-log line. This filter turns such a
    record into one DEBUG line with the parser's reason and no traceback, and drops it when
    DEBUG is not enabled: at INFO the access log's 400 is the request's only line. Every other
    record (the server's own failures) passes unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError | web.RequestPayloadError):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.msg, record.args = "refused a malformed request: %s", (_reason(exc),)
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info = record.exc_text = None
        return True


def _reason(exc: BaseException) -> str:
    """The first line that says something of aiohttp's multi-line parser message (which starts
    with ``400, message:`` and ends with the offending bytes)."""
    for line in str(exc).split("\n"):
        line = line.strip()
        if line and not re.fullmatch(r"\d{3}, message:", line):
            return line
    return type(exc).__name__


def configure_logging(fmt: str = "text", level: int | str = logging.INFO) -> None:
    """Send every record to stderr in ``fmt`` (``text`` or ``json``), from ``level`` up
    (a number or a name: ``DEBUG``, ``INFO``, ``WARNING``, ``ERROR``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(log_context.ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    server = logging.getLogger("aiohttp.server")
    server.filters[:] = [f for f in server.filters if not isinstance(f, ClientErrorFilter)]
    server.addFilter(ClientErrorFilter())


#: The logger aiohttp writes its access log to; liveboard's own WebSocket path writes there too.
access_log = logging.getLogger("aiohttp.access")


def log_access(
    logger: logging.Logger,
    method: str,
    path: str,
    status: int,
    seconds: float,
    remote: str | None,
    **ids: str | None,
) -> None:
    """One access log line (the path without its query string), alike on both paths.

    ``ids``: ``request_id``, ``connection_id``, ``user_id`` when known (the line is written
    after the work's context has ended, so they are passed)."""
    if not logger.isEnabledFor(logging.INFO):  # LIVEBOARD_LOG_LEVEL=WARNING: no line to build
        return
    extra: dict[str, Any] = {
        "method": method,
        "path": path,
        "status": status,
        "ms": round(seconds * 1000, 2),
        "remote": remote,
    }
    extra.update((name, value) for name, value in ids.items() if value is not None)
    # ``logger.info`` without its search of the stack for the caller (``findCaller``), which no
    # format here writes: the same record otherwise, through the same filters and handlers.
    args = (method, path, status, seconds * 1000)
    record = logger.makeRecord(
        logger.name, logging.INFO, __file__, 0, "%s %s %d %.1fms", args, None, "log_access", extra
    )
    logger.handle(record)


class AccessLogger(AbstractAccessLogger):
    """Access log without query strings, with the request's id, user and client address
    (``log_context.request_context``; a request refused before it ran has the peer's)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_: float) -> None:
        log_access(
            self.logger,
            request.method,
            request.path,
            response.status,
            time_,
            request.get(log_context.CLIENT_KEY, request.remote),
            request_id=request.get(log_context.REQUEST_ID_KEY),
            user_id=request.get(log_context.USER_ID_KEY),
            trace_id=request.get(log_context.TRACE_ID_KEY),
        )
