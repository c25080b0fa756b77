"""Logging set-up: plain text or one JSON object per line (``--log-format json``).

The access log writes the method, the path without its query string (a WebSocket may carry its
token there), the status and the duration: tokens never reach the logs.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

_encode = msgspec.json.Encoder().encode
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
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
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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
