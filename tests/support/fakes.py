"""Fakes for the real-time core's tests without sockets: a transport, a hub listener, events.

``FakeTransport`` stands for a socket (hub, node, session and repair tests): it keeps every
write, reports a chosen ``backlog`` as its write buffer (a peer that does not read), and decodes
the unmasked text frames written so far (``messages``, ``offsets``). ``FakeConnection`` is one
that is also a session's ``transport.Connection``, with no peer. ``Recorder`` is the hub's
listener, recording the rooms it reported a gap or a resync for and the slow consumers it
closed. ``ev`` makes one event of a room at an offset.
"""

from __future__ import annotations

import json

from liveboard.protocol import BrokerEvent
from liveboard.realtime.hub import Room
from liveboard.realtime.outlet import Outlet
from liveboard.realtime.transport import CLOSED_MESSAGE, Message, WriteWatcher
from liveboard.realtime.transport.frames import close_frame


class FakeTransport:
    """Records each write; ``backlog`` simulates bytes the peer has not read."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.backlog = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return self.backlog

    def is_closing(self) -> bool:
        return self.closing

    def messages(self) -> list[dict[str, object]]:
        """Decode the unmasked text frames written so far."""
        out: list[dict[str, object]] = []
        data = b"".join(self.writes)
        while data:
            assert data[0] == 0x81, "a final text frame"
            length = data[1]
            start = 2
            if length == 126:
                length, start = int.from_bytes(data[2:4], "big"), 4
            elif length == 127:
                length, start = int.from_bytes(data[2:10], "big"), 10
            out.append(json.loads(data[start : start + length]))
            data = data[start + length :]
        return out

    def offsets(self) -> list[object]:
        return [m["offset"] for m in self.messages()]


class FakeConnection(FakeTransport):
    """A ``transport.Connection`` that is its own transport: a session's socket, no peer."""

    @property
    def transport(self) -> FakeConnection:
        return self

    async def receive(self) -> Message:
        return CLOSED_MESSAGE

    def abort(self) -> None:
        self.closing = True

    async def close(self, code: int = 1000, reason: str = "") -> bool:
        self.closing = True
        return True

    def close_now(self, code: int, reason: str) -> bool:
        self.write(close_frame(code, reason))
        return True

    def watch_writes(self, watcher: WriteWatcher, limit: int) -> bool:
        return False  # the session's outlet asks this transport (``outlet.PolledOutlet``)


def ev(offset: int, room: str = "project:p1", epoch: str = "e1") -> BrokerEvent:
    return BrokerEvent(
        type="task:deleted",
        room=room,
        offset=offset,
        epoch=epoch,
        ts=0,
        user_id="u",
        data={"taskId": f"t{offset}"},
    )


class Recorder:
    def __init__(self) -> None:
        self.gaps: list[str] = []
        self.resyncs: list[str] = []
        self.slow: list[str] = []

    def gap(self, room: Room) -> None:
        self.gaps.append(room.name)

    def resync(self, room: Room) -> None:
        self.resyncs.append(room.name)

    def slow_consumer(self, outlet: Outlet) -> None:
        outlet.closed = True
        self.slow.append(outlet.connection_id)
