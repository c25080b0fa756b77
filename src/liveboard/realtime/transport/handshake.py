"""The WebSocket opening handshake (RFC 6455 §4.2), as pure functions.

Both upgrade paths decide with one rule, ``check_upgrade``: the router's (a connection's first
request, read from raw bytes by ``parse_upgrade``) and aiohttp's (an upgrade after other
requests on a keep-alive connection, parsed by aiohttp; ``endpoint.websocket_handler``). An
upgrade is accepted only over HTTP/1.1, without a body, with one non-empty ``Host``, one
``Upgrade: websocket``, ``Connection: upgrade``, one ``Sec-WebSocket-Version: 13`` and one
``Sec-WebSocket-Key`` of 16 bytes, and at most one ``Origin`` and one ``Authorization`` (RFC 6455
§4.1, §11.3; RFC 6454 §7.3; RFC 9110 §5.3: a field that is not a list may not be repeated). At
most one ``Sec-WebSocket-Protocol`` line too, stricter than RFC 6455 §11.3.4 allows: aiohttp's
path selects a subprotocol from the first line only, and browsers send one, so both paths read
the same list.

``parse_upgrade`` reads the head at least as strictly as aiohttp's parser does (printable ASCII,
header names that are RFC 9110 tokens, no folded lines, aiohttp's line and header-count limits):
a head it does not take whole is handed to aiohttp with every byte, and aiohttp answers it
(a 400 for a malformed head, ``check_upgrade``'s 400 for a bad upgrade). So the router never
accepts a request that aiohttp's path would refuse, and tests/fuzz/test_handshake_differential.py
sends generated heads both ways to check that the two paths answer alike.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
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
#: Header fields that may appear once only in an upgrade request.
SINGLETONS: Final = (
    "host",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "origin",
    "authorization",
    "sec-websocket-protocol",
)
_PREFIX: Final = b"GET /ws"
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: RFC 9110 §5.1, §5.6.2: a field name is a token.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
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
    #: ``Sec-WebSocket-Protocol``'s entries, in order (the admission reads a token from them).
    subprotocols: tuple[str, ...] = ()
    #: ``Forwarded`` and ``X-Forwarded-For`` values (each repeated header), for the log's
    #: client address behind trusted proxies.
    forwarded: tuple[str, ...] = ()
    x_forwarded_for: tuple[str, ...] = ()


def may_be_upgrade(start: bytes) -> bool:
    """False as soon as the first bytes show the request is not ``GET /ws…``."""
    prefix = start[: len(_PREFIX)]
    return _PREFIX.startswith(prefix)


def head_end(buffer: bytes | bytearray) -> int:
    """Index just past the request head's blank line, or -1 while it is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    return -1 if end < 0 else end + 4


class BadUpgrade(NamedTuple):
    """An upgrade request that breaks the handshake's rules: answered 400 ``bad_request``."""

    message: str
    #: Extra response headers: ``Sec-WebSocket-Version: 13`` when the version is the problem
    #: (RFC 6455 §4.4).
    headers: tuple[tuple[str, str], ...] = ()


_VERSION_HEADERS: Final = (("Sec-WebSocket-Version", "13"),)


def parse_upgrade(head: bytes) -> Upgrade | None:
    """The upgrade request in ``head`` (up to and including its blank line), or None when the
    head is not one that ``check_upgrade`` accepts (or not one this reader takes whole)."""
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
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        # Not a token: also an obs-fold continuation line (RFC 9112 §5.2), a space before the
        # colon, a line without one.
        if not colon or not _TOKEN.fullmatch(name):
            return None
        if not _printable(value.replace("\t", " ")):
            return None
        headers.append((name, value))
    upgrade = check_upgrade((1, 1), path, raw_query, headers)
    return upgrade if isinstance(upgrade, Upgrade) else None


def check_upgrade(
    version: tuple[int, int],
    path: str,
    raw_query: str,
    headers: Iterable[tuple[str, str]],
) -> Upgrade | BadUpgrade:
    """The rule both paths apply to a ``GET`` of ``path`` with these header fields (in order,
    repeated ones repeated): the upgrade, or why it is refused."""
    if version != (1, 1):
        return BadUpgrade("a WebSocket upgrade needs HTTP/1.1")
    fields: dict[str, list[str]] = {}
    for name, value in headers:
        fields.setdefault(name.lower(), []).append(value.strip(" \t"))
    if "content-length" in fields or "transfer-encoding" in fields:
        return BadUpgrade("a WebSocket upgrade has no body")
    for name in SINGLETONS:
        if len(fields.get(name, ())) > 1:
            extra = _VERSION_HEADERS if name == "sec-websocket-version" else ()
            return BadUpgrade(f"more than one {name} header", extra)
    single = {name: values[0] for name, values in fields.items() if name in SINGLETONS}
    connection = {
        token.strip(" \t").lower()
        for value in fields.get("connection", ())
        for token in value.split(",")
    }
    if single.get("upgrade", "").lower() != "websocket" or "upgrade" not in connection:
        return BadUpgrade("not a WebSocket upgrade: send Upgrade: websocket, Connection: Upgrade")
    if single.get("sec-websocket-version") != "13":
        return BadUpgrade("Sec-WebSocket-Version must be 13", _VERSION_HEADERS)
    key = single.get("sec-websocket-key")
    if key is None or not _valid_key(key):
        return BadUpgrade("Sec-WebSocket-Key must be 16 bytes in base64")
    host = single.get("host")
    if not host:
        return BadUpgrade("a Host header is required")
    return Upgrade(
        path,
        raw_query,
        host,
        single.get("origin"),
        single.get("authorization"),
        key,
        _list_entries(single.get("sec-websocket-protocol", "")),
        tuple(fields.get("forwarded", ())),
        tuple(fields.get("x-forwarded-for", ())),
    )


def accept_value(key: str) -> str:
    """``Sec-WebSocket-Accept`` for ``key`` (§4.2.2)."""
    digest = hashlib.sha1(key.encode("ascii") + _GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def switching_protocols(key: str, subprotocol: str | None = None) -> bytes:
    """The 101 response that completes the handshake, naming ``subprotocol`` if one was
    selected (no extension)."""
    selected = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"{selected}Sec-WebSocket-Accept: {accept_value(key)}\r\n\r\n"
    ).encode("ascii")


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    retry_after: int | None = None,
) -> bytes:
    """A refusal with the REST error body (CONTRACT §3, as ``rest.error_response`` writes it),
    closing the connection; ``retry_after`` (seconds) as ``Retry-After``."""
    body = _encode_json(error_body(code, message, details))
    extra = "WWW-Authenticate: Bearer\r\n" if status == 401 else ""
    if retry_after is not None:
        extra += f"Retry-After: {int(retry_after)}\r\n"
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _list_entries(value: str) -> tuple[str, ...]:
    """A list-valued field's entries (RFC 9110 §5.6.1), in order, empty ones dropped."""
    return tuple(entry for entry in (part.strip(" \t") for part in value.split(",")) if entry)


def _printable(text: str) -> bool:
    return text.isascii() and text.isprintable()


def _valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False
