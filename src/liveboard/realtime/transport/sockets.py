"""The sockets under the WebSockets: kernel buffer and keepalive settings, the peer's address,
and the linger that lets a close frame reach a peer still sending."""

from __future__ import annotations

import asyncio
import contextlib
import socket

#: Kernel send buffer per WebSocket (Linux doubles it): enough for bursts at full speed.
KERNEL_SEND_BUFFER = 256 * 1024
#: After a violation, how long the rest of the peer's input is read and dropped.
LINGER_SECONDS = 1.0


def tune_socket(sock: socket.socket) -> None:
    """Cap the kernel's send buffer so that the slow-consumer bound means what it says, and turn
    on TCP keepalives (as aiohttp does for the connections it serves).

    The hub closes a socket whose unsent bytes in user space pass ``slow_consumer_bytes``; Linux
    would otherwise let the kernel's own buffer autotune up to several MiB on top of that. Set on
    a listening socket, both are inherited by every connection it accepts (``app.listen``).
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


def tune_transport(transport: asyncio.Transport) -> None:
    """``tune_socket`` on one connection's socket: for servers that do not listen through
    ``app.listen`` (``build_app`` alone, as in tests); where the setting was inherited, a no-op."""
    # uvloop raises AttributeError or ValueError for a socket that is already gone.
    with contextlib.suppress(OSError, AttributeError, ValueError):
        sock = transport.get_extra_info("socket")
        if sock is not None:
            tune_socket(sock)


def peer_host(transport: asyncio.BaseTransport) -> str | None:
    """The peer's address (without its port), or None (a Unix socket, a socket gone)."""
    try:
        peer = transport.get_extra_info("peername")
    except (AttributeError, OSError):  # uvloop raises AttributeError once the socket is gone
        return None
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


async def linger(transport: asyncio.Transport) -> None:
    """Let a close frame reach a peer that is still sending (an oversized message, say).

    Closing a socket with unread input makes the kernel send a reset, and a reset makes the peer
    drop what it had not read yet: the close frame and its code. So the write side is shut
    (FIN after the close frame) and what still arrives is read and discarded until the peer
    closes or ``LINGER_SECONDS`` have passed. aiohttp's failed reader discards that input;
    ``WebSocketConnection`` does all of this itself and this wait only keeps the loop with it.
    """
    if transport.is_closing():
        return
    if transport.can_write_eof():
        with contextlib.suppress(OSError, RuntimeError):
            transport.write_eof()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINGER_SECONDS
    # Polled: past the upgrade, aiohttp offers no event for the peer's end of input.
    while not transport.is_closing() and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
