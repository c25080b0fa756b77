"""Summarise ``bench.run --only B --against DIR`` runs: server CPU per event of liveboard, of
liveboard from ``DIR`` (``liveboard-base``) and of the lean server, all from the same run.

Usage: ``python -m bench.event_cost bench/results/A.json bench/results/B.json …`` (alternate
``--against-first`` between runs). Prints, per run and rate, µs of server CPU per event (an
event of scenario B reaches the 10 sockets of its room) and the ratios liveboard ÷ lean and
liveboard ÷ liveboard-base, then each ratio's range over the runs. For a run that has scenario
A too (``--only AB --a-rates 50 --no-ladder``), also A at 50 ev/s: server CPU per 100k
deliveries of liveboard and of liveboard-base, each ÷ the bare design measured in that run
(``minimal_fanout_s``: one ``transport.write`` per socket per event, a live receiver).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TARGETS = ("liveboard", "liveboard-base", "lean")


def per_event_us(run: dict[str, Any]) -> dict[float, dict[str, float]]:
    """Rate → target → µs of server CPU per event, for one run's scenario B."""
    b = run["scenarios"]["B"]
    out: dict[float, dict[str, float]] = {}
    for target in TARGETS:
        entry = b.get(target, {})
        fanout = entry.get("subscribers", 0) / max(entry.get("rooms", 1), 1)
        for phase in entry.get("phases", []):
            cpu = phase.get("cpu_per_100k")
            if cpu is not None:
                # s per 100k deliveries x deliveries per event → µs per event.
                out.setdefault(float(phase["offered_rate"]), {})[target] = cpu * fanout * 10
    return out


def a_versus_bare(run: dict[str, Any], rate: float = 50.0) -> dict[str, tuple[float, float, float]]:
    """Target → (s of server CPU per 100k deliveries at ``rate`` in scenario A, that ÷ the
    bare design of the same run, the phase's p99 in ms); empty without A or the bare design."""
    bare = run.get("meta", {}).get("minimal_fanout_s")
    a = run.get("scenarios", {}).get("A")
    if not bare or not a:
        return {}
    out: dict[str, tuple[float, float, float]] = {}
    for target in TARGETS:
        for phase in a.get(target, {}).get("fixed", []):
            cpu = phase.get("cpu_per_100k")
            if float(phase["offered_rate"]) == rate and cpu is not None:
                out[target] = (cpu, cpu / (bare * 1e5), phase.get("p99_ms") or float("nan"))
    return out


def p99s(run: dict[str, Any]) -> dict[float, dict[str, float]]:
    """Rate → target → B's p99 (ms): a server that fell behind batches more events per write,
    which lowers its CPU per event, so a ratio is read beside both p99s."""
    out: dict[float, dict[str, float]] = {}
    for target in TARGETS:
        for phase in run["scenarios"]["B"].get(target, {}).get("phases", []):
            if phase.get("p99_ms") is not None:
                out.setdefault(float(phase["offered_rate"]), {})[target] = phase["p99_ms"]
    return out


def main(paths: list[str]) -> None:
    ratios: dict[str, list[float]] = {}
    for path in paths:
        run = json.loads(Path(path).read_text())
        figures = per_event_us(run)
        print(Path(path).name)
        bare = run.get("meta", {}).get("minimal_fanout_s")
        for target, (cpu, ratio, p99) in a_versus_bare(run).items():
            ratios.setdefault(f"A 50 ev/s {target} ÷ bare design", []).append(ratio)
            print(
                f"  A 50 ev/s: {target} {cpu:.3f} s/100k (p99 {p99:.0f} ms),"
                f" bare {bare * 1e5:.3f}: {ratio:.2f}x"
            )
        for rate, by in sorted(figures.items()):
            late = p99s(run).get(rate, {})
            line = ", ".join(
                f"{t} {by[t]:.0f} µs (p99 {late.get(t, float('nan')):.0f} ms)"
                for t in TARGETS
                if t in by
            )
            for num, den in (("liveboard", "lean"), ("liveboard", "liveboard-base")):
                if num in by and den in by:
                    value = by[num] / by[den]
                    ratios.setdefault(f"{rate:g} ev/s {num} ÷ {den}", []).append(value)
                    line += f"; {num} ÷ {den} {value:.2f}x"
            print(f"  {rate:g} ev/s: {line}")
    print("ranges:")
    for label, values in ratios.items():
        print(f"  {label}: {min(values):.2f}-{max(values):.2f}x over {len(values)} runs")


if __name__ == "__main__":
    main(sys.argv[1:])
