"""Checks on the raw bytes a client sends, below aiohttp's WebSocket reader.

aiohttp's reader does not require client frames to be masked, and only tells a heartbeat it
runs itself that data arrived. This module wraps the reader that aiohttp installs after the
upgrade (``request.protocol._payload_parser``, a private attribute of the pinned aiohttp; if it
is missing the wrapper is not installed and a warning is logged once) to:

* refuse unmasked frames (RFC 6455 §5.1: the server must close with 1002), and
* report every chunk received, so that a peer busy sending is never taken for dead.

``MaskScanner`` is pure: it walks frame headers across chunk boundaries and skips payloads in
bulk, so its cost is per frame, not per byte.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("liveboard.ws")
_warned = False


class MaskScanner:
    """Follows the frames of a client's byte stream; ``feed`` is False at the first unmasked."""

    __slots__ = ("_header", "_skip")

    def __init__(self) -> None:
        self._header = bytearray()
        self._skip = 0  # payload bytes of the current frame still to pass over

    def feed(self, data: bytes) -> bool:
        i, end = 0, len(data)
        while i < end:
            if self._skip:
                step = min(self._skip, end - i)
                self._skip -= step
                i += step
                continue
            header = self._header
            header.append(data[i])
            i += 1
            if len(header) < 2:
                continue
            if not header[1] & 0x80:
                return False
            length7 = header[1] & 0x7F
            extended = 2 if length7 == 126 else 8 if length7 == 127 else 0
            if len(header) < 2 + extended + 4:
                continue
            self._skip = (
                length7 if extended == 0 else int.from_bytes(header[2 : 2 + extended], "big")
            )
            header.clear()
        return True


class _CheckedParser:
    """Wraps aiohttp's WebSocket reader: scans for unmasked frames, reports activity."""

    __slots__ = ("_inner", "_on_activity", "_on_violation", "_scanner", "_violated")

    def __init__(
        self,
        inner: Any,
        on_activity: Callable[[], None],
        on_violation: Callable[[], None],
    ) -> None:
        self._inner = inner
        self._scanner = MaskScanner()
        self._on_activity = on_activity
        self._on_violation = on_violation
        self._violated = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._violated:
            return False, b""
        self._on_activity()
        if not self._scanner.feed(data):
            self._violated = True
            self._on_violation()
            return False, b""
        result: tuple[bool, bytes] = self._inner.feed_data(data)
        return result

    def feed_eof(self) -> None:
        self._inner.feed_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def install(
    protocol: Any, on_activity: Callable[[], None], on_violation: Callable[[], None]
) -> bool:
    """Wrap the upgraded connection's reader; False (and one warning) if aiohttp changed."""
    global _warned
    inner = getattr(protocol, "_payload_parser", None)
    if inner is None or not hasattr(inner, "feed_data"):
        if not _warned:
            _warned = True
            log.warning("cannot check client frames: this aiohttp version has no _payload_parser")
        return False
    protocol._payload_parser = _CheckedParser(inner, on_activity, on_violation)
    return True
