"""Bounds on connections that have not shown who they are yet, and on slow requests.

Every accepted connection is *held* by ``ConnectionGuard`` from its accept until it
authenticates (a REST call whose token verifies, a WebSocket admitted) or closes. At most
``max_pending_per_address`` are held per client address (``address_key``: an IPv4 address, or an
IPv6 /64); one more is answered 429 ``rate_limited`` and closed at once, so that one client
cannot take every file descriptor of the process with idle sockets. Behind a reverse proxy every
connection comes from the proxy's address, so the cap is set to 0 (off) there and the proxy
limits its clients (docs/operations.md).

Timeouts (``config.Settings``): a request head must be complete within
``head_timeout`` of the accept or of the first byte after a response, on both paths (the router
closes a connection whose first head is late; ``GuardedHttp`` does it on aiohttp's path); a body
within ``body_timeout`` of its head (``rest.read_body``); an idle keep-alive connection is
closed by aiohttp after ``keepalive_timeout``; an HTTP response the client stops reading for
``send_timeout`` is cut (``GuardedHttp``; a WebSocket has the slow-consumer bound instead).

Refusals and timeouts are counted (``Counters``: the process's ``Metrics``) and logged through a
``Tally``: the first at once, then at most one line per ``TALLY_WINDOW`` seconds with their number,
so that a flood of them cannot flood the log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, cast

from aiohttp import web

from liveboard.realtime.transport import handshake
from liveboard.realtime.transport.sockets import peer_host

log = logging.getLogger("liveboard.guard")

#: Seconds between two log lines of one ``Tally``.
TALLY_WINDOW: Final = 10.0
REFUSAL: Final = handshake.error_response(
    429, "rate_limited", "too many unauthenticated connections from this address"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Count(Protocol):
    """A counter (prometheus-client's ``Counter``)."""

    def inc(self, amount: float = 1) -> None: ...


class Counters(Protocol):
    """The counters the guard bumps (``metrics.Metrics`` has them, among others)."""

    @property
    def connections_refused(self) -> Count: ...
    @property
    def head_timeouts(self) -> Count: ...
    @property
    def send_timeouts(self) -> Count: ...
    @property
    def body_timeouts(self) -> Count: ...


def address_key(host: str | None) -> str:
    """The client address the per-address cap counts under: an IPv4 address as is (also when
    IPv4-mapped), an IPv6 address as its /64 (one subscriber's usual allocation); anything
    else (a Unix socket, an unknown peer) as it is given, or ``"?"``."""
    if not host:
        return "?"
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class AddressCounts:
    """How many connections each address holds, under a cap per address (0: no cap). Pure."""

    __slots__ = ("_counts", "cap")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._counts: dict[str, int] = {}

    def add(self, key: str) -> bool:
        """Count one more for ``key``; False (and nothing counted) if it holds ``cap`` already."""
        count = self._counts.get(key, 0)
        if self.cap and count >= self.cap:
            return False
        self._counts[key] = count + 1
        return True

    def remove(self, key: str) -> None:
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)

    def of(self, key: str) -> int:
        return self._counts.get(key, 0)


class Tally:
    """One kind of event in the log: the first at once, then at most one line per ``window``
    seconds saying how many more there were, from how many addresses, and the busiest one."""

    __slots__ = ("_counts", "_handle", "_level", "_what", "window")

    def __init__(self, what: str, level: int, window: float = TALLY_WINDOW) -> None:
        self._what = what
        self._level = level
        self.window = window
        self._counts: dict[str, int] = {}
        self._handle: asyncio.TimerHandle | None = None

    def record(self, key: str) -> None:
        if self._handle is None:
            log.log(self._level, "%s: %s", self._what, key, extra={"remote": key})
            self._handle = asyncio.get_running_loop().call_later(self.window, self._flush)
        else:
            self._counts[key] = self._counts.get(key, 0) + 1

    def _flush(self) -> None:
        counts, self._counts = self._counts, {}
        if not counts:
            self._handle = None  # quiet for a whole window: the next one is logged at once
            return
        top = max(counts, key=counts.__getitem__)
        log.log(
            self._level,
            "%s: %d more in the last %gs, from %d address(es), most from %s (%d)",
            self._what,
            sum(counts.values()),
            self.window,
            len(counts),
            top,
            counts[top],
        )
        self._handle = asyncio.get_running_loop().call_later(self.window, self._flush)


