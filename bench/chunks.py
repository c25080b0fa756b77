"""Whole received chunks as the load generator's unit of work, so that it costs less than the
server it measures.

A server that writes one room's events to every subscriber writes the same bytes to each socket:
the chunk one ``recv`` returns on one connection is, most of the time, byte for byte a chunk
already received on another. ``ChunkTable`` remembers each distinct chunk that held only whole
event frames (their offsets, ``ts`` and trace tags), so a repeat costs one dict lookup and two
appends, whatever the number of frames in it; the latency of each of its deliveries is worked
out at the end of the phase (``expand``). Anything else (a chunk not seen before, one that
splits a frame, a control frame) goes to the WebSocket library as usual.

``scan_frames`` is pure: it walks the frame headers of server → client bytes (unmasked, RFC 6455
§5.2) and tells how many whole frames they hold and how many bytes of an unfinished one follow.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

#: Distinct chunks remembered per phase, and their total size (bytes); past either, new chunks
#: are no longer remembered (they still go the usual way).
MAX_CHUNKS = 100_000
MAX_CHUNK_BYTES = 256 << 20


def scan_frames(data: bytes) -> tuple[int, int, bool]:
    """(whole frames, bytes left of an unfinished frame, every whole frame is text).

    ``data`` must start at a frame boundary. A masked frame (never sent by a server) counts as
    not text, so a chunk holding one is never remembered.
    """
    i, end, frames, text = 0, len(data), 0, True
    while i < end:
        if end - i < 2:
            return frames, end - i, text
        first, second = data[i], data[i + 1]
        length = second & 0x7F
        header = 2
        if length == 126:
            header = 4
            if end - i < header:
                return frames, end - i, text
            length = int.from_bytes(data[i + 2 : i + 4], "big")
        elif length == 127:
            header = 10
            if end - i < header:
                return frames, end - i, text
            length = int.from_bytes(data[i + 2 : i + 10], "big")
        if second & 0x80:
            text = False
            header += 4
        if end - i < header + length:
            return frames, end - i, text
        if first != 0x81:  # FIN + text, no extension bits
            text = False
        frames += 1
        i += header + length
    return frames, 0, text


@dataclass(frozen=True, slots=True)
class Chunk:
    """One remembered chunk: its index in the table and the event offsets it carries."""

    index: int
    first: int
    last: int
    consecutive: bool  # offsets first, first + 1, …, last
    offsets: tuple[int, ...]


class ChunkTable:
    """Chunks seen whole, and the receipts of repeats since the last ``clear``."""

    def __init__(self) -> None:
        self.chunks: dict[bytes, Chunk] = {}
        self._bytes = 0
        self._start = array("q")  # per chunk: its first row in the flat arrays below
        self._count = array("q")  # per chunk: its frames
        self._ts = array("q")  # per frame of every chunk: the event's ts (ms)
        self._tag = array("q")  # ... and its trace tag (-1: none)
        self.hit_index = array("q")  # per repeat received: the chunk ...
        self.hit_time = array("d")  # ... and when (unix seconds)

    def clear(self) -> None:
        self.chunks.clear()
        self._bytes = 0
        for column in (self._start, self._count, self._ts, self._tag):
            del column[:]
        del self.hit_index[:]
        del self.hit_time[:]

    def remember(self, data: bytes, frames: list[tuple[int, int, int]]) -> None:
        """``data`` held exactly ``frames`` ((offset, ts, tag) of each event frame, in order)."""
        if (
            not frames
            or len(self.chunks) >= MAX_CHUNKS
            or self._bytes + len(data) > MAX_CHUNK_BYTES
            or data in self.chunks
        ):
            return
        offsets = tuple(f[0] for f in frames)
        first, last = offsets[0], offsets[-1]
        index = len(self._start)
        self._start.append(len(self._ts))
        self._count.append(len(frames))
        self._ts.extend(f[1] for f in frames)
        self._tag.extend(f[2] for f in frames)
        consecutive = all(b == a + 1 for a, b in pairwise(offsets))
        self.chunks[data] = Chunk(index, first, last, consecutive, offsets)
        self._bytes += len(data)

    @property
    def deliveries(self) -> int:
        """Event deliveries received as repeats since the last ``clear``."""
        if not self.hit_index:
            return 0
        counts = np.frombuffer(self._count, dtype=np.int64)
        return int(counts[np.frombuffer(self.hit_index, dtype=np.int64)].sum())

    def expand(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per delivery received as a repeat: (latency ms, trace tag, receipt time)."""
        if not self.hit_index:
            empty = np.empty(0)
            return empty.astype(np.float32), empty.astype(np.int64), empty
        hits = np.frombuffer(self.hit_index, dtype=np.int64)
        times = np.frombuffer(self.hit_time, dtype=np.float64)
        starts = np.frombuffer(self._start, dtype=np.int64)[hits]
        counts = np.frombuffer(self._count, dtype=np.int64)[hits]
        total = int(counts.sum())
        # Row of each delivery in the flat arrays: its chunk's start plus its place in the chunk.
        first_of_hit = np.repeat(np.cumsum(counts) - counts, counts)
        rows = np.repeat(starts, counts) + (np.arange(total) - first_of_hit)
        received = np.repeat(times, counts)
        ts = np.frombuffer(self._ts, dtype=np.int64)[rows]
        latency = (received * 1000.0 - ts).astype(np.float32)
        tags = np.frombuffer(self._tag, dtype=np.int64)[rows]
        return latency, tags, received
