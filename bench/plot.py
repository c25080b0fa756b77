"""Plot scenario A: latency (p50 and p99) against offered load, both servers.

    python -m bench.plot bench/results/<timestamp>.json [docs/bench-latency.png]

Every phase of scenario A (fixed rates, ladder and the limit probe) is one point per
percentile; the x axis is the offered load in deliveries per second (events/s times
subscribers). A phase whose events were not all delivered within the drain window is drawn at
the top edge with an open marker.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"liveboard": "#1f77b4", "python-socketio": "#d62728"}


def _value(v: Any) -> float | None:
    if v == "inf":
        return float("inf")
    return None if v is None else float(v)


def plot(results_path: Path, out: Path) -> None:
    results = json.loads(results_path.read_text())
    scenario = results["scenarios"].get("A", {})
    fig, ax = plt.subplots(figsize=(8.5, 5.0), dpi=110)
    top = 1.0
    series: dict[str, list[tuple[float, float | None, float | None]]] = {}
    for name, data in scenario.items():
        subs = data.get("subscribers", 1)
        by_rate: dict[float, tuple[float, float | None, float | None]] = {}
        for phase in data.get("fixed", []) + data.get("ladder", []) + data.get("limit", []):
            offered = phase["offered_rate"] * subs
            # A step run again (its p99 missed once) is drawn with its last attempt.
            by_rate[offered] = (offered, _value(phase.get("p50_ms")), _value(phase.get("p99_ms")))
            for v in (_value(phase.get("p50_ms")), _value(phase.get("p99_ms"))):
                if v is not None and v != float("inf"):
                    top = max(top, v)
        series[name] = sorted(by_rate.values())
    ceiling = top * 2.0
    for name, points in series.items():
        color = COLORS.get(name, "black")
        for index, (label, style) in enumerate((("p50", "--"), ("p99", "-"))):
            xs = [p[0] for p in points]
            ys = [p[1 + index] for p in points]
            finite = [
                (x, y) for x, y in zip(xs, ys, strict=True) if y is not None and y != float("inf")
            ]
            lost = [x for x, y in zip(xs, ys, strict=True) if y == float("inf")]
            if finite:
                ax.plot(
                    [x for x, _ in finite],
                    [y for _, y in finite],
                    style,
                    marker="o",
                    color=color,
                    label=f"{name} {label}",
                    markersize=4,
                )
            if lost:
                ax.plot(
                    lost,
                    [ceiling] * len(lost),
                    linestyle="none",
                    marker="^",
                    markerfacecolor="none",
                    color=color,
                    label=f"{name} {label}: not all delivered" if index == 1 else None,
                )
    ax.axhline(50.0, color="gray", linewidth=0.8, linestyle=":")
    ax.text(
        0.99,
        50.0,
        "p99 limit 50 ms",
        color="gray",
        ha="right",
        va="bottom",
        fontsize=8,
        transform=ax.get_yaxis_transform(),
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load, deliveries/s (events/s x subscribers, one room)")
    ax.set_ylabel("latency, ms (event ts → receipt)")
    meta = results.get("meta", {})
    ax.set_title(
        f"Scenario A: one busy room, events over Redis — {meta.get('cores', '?')} cores, "
        f"{meta.get('mode', '')} run {meta.get('started', '')[:10]}",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    source = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("docs/bench-latency.png")
    plot(source, out)
    print(out)


if __name__ == "__main__":
    main()