class ConnectionGuard:
    """The connections of one listener that have not authenticated yet, and its timeouts.

    Guarantees: a connection ``admit`` refused was answered 429 and closed, and never reaches
    the router's logic; every connection admitted is released exactly once, whichever comes
    first of ``release`` (authenticated) and its end (``ConnectionRouter`` or ``GuardedHttp``
    call ``release`` from ``connection_lost``), so the counts cannot drift.
    """

    def __init__(
        self,
        metrics: Counters,
        *,
        head_timeout: float = 10.0,
        body_timeout: float = 30.0,
        send_timeout: float = 60.0,
        max_per_address: int = 0,
    ) -> None:
        self.metrics = metrics
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.send_timeout = send_timeout
        self._counts = AddressCounts(max_per_address)
        # transport -> (address key, loop time of its accept)
        self._held: dict[asyncio.BaseTransport, tuple[str, float]] = {}
        self._refused = Tally(
            "connection refused: too many unauthenticated connections from one address"
            f" (LIVEBOARD_MAX_PENDING_PER_ADDRESS={max_per_address})",
            logging.WARNING,
        )
        self._head_late = Tally(
            f"connection closed: request head not complete within {head_timeout:g}s"
            " (LIVEBOARD_HEAD_TIMEOUT)",
            logging.INFO,
        )
        self._body_late = Tally(
            f"request answered 400: body not complete within {body_timeout:g}s"
            " (LIVEBOARD_BODY_TIMEOUT)",
            logging.INFO,
        )
        self._send_stalled = Tally(
            f"connection cut: the client read nothing of its response for {send_timeout:g}s"
            " (LIVEBOARD_SEND_TIMEOUT)",
            logging.INFO,
        )

    @property
    def unauthenticated(self) -> int:
        """Connections held now (open, not authenticated yet)."""
        return len(self._held)

    def admit(self, transport: asyncio.Transport) -> bool:
        """Hold a new connection; False if its address holds the most allowed already: then
        it has been answered 429 and closed."""
        key = address_key(peer_host(transport))
        if not self._counts.add(key):
            self.metrics.connections_refused.inc()
            self._refused.record(key)
            transport.write(REFUSAL)
            transport.close()
            return False
        self._held[transport] = (key, asyncio.get_running_loop().time())
        return True

    def release(self, transport: asyncio.BaseTransport | None) -> None:
        """The connection authenticated or ended: it no longer counts. Idempotent."""
        entry = self._held.pop(transport, None) if transport is not None else None
        if entry is not None:
            self._counts.remove(entry[0])

    def first_head_deadline(self, transport: asyncio.BaseTransport) -> float:
        """Loop time by which the connection's first request head must be complete."""
        entry = self._held.get(transport)
        start = entry[1] if entry is not None else asyncio.get_running_loop().time()
        return start + self.head_timeout

    def head_timed_out(self, transport: asyncio.BaseTransport) -> None:
        self.metrics.head_timeouts.inc()
        self._head_late.record(address_key(peer_host(transport)))

    def send_timed_out(self, transport: asyncio.BaseTransport) -> None:
        self.metrics.send_timeouts.inc()
        self._send_stalled.record(address_key(peer_host(transport)))

    def body_timed_out(self, transport: asyncio.BaseTransport | None) -> None:
        self.metrics.body_timeouts.inc()
        host = peer_host(transport) if transport is not None else None
        self._body_late.record(address_key(host))

    def wrap(self, protocol: asyncio.BaseProtocol) -> GuardedHttp:
        """``protocol`` (aiohttp's, for one connection) behind the head deadline."""
        return GuardedHttp(self, protocol)


GUARD_KEY: Final = web.AppKey("connection_guard", ConnectionGuard)


class GuardedHttp(asyncio.Protocol):
    """aiohttp's protocol for one connection, forwarded to, behind a request-head deadline.

    aiohttp bounds only the time from a response to the next request (its
    ``keepalive_timeout``, whether bytes arrive meanwhile or not), not how long a head may take.
    This arms a timer when the connection reaches aiohttp (due ``head_timeout`` after the
    accept) and at the first byte received while no request is being handled, and disarms it
    when a request starts (``track_requests``). If it fires first, the connection is closed.
    Bytes that arrive while a request is being handled are not inspected, so a partial head
    pipelined behind a complete request is left to ``keepalive_timeout``.

    Sending is watched too: once the transport has asked to pause writing (the client reads
    nothing and the buffers are full) and has not resumed within ``send_timeout``, the
    connection is aborted, whatever aiohttp is waiting for (a handler's drain, pipelined
    requests queued behind it). Not for a WebSocket, which has the slow-consumer bound and the
    heartbeat.
    """

    __slots__ = ("_busy", "_guard", "_inner", "_stall", "_timer", "_transport", "_websocket")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.BaseProtocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._stall: asyncio.TimerHandle | None = None
        self._busy = False
        self._websocket = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without inheriting from it.
        self._transport = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(self._guard.first_head_deadline(transport), self._timed_out)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is None and not self._busy:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._guard.head_timeout, self._timed_out)
        self._inner.data_received(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()  # type: ignore[attr-defined]
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._unstall()
        self._guard.release(self._transport)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._stall is None and not self._websocket:
            loop = asyncio.get_running_loop()
            self._stall = loop.call_later(self._guard.send_timeout, self._send_timed_out)
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._unstall()
        self._inner.resume_writing()

    def request_started(self, *, websocket: bool = False) -> None:
        """A request's head is complete and its handler runs (for good, if a WebSocket)."""
        self._busy = True
        self._disarm()
        if websocket:
            self._websocket = True
            self._unstall()

    def request_finished(self) -> None:
        self._busy = False

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _unstall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _send_timed_out(self) -> None:
        self._stall = None
        transport = self._transport
        if transport is None or self._websocket:
            return
        self._guard.send_timed_out(transport)
        transport.abort()  # close() would wait for the client to read what is queued

    def _timed_out(self) -> None:
        self._timer = None
        transport = self._transport
        if self._busy or transport is None or transport.is_closing():
            return
        self._guard.head_timed_out(transport)
        transport.close()


@web.middleware
def track_requests(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Tell the connection's ``GuardedHttp`` when a request starts and ends (the outermost
    middleware). A WebSocket holds its connection to the end, under the heartbeat: it is
    handed straight to its handler, with no coroutine of this middleware alive meanwhile."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    if not isinstance(protocol, GuardedHttp):
        return handler(request)
    if request.method == "GET" and request.path in handshake.WEBSOCKET_PATHS:
        protocol.request_started(websocket=True)
        return handler(request)
    protocol.request_started()
    return _finished_after(protocol, handler(request))


async def _finished_after(
    protocol: GuardedHttp, response: Awaitable[web.StreamResponse]
) -> web.StreamResponse:
    try:
        return await response
    finally:
        protocol.request_finished()
