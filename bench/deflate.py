"""What permessage-deflate (RFC 7692) would buy and cost for liveboard's event frames.

Browsers offer the extension on every WebSocket; liveboard declines it (docs/architecture.md).
This measures the trade on scenario A's event (``task:updated`` with the whole task):

* bytes on the wire, plain and deflated;
* CPU per compression, ``no_context_takeover`` (each message compressed alone: one compressed
  frame can be shared by every socket that negotiated the extension, like the plain one);
* CPU per compression with context takeover (the default: each socket has its own compressor,
  so the event is compressed once per socket, and the compressor's window — about 256 KiB with
  zlib's defaults — is kept per connection).

    python -m bench.deflate
"""

from __future__ import annotations

import time
import zlib
from typing import Any

from liveboard.protocol import Event, encode_event

ROUNDS = 2000


def sample_event(offset: int) -> Event:
    """Scenario A's event, as the benchmark publishes it."""
    task: dict[str, Any] = {
        "id": "t_8c1d2f3a4b5c",
        "projectId": "p_1a2b3c4d5e6f",
        "title": f"Benchmark task, revision {offset}",
        "description": "",
        "status": "todo",
        "order": 1024.0,
        "assigneeId": None,
        "createdById": "owner",
        "version": offset + 1,
        "createdAt": "2026-11-26T06:00:00.000Z",
        "updatedAt": "2026-11-26T06:00:00.000Z",
    }
    return Event(
        type="task:updated",
        room="project:p_1a2b3c4d5e6f",
        offset=offset,
        epoch="e_5f6a7b8c9d0e",
        ts=1_795_680_000_000 + offset,
        user_id="owner",
        data={"task": task, "changes": {"title": {"from": "previous title", "to": task["title"]}}},
    )


def _deflate_message(compressor: Any, payload: bytes) -> bytes:
    # RFC 7692 §7.2.1: compress, sync-flush, drop the final 4 bytes (00 00 ff ff).
    return bytes(compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def measure() -> dict[str, float]:
    payloads = [encode_event(sample_event(i)) for i in range(1, ROUNDS + 1)]
    started = time.process_time()
    alone = [
        _deflate_message(zlib.compressobj(wbits=-zlib.MAX_WBITS), payload) for payload in payloads
    ]
    no_takeover = (time.process_time() - started) / ROUNDS
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    started = time.process_time()
    shared = [_deflate_message(compressor, payload) for payload in payloads]
    takeover = (time.process_time() - started) / ROUNDS
    return {
        "plain_bytes": sum(map(len, payloads)) / ROUNDS,
        "deflated_alone_bytes": sum(map(len, alone)) / ROUNDS,
        "deflated_takeover_bytes": sum(map(len, shared[1:])) / (ROUNDS - 1),
        "cpu_us_no_context_takeover": no_takeover * 1e6,
        "cpu_us_context_takeover": takeover * 1e6,
    }


def main() -> None:
    m = measure()
    print(f"event payload: {m['plain_bytes']:.0f} bytes plain")
    print(
        f"  deflated alone (no_context_takeover): {m['deflated_alone_bytes']:.0f} bytes,"
        f" {m['cpu_us_no_context_takeover']:.1f} µs CPU per event (once, shared by all sockets)"
    )
    print(
        f"  deflated with context takeover: {m['deflated_takeover_bytes']:.0f} bytes,"
        f" {m['cpu_us_context_takeover']:.1f} µs CPU per event per socket"
    )


if __name__ == "__main__":
    main()
