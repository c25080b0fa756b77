"""Every metric one liveboard process exports on ``GET /metrics``, through prometheus-client.

Guarantees:

* One ``CollectorRegistry`` per ``Metrics`` (one per application), never the library's global
  one: several applications in one process (the tests) each export only their own numbers.
* Counters and histograms are prometheus-client objects, bumped where things happen, except
  on the fan-out path: there the hub adds to plain numbers (``FanOutTally``: frames, bytes, the
  delivery latency's buckets), once per broker read or per event, never per socket, and they
  are rendered at scrape time. A prometheus-client ``inc`` or ``observe`` costs 0.3-0.7 µs
  (a lock, checks); a plain add costs 0.02 µs, and a bucket found by bisection 0.08 µs.
* Gauges of the instance's state (connections, rooms, the database pool...) are read from
  callbacks at scrape time (``ScrapeGauges``), so keeping them costs nothing between scrapes.
* No label carries a room id, a user id or a raw URL: label values come from closed sets
  (``REFUSAL_REASONS``, close codes, room kinds, the broker's name, the application's route
  templates, HTTP methods and status codes), so the number of series is bounded.
* The process and platform collectors (``process_*``, ``python_info``, ``python_gc_*``) and
  ``liveboard_build_info{version}`` are included; ``*_created`` series are not (they would double
  the counters' series for a value Prometheus does not use).

With ``serve --workers N`` each worker exports its own numbers, and a scrape of the shared port
reaches one of them. prometheus-client's multiprocess mode (one scrape for all workers) is not
switched on yet: every counter and histogram object here works unchanged under
``PROMETHEUS_MULTIPROC_DIR``; what is rendered at scrape time (the gauges, the fan-out tally)
would be copied by each worker on a timer into multiprocess-mode objects. See
docs/operations.md, "Metrics with several worker processes".
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy import event

from liveboard import __version__
from liveboard.protocol import SequencedEvent
from liveboard.store.database import Database

# Process-wide in prometheus-client; liveboard exports no ``_created`` series (see above).
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Delivery latency buckets, in seconds.
LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
#: HTTP request duration buckets, in seconds.
HTTP_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Database statement duration buckets, in seconds.
STATEMENT_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
#: Room audit duration buckets, in seconds.
AUDIT_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Why a WebSocket upgrade was refused (``connections_rejected``'s ``reason``).
REFUSAL_REASONS: Final = (
    "origin",
    "host",
    "missing_token",
    "invalid_token",
    "user_limit",
    "busy",
)
#: ``connections_closed``'s ``code`` for a connection the peer closed first, and for one that
#: ended without any close frame from this side (lost, or dropped after an unanswered ping).
PEER_CLOSED: Final = "peer"
NO_CLOSE_FRAME: Final = "none"

#: What a scrape-time gauge's callback returns: a value, or values by one label's value.
Reading = Callable[[], float | Mapping[str, float]]


class FanOutTally:
    """What the hub's fan-out adds up, as plain numbers (no lock, no call into the library):
    frames and bytes written (each times sockets), and the delivery latency histogram's
    buckets (``LATENCY_BUCKETS``, then the overflow), sum and count. Rendered at scrape time."""

    __slots__ = ("bytes", "frames", "latency_buckets", "latency_count", "latency_sum")

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0

    def delivered(self, now_ms: float, events: Iterable[SequencedEvent]) -> None:
        """Observe, for each event, commit time (``ts``, ms) to ``now_ms``."""
        buckets = self.latency_buckets
        total = 0.0
        count = 0
        for released in events:
            seconds = max(0.0, now_ms - released.ts) / 1000.0
            buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # le: the first bound >= it
            total += seconds
            count += 1
        self.latency_sum += total
        self.latency_count += count

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "liveboard_messages_sent",
            "Frames the hub wrote to sockets (frames times sockets).",
            value=self.frames,
        )
        yield CounterMetricFamily(
            "liveboard_bytes_sent",
            "Bytes of the frames the hub wrote to sockets.",
            value=self.bytes,
        )
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(LATENCY_BUCKETS, self.latency_buckets, strict=False):
            cumulative += count
            buckets.append((str(bound), cumulative))
        buckets.append(("+Inf", self.latency_count))
        yield HistogramMetricFamily(
            "liveboard_delivery_latency_seconds",
            "Commit time to frame written, per event fanned out.",
            buckets=buckets,
            sum_value=self.latency_sum,
        )


class _Hub(Protocol):
    def by_kind(self) -> tuple[dict[str, int], dict[str, int]]: ...


class _Presence(Protocol):
    def room_count(self) -> int: ...
    def user_count(self) -> int: ...


class _Broker(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def up(self) -> bool: ...


class _Node(Protocol):
    """What ``watch_node`` reads of ``node.Node``."""

    @property
    def sessions(self) -> Mapping[str, object]: ...
    @property
    def hub(self) -> _Hub: ...
    @property
    def presence(self) -> _Presence: ...
    @property
    def broker(self) -> _Broker: ...


class ScrapeGauges(Collector):
    """Gauges whose values are read from callbacks when ``/metrics`` is scraped."""

    def __init__(self) -> None:
        self._gauges: dict[str, tuple[str, str | None, Reading]] = {}

    def add(self, name: str, help_text: str, read: Reading, label: str | None = None) -> None:
        """Register (or replace) gauge ``name``; with ``label``, ``read`` returns a mapping."""
        self._gauges[name] = (help_text, label, read)

    def collect(self) -> Iterable[Metric]:
        for name, (help_text, label, read) in sorted(self._gauges.items()):
            value = read()
            if label is None:
                family = GaugeMetricFamily(name, help_text)
                assert not isinstance(value, Mapping)
                family.add_metric([], float(value))
            else:
                family = GaugeMetricFamily(name, help_text, labels=[label])
                assert isinstance(value, Mapping)
                for key, number in sorted(value.items()):
                    family.add_metric([key], float(number))
            yield family


class Metrics:
    """Every metric of one application (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()

        def counter(name: str, help_text: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, help_text, labels, registry=registry)

        self.events_published = counter(
            "liveboard_events_published", "Committed events handed to the broker."
        )
        self.fan_out = FanOutTally()
        registry.register(self.fan_out)
        self.connections_opened = counter(
            "liveboard_connections_opened", "WebSocket connections accepted."
        )
        self.connections_rejected = counter(
            "liveboard_connections_rejected", "WebSocket upgrades refused, by reason.", ("reason",)
        )
        for reason in REFUSAL_REASONS:  # every reason exported from the start, at 0
            self.connections_rejected.labels(reason)
        self.connections_closed = counter(
            "liveboard_connections_closed",
            "WebSocket connections ended, by the close code this side sent"
            " (peer: the client closed first; none: no close frame).",
            ("code",),
        )
        self.slow_consumer_closes = counter(
            "liveboard_slow_consumer_closes", "Sockets closed with 4008."
        )
        self.gap_fills = counter("liveboard_gap_fills", "Gaps filled from the event log.")
        self.recoveries = counter(
            "liveboard_recoveries",
            "Subscribes with since answered, by where from (memory: no database read).",
            ("source",),
        )
        for source in ("memory", "database"):
            self.recoveries.labels(source)
        self.resyncs = counter("liveboard_resyncs", "Rooms whose continuity was lost here.")
        self.broker_reconnects = counter(
            "liveboard_broker_reconnects", "Broker reconnections.", ("broker",)
        )
        self.catch_ups = counter("liveboard_catch_ups", "Rooms caught up from the event log.")
        self.wakeups = counter(
            "liveboard_wakeups",
            "Rooms read from the event log because another backend committed an event.",
        )
        self.connections_refused = counter(
            "liveboard_connections_refused",
            "Connections refused on accept: their address held too many unauthenticated ones.",
        )
        self.head_timeouts = counter(
            "liveboard_head_timeouts",
            "Connections closed because a request head was not complete in time.",
        )
        self.body_timeouts = counter(
            "liveboard_body_timeouts",
            "Requests answered 400 because their body did not arrive in time.",
        )
        self.send_timeouts = counter(
            "liveboard_send_timeouts",
            "HTTP connections cut because the client read none of a response in time.",
        )
        self.http_duration = Histogram(
            "liveboard_http_request_duration_seconds",
            "HTTP requests (not WebSocket upgrades) by method, route template and status.",
            ("method", "route", "status"),
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.statement_duration = Histogram(
            "liveboard_db_statement_duration_seconds",
            "Database statements, from the driver call to its return.",
            buckets=STATEMENT_BUCKETS,
            registry=registry,
        )
        self.audit_duration = Histogram(
            "liveboard_audit_duration_seconds",
            "One periodic room audit (positions read, rooms caught up).",
            buckets=AUDIT_BUCKETS,
            registry=registry,
        )
        build = Gauge(
            "liveboard_build_info",
            "Always 1; the running version in its label.",
            ("version",),
            registry=registry,
            multiprocess_mode="max",
        )
        build.labels(__version__).set(1)
        self._gauges = ScrapeGauges()
        registry.register(self._gauges)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)

    def gauge(self, name: str, help_text: str, read: Reading, label: str | None = None) -> None:
        """Register a gauge read at scrape time (with ``label``: ``read`` returns a mapping)."""
        self._gauges.add(name, help_text, read, label)

    def watch_node(self, node: _Node) -> None:
        """Export the real-time layer's state: connections, rooms, presence, the broker."""
        self.gauge(
            "liveboard_connections", "Open WebSocket connections.", lambda: len(node.sessions)
        )
        self.gauge(
            "liveboard_subscriptions",
            "Room subscriptions, by room kind.",
            lambda: node.hub.by_kind()[1],
            label="kind",
        )
        self.gauge(
            "liveboard_rooms",
            "Rooms with local subscribers, by room kind.",
            lambda: node.hub.by_kind()[0],
            label="kind",
        )
        self.gauge("liveboard_presence_rooms", "Rooms with presence.", node.presence.room_count)
        self.gauge(
            "liveboard_presence_users",
            "Present users summed over rooms, as this instance sees them.",
            node.presence.user_count,
        )
        self.gauge(
            "liveboard_broker_up",
            "1 when the broker is reachable, with the broker's name (redis, memory).",
            lambda: {node.broker.name: 1.0 if node.broker.up else 0.0},
            label="broker",
        )
        self.broker_reconnects.labels(node.broker.name)  # exported from the start, at 0

    def watch_database(self, db: Database) -> None:
        """Export ``db``'s pool use and time each of its statements."""
        self.gauge(
            "liveboard_db_pool_in_use",
            "Database connections held by requests and the real-time layer now.",
            lambda: db.in_use,
        )
        self.gauge(
            "liveboard_db_pool_waiting",
            "Callers waiting for a database connection now (pool exhausted, or connecting).",
            lambda: db.waiting,
        )
        timed = self.statement_duration

        def started(conn: Any, cursor: Any, statement: Any, *args: Any) -> None:
            conn.info.setdefault("liveboard_started", []).append(time.perf_counter())

        def finished(conn: Any, cursor: Any, statement: Any, *args: Any) -> None:
            starts = conn.info.get("liveboard_started")
            if starts:
                timed.observe(time.perf_counter() - starts.pop())

        def failed(context: Any) -> None:
            conn = context.connection  # None when the failure was in connecting
            starts = None if conn is None else conn.info.get("liveboard_started")
            if starts:
                timed.observe(time.perf_counter() - starts.pop())

        engine = db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", started)
        event.listen(engine, "after_cursor_execute", finished)
        event.listen(engine, "handle_error", failed)

    def sample(self, name: str, **labels: str) -> float | None:
        """The current value of one sample (``liveboard_resyncs_total``...), None if absent."""
        return self.registry.get_sample_value(name, labels)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition for a scraper's ``Accept`` header: body and its content type
        (Prometheus text, or OpenMetrics when the scraper asks for it)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type
