"""Summarise ``bench.run --brokers`` runs: liveboard on the postgres broker against Redis.

Usage: ``python -m bench.broker_compare bench/results/A.json bench/results/B.json …`` (each a run
of ``--only AC --brokers redis-first|postgres-first``). Prints, per run, each figure of both
brokers and their ratio (postgres ÷ Redis, same run), then the range of each ratio over the runs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REDIS, PG = "liveboard", "liveboard-pg"

#: One figure of one run: (baseline, target); None where the run has no such figure.
Pair = tuple[float | None, float | None]


def fixed_phases(run: dict[str, Any], target: str) -> dict[float, dict[str, Any]]:
    """Scenario A's fixed-rate phases of ``target``, by rate (the repeated phase when one ran
    again: the last one counts, as in ``bench.run``)."""
    phases: dict[float, dict[str, Any]] = {}
    for phase in run["scenarios"]["A"][target].get("fixed", []):
        phases[float(phase["offered_rate"])] = phase
    return phases


def figures(run: dict[str, Any]) -> dict[str, Pair]:
    """Figure name → (Redis, postgres) of one run."""
    out: dict[str, Pair] = {}
    if "A" in run["scenarios"]:
        redis, pg = fixed_phases(run, REDIS), fixed_phases(run, PG)
        for rate in sorted(redis):
            for key, label in (("cpu_per_100k", "CPU s/100k"), ("p50_ms", "p50 ms")):
                out[f"A {rate:g} ev/s {label}"] = (
                    redis[rate].get(key),
                    pg.get(rate, {}).get(key),
                )
        a = run["scenarios"]["A"]
        out["A highest ok deliveries/s"] = (
            a[REDIS].get("highest_ok_deliveries_per_s"),
            a[PG].get("highest_ok_deliveries_per_s"),
        )
    if "C" in run["scenarios"]:
        c = run["scenarios"]["C"]
        for key, label in (
            ("cpu_per_100k", "CPU s/100k (both instances)"),
            ("mutation_p50_ms", "mutation → event p50 ms"),
            ("mutation_p99_ms", "mutation → event p99 ms"),
            ("response_p50_ms", "REST response p50 ms"),
        ):
            out[f"C {label}"] = (c[REDIS]["phase"].get(key), c[PG]["phase"].get(key))
    return out


def ratio(pair: Pair) -> float | None:
    base, other = pair
    if not base or other is None:
        return None
    return other / base


def print_table(
    paths: list[str],
    figures_of: Callable[[dict[str, Any]], dict[str, Pair]],
    header: str = "Redis / postgres (postgres ÷ Redis)",
    note: Callable[[dict[str, Any]], str] = lambda run: "",
) -> int:
    """Print, per run, each figure's pair and ratio, and the range of each ratio over the runs."""
    runs = [(Path(p).stem, json.loads(Path(p).read_text())) for p in paths]
    table: dict[str, list[Pair]] = {}
    for name, run in runs:
        extra = note(run)
        print(
            f"run {name}: load average at start {run['meta']['loadavg_at_start'][0]:.1f}"
            + (f"; {extra}" if extra else "")
        )
        for figure, pair in figures_of(run).items():
            table.setdefault(figure, []).append(pair)
    print()
    print(f"cells: {header}")
    print("| figure | " + " | ".join(name for name, _ in runs) + " | ratio range |")
    print("| --- |" + " --- |" * (len(runs) + 1))
    for figure, pairs in table.items():
        cells = []
        for pair in pairs:
            r = ratio(pair)
            base, other = (f"{v:,.3g}" if v is not None else "-" for v in pair)
            cells.append(f"{base} / {other} ({r:.2f}x)" if r is not None else f"{base} / {other}")
        ratios = [r for r in map(ratio, pairs) if r is not None]
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}x" if ratios else "-"
        print(f"| {figure} | " + " | ".join(cells) + f" | {spread} |")
    return 0


def main(paths: list[str]) -> int:
    return print_table(paths, figures)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
