"""The receive path of an event, in one process, without sockets: decode a broker message and
``Hub.deliver`` it to 10 subscribers in each of 100 rooms (scenario B's shape) whose transports
take every write and do nothing. What this measures is liveboard's own Python per event (the
decode, the sequencing, the fan-out loop and its per-socket checks), not the system calls, so it
is steady on a loaded machine where scenario B is not.

    python -m bench.receive_cost --against DIR [--rounds 5]

alternates, in each round, this tree's ``src`` and ``DIR/src`` (another checkout, e.g. of
main), each in a fresh process, one message per ``deliver`` (a socket read with one message,
as at 500 ev/s) and 20 (as at 2,000 ev/s), and prints µs of CPU per event and the ratios.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from bench.null_transport import NullTransport

ROOT = Path(__file__).resolve().parent.parent
ROOMS = 100
PER_ROOM = 10
EVENTS = 40_000


def measure(batch: int, cold_mb: int = 0) -> float:
    """µs of process CPU per event through decode + ``Hub.deliver`` (the tree on sys.path).

    ``cold_mb``: before each ``deliver``, write that many MiB (out of the timing) so that it
    finds the caches as a server does between two socket reads (after ten sends and other
    processes ran); each ``deliver`` is then timed alone with the thread's CPU clock, less
    what reading that clock costs."""
    from liveboard import protocol
    from liveboard.realtime.hub import Hub
    from liveboard.realtime.metrics import Metrics

    try:
        from liveboard.realtime.outlet import Outlet
    except ImportError:  # a tree from before the outlet had its own module
        from liveboard.realtime.hub import Outlet  # type: ignore[attr-defined,no-redef]

    # This tree's decoder, or the one before ``decode_wire_event`` existed.
    decode = getattr(protocol, "decode_wire_event", None) or protocol.decode_broker_event
    options: dict[str, Any] = {
        "on_slow_consumer": lambda outlet: None,
        "on_gap": lambda room: None,
        "on_resync": lambda room: None,
    }
    if "slow_consumer_bytes" in inspect.signature(Hub).parameters:  # the older hub
        options["slow_consumer_bytes"] = 1 << 20
    hub = Hub(Metrics(), **options)
    for r in range(ROOMS):
        for i in range(PER_ROOM):
            outlet = Outlet(NullTransport(), f"c{r}-{i}", "u")
            room = hub.join(f"project:p{r}", outlet)
            hub.start_sequence(room, "e1", 0)
            hub.complete_join(room, outlet, 0)
    task = {
        "id": "t1",
        "projectId": "p1",
        "title": "A title",
        "description": "A task the benchmark updates; its event carries the whole task.",
        "status": "in_progress",
        "order": 3.0,
        "assigneeId": "u1",
        "createdById": "owner",
        "version": 7,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "updatedAt": "2026-01-01T00:00:00.000Z",
    }
    encode = msgspec.json.Encoder().encode
    now = int(time.time() * 1000)
    payloads = [
        encode(
            {
                "type": "task:updated",
                "room": f"project:p{k % ROOMS}",
                "offset": k // ROOMS + 1,
                "epoch": "e1",
                "ts": now,
                "userId": "alice",
                "data": {"task": task, "changes": {"title": "x"}},
            }
        )
        for k in range(EVENTS)
    ]
    gc.collect()
    if cold_mb:
        return _cold(hub, decode, payloads, batch, cold_mb)
    started = time.process_time()
    for start in range(0, EVENTS, batch):
        hub.deliver([decode(p) for p in payloads[start : start + batch]])
    return (time.process_time() - started) / EVENTS * 1e6


def _cold(hub: Any, decode: Any, payloads: list[bytes], batch: int, cold_mb: int) -> float:
    """See ``measure``: 1/10 of the events (the rest would take minutes of thrashing)."""
    thrash = bytearray(cold_mb << 20)
    clock = time.thread_time_ns
    spent = 0
    reads = 0
    events = payloads[: len(payloads) // 10]
    for start in range(0, len(events), batch):
        thrash[::64] = bytes(len(thrash[::64]))  # one write per cache line
        t0 = clock()
        hub.deliver([decode(p) for p in events[start : start + batch]])
        spent += clock() - t0
        reads += 1
    t0 = clock()
    for _ in range(reads):
        clock()
    overhead = clock() - t0
    return (spent - overhead) / len(events) / 1000


def _child(src: Path, batch: int, cold_mb: int) -> float:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}
    out = subprocess.run(
        [sys.executable, "-m", "bench.receive_cost", "--child", str(batch), "--cold", str(cold_mb)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return float(json.loads(out.stdout)["us"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another checkout (its src is the base)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--cold", type=int, default=0, help="MiB written before each deliver (0: warm caches)"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"us": measure(args.child, args.cold)}))
        return
    if args.against is None:
        parser.error("--against DIR is required")
    mine, base = ROOT / "src", args.against.resolve() / "src"
    ratios: dict[int, list[float]] = {1: [], 20: []}
    for round_ in range(1, args.rounds + 1):
        for batch in (1, 20):
            first_base = round_ % 2 == 0
            order = [(base, "base"), (mine, "this")] if first_base else [(mine, "this")]
            if not first_base:
                order.append((base, "base"))
            figures = {label: _child(src, batch, args.cold) for src, label in order}
            ratio = figures["this"] / figures["base"]
            ratios[batch].append(ratio)
            print(
                f"round {round_}, {batch} per deliver: this {figures['this']:.2f} µs, "
                f"base {figures['base']:.2f} µs per event: {ratio:.2f}x"
                f" ({'base' if first_base else 'this'} first)"
            )
    for batch, values in ratios.items():
        print(f"{batch} per deliver: this ÷ base {min(values):.2f}-{max(values):.2f}x")


if __name__ == "__main__":
    main()
