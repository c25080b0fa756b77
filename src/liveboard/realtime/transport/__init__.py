"""Bytes and sockets: everything that knows the WebSocket wire, and nothing of the core.

Nothing here imports the node, the hub, the session or the store; they import this. The
modules:

* ``handshake``: the opening handshake, pure: the upgrade rule of both paths, the head parser.
* ``rfc6455``: the client frame reader, pure (masking, fragments, limits, UTF-8, close codes).
* ``frames``: server frames as bytes, built once and written to many sockets.
* ``router``: each accepted connection starts here; well-formed upgrades to liveboard, the rest
  to aiohttp.
* ``guard``: connections not authenticated yet (per-address cap) and the head, body and send
  timeouts.
* ``connection``: ``WebSocketConnection``, an upgraded socket served without aiohttp.
* ``aiohttp_ws``: ``AiohttpConnection``, aiohttp's WebSocket behind the same seam; the only
  module that touches aiohttp's WebSocket or its private attributes.
* ``sockets``: kernel buffer and keepalive settings, the peer's address, the linger.
* ``http_errors``: aiohttp's HTTP connection protocol with the contract's error body on the
  answers aiohttp writes itself (unparsable heads, escaped failures); it reads the private
  options of aiohttp's ``Server``, so it lives here with the other code that knows aiohttp's
  insides.

The seam: ``Connection``
------------------------

A WebSocket reaches the core as a ``Connection``, whichever server read its handshake (the
router and ``WebSocketConnection`` for a connection's first request, aiohttp for an upgrade
after other requests on a keep-alive connection). Both implementations guarantee the same:

* ``receive()`` returns liveboard's ``Message`` (``MessageKind`` and data), one consumer, in
  arrival order. Ping frames are handed over, not answered (the session answers them behind
  what it has queued). The peer's close frame is answered (1000; 1002 to a code the peer may not
  send) before ``CLOSE`` is returned. A protocol violation has been answered with its close
  frame (1002, 1007, 1009) when ``ERROR`` is returned: nothing may be written after it.
  ``CLOSED`` is the end, returned for good.
* ``close(code, reason)`` is the graceful close: one close frame after what is queued, then
  the peer's answer is awaited (the caller bounds the wait) and the socket closed.
  ``close_now(code, reason)`` writes the close frame and returns (a slow consumer, whose
  answer may never come: the caller cuts the socket later). ``abort()`` drops it at once.

Why the raw ``asyncio.Transport`` is part of the seam: fan-out is the hot path. The hub encodes
an event's frame once and writes the same bytes to every subscriber's ``transport`` in one
``write`` per socket (``hub.Outlet``). A method of the connection in between would cost a call
per delivery for nothing: a server frame is the same bytes on both paths. So ``transport`` is the
socket itself, and anything written to it goes out after what is queued, as is. Whoever writes
must stop once a close frame was written (the session's ``closing``).
"""

from liveboard.realtime.transport.base import (
    CLOSED_MESSAGE,
    Connection,
    Consumer,
    Message,
    MessageKind,
)

__all__ = ["CLOSED_MESSAGE", "Connection", "Consumer", "Message", "MessageKind"]
