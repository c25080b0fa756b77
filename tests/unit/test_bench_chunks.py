"""The load generator's chunk accounting (``bench.chunks``): frame scanning and the table."""

from __future__ import annotations

import numpy as np
import pytest
from bench.chunks import ChunkTable, scan_frames

from liveboard.realtime.transport.frames import PING_FRAME, text_frame


def test_scan_counts_whole_text_frames() -> None:
    data = text_frame(b"a" * 10) + text_frame(b"b" * 300) + text_frame(b"c" * 70_000)
    assert scan_frames(data) == (3, 0, True)


@pytest.mark.parametrize("cut", [1, 2, 3, 50, 303])
def test_scan_reports_the_unfinished_frame(cut: int) -> None:
    whole = text_frame(b"x" * 20)
    second = text_frame(b"y" * 300)  # a 4-byte header: cuts inside it are covered too
    frames, partial, text = scan_frames(whole + second[:cut])
    assert (frames, partial, text) == (1, cut, True)


def test_scan_flags_control_and_masked_frames() -> None:
    assert scan_frames(text_frame(b"{}") + PING_FRAME) == (2, 0, False)
    masked = bytes((0x81, 0x80 | 2)) + b"\x00\x00\x00\x00" + b"{}"
    assert scan_frames(masked) == (1, 0, False)


def test_a_repeat_yields_each_delivery_with_its_latency_and_tag() -> None:
    table = ChunkTable()
    table.remember(b"chunk-a", [(1, 1_000, -1), (2, 1_010, 7)])
    table.remember(b"chunk-b", [(3, 2_000, -1)])
    a, b = table.chunks[b"chunk-a"], table.chunks[b"chunk-b"]
    assert (a.first, a.last, a.consecutive, a.offsets) == (1, 2, True, (1, 2))
    for chunk, received in ((a, 1.5), (b, 2.25), (a, 3.0)):
        table.hit_index.append(chunk.index)
        table.hit_time.append(received)
    latency, tags, times = table.expand()
    assert table.deliveries == 5
    assert latency.tolist() == pytest.approx([500, 490, 250, 2000, 1990])
    assert tags.tolist() == [-1, 7, -1, -1, 7]
    assert times.tolist() == [1.5, 1.5, 2.25, 3.0, 3.0]


def test_offsets_that_skip_are_not_consecutive() -> None:
    table = ChunkTable()
    table.remember(b"gap", [(4, 0, -1), (6, 0, -1)])
    assert not table.chunks[b"gap"].consecutive


def test_clear_forgets_chunks_and_receipts() -> None:
    table = ChunkTable()
    table.remember(b"c", [(1, 0, -1)])
    table.hit_index.append(0)
    table.hit_time.append(0.0)
    table.clear()
    assert not table.chunks
    assert table.deliveries == 0
    latency, _tags, _times = table.expand()
    assert latency.dtype == np.float32
    assert len(latency) == 0


def test_the_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.chunks.MAX_CHUNKS", 2)
    table = ChunkTable()
    for i in range(3):
        table.remember(f"c{i}".encode(), [(i + 1, 0, -1)])
    assert len(table.chunks) == 2
