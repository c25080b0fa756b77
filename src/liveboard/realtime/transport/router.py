"""Every accepted connection starts here: WebSocket upgrades to liveboard, the rest to aiohttp.

It reads the first request's head. A well-formed upgrade to ``/ws`` or ``/ws/connect``
(``handshake.parse_upgrade``) goes to ``on_upgrade`` with reading paused; anything else, as soon
as its first bytes show it (``GET /api/…``, ``POST …``), or if it is malformed or longer than
``handshake.MAX_HEAD_BYTES``, is handed with every byte read so far to a protocol from
``http_factory`` (aiohttp's ``web.Server``), which then owns the connection for good; that is
also where an upgrade sent after other requests on a keep-alive connection is served.

Each connection is first admitted by the ``guard`` (a cap on unauthenticated connections per
address; a refused one is answered and closed there). One that has not completed its first
request head within the guard's ``head_timeout`` of its accept is closed (aiohttp would hold it
until its keep-alive timeout); the guard's ``release`` is called when a connection still
routed here ends. Routers still waiting are kept in ``pending`` (owned by the listener), which
closes them at shutdown.

aiohttp's per-request state (the parsed request, its handler tasks, its WebSocket reader and
writer) is about 10 KB; a connection that never passes through it does not pay for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from liveboard.realtime.transport import handshake
from liveboard.realtime.transport.guard import ConnectionGuard

UpgradeHandler = Callable[[asyncio.Transport, handshake.Upgrade, bytes], None]


class ConnectionRouter(asyncio.Protocol):
    """Holds a new connection until its first request shows where it belongs."""

    __slots__ = (
        "_buffer",
        "_guard",
        "_http_factory",
        "_on_upgrade",
        "_pending",
        "_timer",
        "_transport",
    )

    def __init__(
        self,
        http_factory: Callable[[], asyncio.BaseProtocol],
        on_upgrade: UpgradeHandler,
        pending: set[ConnectionRouter],
        guard: ConnectionGuard,
    ) -> None:
        self._http_factory = http_factory
        self._on_upgrade = on_upgrade
        self._pending = pending
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without inheriting from it.
        self._transport = cast(asyncio.Transport, transport)
        if not self._guard.admit(self._transport):
            return  # answered and closed: no more data arrives
        self._pending.add(self)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.head_timeout, self._timed_out)

    def abort(self) -> None:
        """Drop a connection still waiting for its first request (shutdown)."""
        self._settle()
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        if not handshake.may_be_upgrade(buffer):
            self._to_http(buffer)
            return
        end = handshake.head_end(buffer)
        if end < 0:
            if len(buffer) > handshake.MAX_HEAD_BYTES:
                self._to_http(buffer)
            else:
                self._buffer = buffer
            return
        upgrade = handshake.parse_upgrade(buffer[:end])
        if upgrade is None:
            self._to_http(buffer)
            return
        transport = self._transport
        assert transport is not None
        self._settle()
        transport.pause_reading()  # until the upgrade is admitted and its protocol installed
        self._on_upgrade(transport, upgrade, buffer[end:])

    def eof_received(self) -> bool | None:
        # The peer stopped sending before its first request was complete: the HTTP server
        # answers what it has (a 400 for a partial head), as it would have without this router.
        protocol = self._to_http(self._buffer)
        if isinstance(protocol, asyncio.Protocol):
            return protocol.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle()
        self._guard.release(self._transport)

    def _timed_out(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._guard.head_timed_out(transport)
            self._settle()
            transport.close()

    def _settle(self) -> None:
        """This router's part is over: forget it, stop its timer."""
        self._pending.discard(self)
        self._buffer = b""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _to_http(self, buffer: bytes) -> asyncio.BaseProtocol:
        transport = self._transport
        assert transport is not None
        self._settle()
        protocol = self._http_factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if buffer and isinstance(protocol, asyncio.Protocol):
            protocol.data_received(buffer)
        return protocol
