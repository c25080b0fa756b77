"""The seam between a WebSocket and the rest of liveboard: ``Connection``, ``Message``.

See the package docstring (``liveboard.realtime.transport``) for what the seam guarantees and
why the raw transport is part of it.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Any, NamedTuple, Protocol


class MessageKind(enum.Enum):
    """What ``Connection.receive`` returned; ``Message.data`` holds, by kind:

    * ``TEXT``: the message, ``str`` (valid UTF-8, at most the size limit);
    * ``BINARY``: the message, ``bytes``;
    * ``PING`` / ``PONG``: the control frame's payload, ``bytes`` (nothing was answered yet);
    * ``CLOSE``: the peer's close code (``0``: a close frame without one); the answer has
      been written and the socket is closing;
    * ``ERROR``: the peer broke the protocol; the close frame with the violation's code has
      been written and nothing more may be;
    * ``CLOSED``: ``None``; the connection is over (also after this side's ``close``).
    """

    TEXT = enum.auto()
    BINARY = enum.auto()
    PING = enum.auto()
    PONG = enum.auto()
    CLOSE = enum.auto()
    ERROR = enum.auto()
    CLOSED = enum.auto()


class Message(NamedTuple):
    """One thing received from the peer (see ``MessageKind`` for ``data``)."""

    kind: MessageKind
    data: Any


CLOSED_MESSAGE = Message(MessageKind.CLOSED, None)


class Connection(Protocol):
    """An upgraded WebSocket, as the core sees it, whichever server read its handshake.

    One consumer calls ``receive`` in a loop; anyone may write pre-encoded frames to
    ``transport`` (until a close frame is written: then nothing more).
    """

    @property
    def transport(self) -> asyncio.Transport:
        """The socket: frames (``transport.frames``) are written to it as they are, with no
        layer between, so that one encoded frame goes to many sockets at the cost of a write."""
        ...

    async def receive(self) -> Message:
        """The next message from the peer, in arrival order; ``CLOSED`` for good at the end."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> bool:
        """Write a close frame after what is queued, then wait for the peer's answer (the
        caller bounds the wait) and close the socket. False if the socket was closing."""
        ...

    def close_now(self, code: int, reason: str) -> bool:
        """Write a close frame after what is queued, without waiting for anything (a slow
        consumer's answer may never come: the caller cuts the socket later). False if none was
        written: the socket is closing, or this connection knows it wrote one already."""
        ...

    def abort(self) -> None:
        """Drop the socket at once, without a close frame (a dead peer). Idempotent."""
        ...


class Consumer(Protocol):
    """Who an upgraded socket hands its messages to as they arrive, instead of ``receive``
    (``WebSocketConnection.listen``): no task waits on an idle socket. Called inside the
    protocol's callbacks; none of them may block."""

    def on_message(self, message: Message) -> bool:
        """Handle ``message`` (in arrival order): True when done with it, False when the next
        ones must wait until the consumer calls the connection's ``resume``."""
        ...

    def on_activity(self) -> None:
        """Bytes arrived from the peer (before they are parsed): it is alive."""
        ...

    def on_closing(self) -> None:
        """The connection closes on its own (a violation, or the answer to the peer's close
        frame), before the close frame is written: nothing may be sent after it."""
        ...
