"""``realtime.metrics`` without a server: the fan-out tally's histogram, scrape-time gauges,
and that each ``Metrics`` has a registry of its own."""

from __future__ import annotations

from msgspec.structs import replace
from prometheus_client.parser import text_string_to_metric_families

from liveboard.realtime.metrics import LATENCY_BUCKETS, Metrics
from tests.support.fakes import ev


def test_the_latency_histogram_counts_each_event_in_the_first_bucket_not_below_it() -> None:
    metrics = Metrics()
    ages_ms = (0.0, 1.0, 1.5, 2.5, 7_000.0)
    events = [replace(ev(i), ts=10_000.0 - ms) for i, ms in enumerate(ages_ms, start=1)]
    metrics.fan_out.delivered(10_000.0, events)
    sample = metrics.sample
    name = "liveboard_delivery_latency_seconds"
    assert sample(f"{name}_bucket", le="0.001") == 2  # 0 ms and exactly 1 ms (le)
    assert sample(f"{name}_bucket", le="0.0025") == 4
    assert sample(f"{name}_bucket", le="5.0") == 4  # 7 s is beyond the last bound
    assert sample(f"{name}_bucket", le="+Inf") == 5
    assert sample(f"{name}_count") == 5
    assert abs((sample(f"{name}_sum") or 0) - 7.005) < 1e-9
    buckets = [sample(f"{name}_bucket", le=str(b)) or 0.0 for b in LATENCY_BUCKETS]
    assert buckets == sorted(buckets)


def test_frames_and_bytes_are_counters_and_gauges_are_read_at_scrape_time() -> None:
    metrics = Metrics()
    metrics.fan_out.frames += 3
    metrics.fan_out.bytes += 300
    rooms = {"project": 2, "workspace": 1}
    metrics.gauge("liveboard_rooms", "Rooms.", lambda: rooms, label="kind")
    rooms["project"] = 5  # read when scraped, not when registered
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["liveboard_messages_sent"].type == "counter"
    assert families["liveboard_messages_sent"].samples[0].value == 3
    assert families["liveboard_bytes_sent"].samples[0].value == 300
    assert {s.labels["kind"]: s.value for s in families["liveboard_rooms"].samples} == {
        "project": 5,
        "workspace": 1,
    }


def test_each_metrics_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.events_published.inc(2)
    assert first.sample("liveboard_events_published_total") == 2
    assert second.sample("liveboard_events_published_total") == 0
