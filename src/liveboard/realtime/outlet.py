"""A subscriber's writing end, as the hub's fan-out sees it.

The hub writes each room's frames to every live subscriber's ``Outlet`` and reads two flags
per socket, ``closed`` and ``blocked``, as plain attributes: the connection keeps them up to date
from the transport's ``pause_writing`` / ``resume_writing`` and its own closing
(``Connection.watch_writes``), so fan-out makes no call into the transport to decide whether to
write. A connection that cannot report them gets a ``PolledOutlet``, which asks the transport.
"""

from __future__ import annotations

from typing import Protocol

from liveboard.realtime.transport import Connection

__all__ = ["Outlet", "PolledOutlet", "Transport", "outlet_for"]


class Transport(Protocol):
    """The part of ``asyncio.Transport`` the hub uses."""

    def write(self, data: bytes) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...


class Outlet:
    """One connection's writing end: frames queued during a delivery, written in one call.

    ``closed``: nothing may be written any more (a close frame went out, the socket is closing
    or gone, or the session ended). ``blocked``: more than the slow-consumer bound waits unsent
    in the transport. Both are set from outside, by the connection (``transport.WriteWatcher``)
    and the session, so reading them costs an attribute load, not a call into the transport.
    """

    __slots__ = ("blocked", "closed", "connection_id", "pending", "transport", "user_id")

    def __init__(self, transport: Transport, connection_id: str, user_id: str) -> None:
        self.transport = transport
        self.connection_id = connection_id
        self.user_id = user_id
        self.pending: list[bytes] = []
        self.closed = False
        self.blocked = False

    def flush(self) -> int:
        """Write what is queued; return the number of bytes still unsent in the transport."""
        frames = self.pending
        if frames and not self.closed:
            self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        frames.clear()
        return self.transport.get_write_buffer_size()


class PolledOutlet(Outlet):
    """An ``Outlet`` whose connection does not report its transport's state: ``closed`` and
    ``blocked`` ask the transport (``is_closing()``, ``get_write_buffer_size()`` against
    ``limit``) each time they are read."""

    __slots__ = ("_closed", "_limit")

    def __init__(self, transport: Transport, connection_id: str, user_id: str, limit: int) -> None:
        self._limit = limit
        self._closed = False
        super().__init__(transport, connection_id, user_id)

    @property
    def closed(self) -> bool:
        return self._closed or self.transport.is_closing()

    @closed.setter
    def closed(self, value: bool) -> None:
        self._closed = value

    @property
    def blocked(self) -> bool:
        return self.transport.get_write_buffer_size() > self._limit

    @blocked.setter
    def blocked(self, value: bool) -> None:
        pass  # computed from the transport each time


def outlet_for(connection: Connection, connection_id: str, user_id: str, limit: int) -> Outlet:
    """The writing end of ``connection``, whose ``blocked`` means more than ``limit`` bytes
    unsent: an ``Outlet`` the connection keeps up to date, or a ``PolledOutlet`` when it
    cannot (``Connection.watch_writes``)."""
    outlet = Outlet(connection.transport, connection_id, user_id)
    if connection.watch_writes(outlet, limit):
        return outlet
    return PolledOutlet(connection.transport, connection_id, user_id, limit)
