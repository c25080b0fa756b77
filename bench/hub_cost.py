"""The hub's own CPU per event fanned out, in process, with sockets that cost nothing.

Scenarios A and B measure the whole server, where the socket writes dominate and a shared
machine moves the figures by ±10 %; a change to what the hub does per broker read (metrics,
ordering) is a fraction of a microsecond there. This isolates it: a ``Hub`` whose subscribers'
transports do nothing, fed one event per ``deliver`` call (one broker read), as at the rates of
scenarios A and B:

* ``one room``: 1 room of 1,000 subscribers (A's shape);
* ``small rooms``: 100 rooms of 10 subscribers, events spread over them (B's shape).

The figure is process CPU time per event (µs), the best of ``--repeat`` runs. To compare two
versions, run it alternately with each on ``PYTHONPATH`` (docs/benchmarks.md, "Metrics through
prometheus-client").

    python -m bench.hub_cost                 # both shapes
    python -m bench.hub_cost --repeat 9
"""

from __future__ import annotations

import argparse
import gc
import time

from bench.null_transport import NullTransport
from liveboard.protocol import BrokerEvent
from liveboard.realtime.hub import Hub
from liveboard.realtime.metrics import Metrics
from liveboard.realtime.outlet import Outlet

#: Shapes: label → (rooms, subscribers per room, events per run).
SHAPES = {"one room": (1, 1000, 3000), "small rooms": (100, 10, 30000)}


def _hub(rooms: int, per_room: int) -> tuple[Hub, list[str]]:
    hub = Hub(
        Metrics(),
        on_slow_consumer=lambda outlet: None,
        on_gap=lambda room: None,
        on_resync=lambda room: None,
    )
    names = [f"project:p{r}" for r in range(rooms)]
    for name in names:
        for index in range(per_room):
            outlet = Outlet(NullTransport(), f"{name}-{index}", "u")
            room = hub.join(name, outlet)
            hub.start_sequence(room, "e1", 0)
            hub.complete_join(room, outlet, 0)
    return hub, names


def cost_per_event(rooms: int, per_room: int, events: int) -> float:
    """CPU µs per event of ``Hub.deliver`` with one event per call."""
    hub, names = _hub(rooms, per_room)
    offsets = dict.fromkeys(names, 0)
    now_ms = int(time.time() * 1000)
    batch: list[BrokerEvent] = []
    for index in range(events):
        name = names[index % len(names)]
        offsets[name] += 1
        batch.append(
            BrokerEvent(
                type="task:updated",
                room=name,
                offset=offsets[name],
                epoch="e1",
                ts=now_ms,
                user_id="u",
                data={"taskId": "t1", "title": "x" * 200},  # about A's event size
            )
        )
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        for event in batch:
            hub.deliver([event])
        spent = time.process_time() - start
    finally:
        gc.enable()
    return spent / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per shape (the best counts)")
    args = parser.parse_args()
    for label, (rooms, per_room, events) in SHAPES.items():
        best = min(cost_per_event(rooms, per_room, events) for _ in range(args.repeat))
        print(f"{label} ({rooms} rooms of {per_room}): {best:.2f} µs CPU per event")


if __name__ == "__main__":
    main()
