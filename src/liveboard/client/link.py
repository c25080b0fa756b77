"""The SDK's transport pieces: the HTTP session it shares, and one open WebSocket (a ``Link``).

Guarantees:

* ``HttpSession`` creates its ``aiohttp.ClientSession`` on first use and closes it only if it
  created it (a session passed in by the caller is never closed here).
* ``Link.send`` hands one encoded client message to the socket or raises
  ``ConnectionLostError``; it never raises aiohttp's own errors.
* ``Link.current`` is True from the moment the connection manager adopts the link until it
  retires it; a retired link is never current again (requests on it fail at once).
* ``drop`` closes a socket with 1000, never raises, and never waits longer than ``wait``.

Everything here runs on the event loop that created the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Final

import aiohttp

from liveboard.client.errors import ConnectionLostError
from liveboard.protocol import ClientMessage, CloseCode, encode_client_message

#: How long a close waits for the server to answer its close frame.
CLOSE_WAIT: Final = 2.0


class HttpSession:
    """The ``aiohttp.ClientSession`` used for the upgrade and for REST calls."""

    def __init__(self, session: aiohttp.ClientSession | None) -> None:
        self._session = session
        self._own = session is None

    def get(self) -> aiohttp.ClientSession:
        """The session (created on first use when none was passed in)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        """Close the session if this object created it; idempotent."""
        if self._own and self._session is not None:
            session, self._session = self._session, None
            await session.close()


@dataclass(eq=False)
class Link:
    """One open WebSocket connection, from its ``connected`` message to its end."""

    ws: aiohttp.ClientWebSocketResponse
    gen: int
    connection_id: str
    user_id: str
    token: str
    opened_at: float
    reader: asyncio.Task[None] | None = None
    dead_reason: str | None = None
    close_code: int | None = None  # from the server's close frame, if one came
    close_reason: str = ""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    retired: bool = False

    @property
    def current(self) -> bool:
        """True while this is the client's connection (requests may be sent on it)."""
        return not self.retired

    async def send(self, message: ClientMessage) -> None:
        """Send one client message; ``ConnectionLostError`` if the socket cannot take it."""
        try:
            await self.ws.send_str(encode_client_message(message).decode())
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise ConnectionLostError(f"cannot send: {exc}") from None


def websocket_url(base_url: str) -> str:
    """``http://host:port`` → ``ws://host:port/ws/connect`` (``https`` → ``wss``)."""
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + "/ws/connect"
    if base.startswith("http://"):
        return "ws://" + base.removeprefix("http://") + "/ws/connect"
    if base.startswith(("ws://", "wss://")):
        return base if base.endswith(("/ws", "/ws/connect")) else base + "/ws/connect"
    raise ValueError(f"base_url must start with http:// or https://, not {base_url!r}")


async def drop(
    ws: aiohttp.ClientWebSocketResponse, wait: float = CLOSE_WAIT, message: bytes = b""
) -> None:
    """Close ``ws``, waiting at most ``wait`` for the handshake (then the socket is cut)."""
    if ws.closed:
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(wait):
            await ws.close(code=CloseCode.NORMAL, message=message)
