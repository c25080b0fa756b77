"""Process metrics in the Prometheus text format (``GET /metrics``).

Counters are plain integers bumped on the hot path (no locks: one event loop), gauges are read
from callbacks at scrape time, and the delivery-latency histogram observes once per event fanned
out (commit ``ts`` → its frame written to every local subscriber).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

# Delivery latency buckets, in seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


class Histogram:
    """A cumulative histogram with fixed buckets."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1


class Metrics:
    """Every metric liveboard exports. One instance per process."""

    def __init__(self) -> None:
        self.events_published = 0
        self.messages_sent = 0
        self.connections_opened = 0
        self.connections_rejected = 0
        self.slow_consumer_closes = 0
        self.gap_fills = 0
        self.resyncs = 0
        self.broker_reconnects = 0
        self.catch_ups = 0
        #: Rooms read from the log because another backend's commit woke this instance.
        self.wakeups = 0
        self.connections_refused = 0
        self.head_timeouts = 0
        self.body_timeouts = 0
        self.send_timeouts = 0
        self.delivery_latency = Histogram()
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """Register a gauge read at scrape time."""
        self._gauges[name] = (help_text, read)

    def render(self) -> str:
        lines: list[str] = []

        def counter(name: str, help_text: str, value: float) -> None:
            lines.extend(
                (f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}")
            )

        counter(
            "liveboard_events_published_total",
            "Events handed to the broker.",
            self.events_published,
        )
        counter("liveboard_messages_sent_total", "Frames written to sockets.", self.messages_sent)
        counter(
            "liveboard_connections_opened_total",
            "WebSocket connections accepted.",
            self.connections_opened,
        )
        counter(
            "liveboard_connections_rejected_total",
            "WebSocket upgrades refused.",
            self.connections_rejected,
        )
        counter(
            "liveboard_slow_consumer_closes_total",
            "Sockets closed with 4008.",
            self.slow_consumer_closes,
        )
        counter("liveboard_gap_fills_total", "Gaps filled from the event log.", self.gap_fills)
        counter("liveboard_resyncs_total", "resync messages sent.", self.resyncs)
        counter(
            "liveboard_broker_reconnects_total", "Broker reconnections.", self.broker_reconnects
        )
        counter("liveboard_catch_ups_total", "Rooms caught up from the event log.", self.catch_ups)
        counter(
            "liveboard_wakeups_total",
            "Rooms read from the event log because another backend committed an event.",
            self.wakeups,
        )
        counter(
            "liveboard_connections_refused_total",
            "Connections refused on accept: their address held too many unauthenticated ones.",
            self.connections_refused,
        )
        counter(
            "liveboard_head_timeouts_total",
            "Connections closed because a request head was not complete in time.",
            self.head_timeouts,
        )
        counter(
            "liveboard_body_timeouts_total",
            "Requests answered 400 because their body did not arrive in time.",
            self.body_timeouts,
        )
        counter(
            "liveboard_send_timeouts_total",
            "HTTP connections cut because the client read none of a response in time.",
            self.send_timeouts,
        )
        for name, (help_text, read) in sorted(self._gauges.items()):
            value = float(read())
            lines.extend((f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"))
        h = self.delivery_latency
        name = "liveboard_delivery_latency_seconds"
        lines.append(f"# HELP {name} Commit time to frame written, per event fanned out.")
        lines.append(f"# TYPE {name} histogram")
        cumulative = 0
        for bound, count in zip(h.buckets, h.counts, strict=False):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {h.count}')
        lines.append(f"{name}_sum {h.total}")
        lines.append(f"{name}_count {h.count}")
        return "\n".join(lines) + "\n"
