"""Logging set-up: plain text or one JSON object per line (``--log-format json``).

The access log writes the method, the path without its query string (a WebSocket may carry its
token there), the status and the duration: tokens never reach the logs.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

_encode = msgspec.json.Encoder().encode
# A token may reach a log line through a library that quotes a request line (a malformed or
# oversized request): query strings (``?…`` after a path) and anything shaped like a JWT (even
# truncated) are replaced before a line is written.
_SECRETS = re.compile(r"(?<=[\w/])\?[^\s'\"\\]+|eyJ[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]*){0,2}")


def redact(text: str) -> str:
    """``text`` with query strings and tokens replaced by ``[redacted]``."""
    return _SECRETS.sub("[redacted]", text)


_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


class TextFormatter(logging.Formatter):
    """The plain format, with tokens redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(self._format(record))

    def _format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _encode(entry).decode(errors="replace")


def configure_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class AccessLogger(AbstractAccessLogger):
    """Access log without query strings."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time_: float) -> None:
        self.logger.info(
            "%s %s %d %.1fms",
            request.method,
            request.path,
            response.status,
            time_ * 1000,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "ms": round(time_ * 1000, 2),
                "remote": request.remote,
            },
        )
