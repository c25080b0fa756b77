"""The WebSocket opening handshake (RFC 6455 §4.2) read from raw bytes, as pure functions.

``parse_upgrade`` accepts only a strictly well-formed upgrade to ``/ws`` or ``/ws/connect``:
``GET`` in origin form over HTTP/1.1, printable ASCII, no body, one ``Host``, ``Upgrade:
websocket``, ``Connection: upgrade``, version 13 and a 16-byte key. Anything else returns None
and the caller hands the bytes to the HTTP server, which answers as it always has (a 400, say),
so this module never has to produce an HTTP error of its own for a malformed request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any, Final, NamedTuple

import msgspec

from liveboard.errors import error_body

WEBSOCKET_PATHS: Final = frozenset({"/ws", "/ws/connect"})
#: The longest request head looked at; a longer one is the HTTP server's to refuse.
MAX_HEAD_BYTES: Final = 16 * 1024
#: aiohttp's limits on one line and on the number of headers (128 in its C parser, 126 in its
#: Python one): a head past them goes to aiohttp, which refuses it, so that both paths accept
#: the same requests.
MAX_LINE_BYTES: Final = 8190
MAX_HEADERS: Final = 126
_PREFIX: Final = b"GET /ws"
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_REASONS: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_encode_json = msgspec.json.Encoder().encode


class Upgrade(NamedTuple):
    """What the admission checks need from an upgrade request."""

    path: str
    raw_query: str
    host: str
    origin: str | None
    authorization: str | None
    key: str


def may_be_upgrade(start: bytes) -> bool:
    """False as soon as the first bytes show the request is not ``GET /ws…``."""
    prefix = start[: len(_PREFIX)]
    return _PREFIX.startswith(prefix)


def head_end(buffer: bytes | bytearray) -> int:
    """Index just past the request head's blank line, or -1 while it is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    return -1 if end < 0 else end + 4


def parse_upgrade(head: bytes) -> Upgrade | None:
    """The upgrade request in ``head`` (up to and including its blank line), or None."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = text[:-4].split("\r\n")
    if len(lines) > MAX_HEADERS + 1 or max(map(len, lines)) > MAX_LINE_BYTES:
        return None
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] != "GET" or parts[2] != "HTTP/1.1":
        return None
    target = parts[1]
    if "#" in target or not _printable(target):
        return None
    path, _, raw_query = target.partition("?")
    if path not in WEBSOCKET_PATHS:
        return None
    single: dict[str, str] = {}
    tokens: dict[str, set[str]] = {"upgrade": set(), "connection": set()}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or not _printable(name) or " " in name or "\t" in name:
            return None  # also an obs-fold continuation line (RFC 9112 §5.2)
        value = value.strip(" \t")
        if not _printable(value.replace("\t", " ")):
            return None
        name = name.lower()
        if name in tokens:
            tokens[name].update(t.strip(" \t").lower() for t in value.split(","))
        elif name in ("content-length", "transfer-encoding"):
            return None  # a body on an upgrade request: the HTTP server decides
        elif name in single:
            if name == "host":
                return None
        else:
            single[name] = value
    host, key = single.get("host"), single.get("sec-websocket-key")
    if (
        not host
        or key is None
        or "websocket" not in tokens["upgrade"]
        or "upgrade" not in tokens["connection"]
        or single.get("sec-websocket-version") != "13"
        or not _valid_key(key)
    ):
        return None
    return Upgrade(path, raw_query, host, single.get("origin"), single.get("authorization"), key)


def accept_value(key: str) -> str:
    """``Sec-WebSocket-Accept`` for ``key`` (§4.2.2)."""
    digest = hashlib.sha1(key.encode("ascii") + _GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def switching_protocols(key: str) -> bytes:
    """The 101 response that completes the handshake (no subprotocol, no extension)."""
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_value(key)}\r\n\r\n"
    ).encode("ascii")


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> bytes:
    """A refusal with the REST error body (CONTRACT §3, as ``rest.error_response`` writes it),
    closing the connection."""
    body = _encode_json(error_body(code, message, details))
    extra = "WWW-Authenticate: Bearer\r\n" if status == 401 else ""
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _printable(text: str) -> bool:
    return text.isascii() and text.isprintable()


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False
