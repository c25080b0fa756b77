"""Fakes of what the server writes to: an ``asyncio.Transport`` that records each write.

``FakeTransport`` stands for a socket in the hub's tests and the node's: it keeps every write,
reports a chosen ``backlog`` as its write buffer (a peer that does not read), and decodes the
unmasked text frames written so far (``messages``, ``offsets``).
"""

from __future__ import annotations

import json


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
