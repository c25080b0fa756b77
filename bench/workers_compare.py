"""Summarise ``bench.run --server-workers`` runs: one liveboard process against two workers.

Usage: ``python -m bench.workers_compare bench/results/A.json bench/results/B.json …`` (each a
run of ``--only AE --server-workers 1-first|2-first``, alternated). Prints, per run, each figure
of one process and of ``serve --workers 2`` (both on Redis, same run) and their ratio (two ÷
one), then the range of each ratio over the runs.

What a 2-core machine can show: the load generator and Redis share the cores with the server,
so the rates (A's highest rate at p99 ≤ 50 ms, E's cycles/s) are bounded by the machine, not by
the server's cores; the load generator's cores and the machine's busy cores are printed beside
them. The figures that do not depend on the core count are the server's CPU per delivery (A)
and per churn cycle (E: connect + subscribe + presence join + close, a reconnect's work).
"""

from __future__ import annotations

import sys
from typing import Any

from bench.broker_compare import Pair, fixed_phases, print_table

ONE, TWO = "liveboard", "liveboard-w2"


def _best(a: dict[str, Any]) -> dict[str, Any]:
    """Scenario A's phase at its highest rate with p99 ≤ 50 ms (the last one run at it)."""
    ok = [r for r in a.get("fixed", []) + a.get("ladder", []) if r["ok"]]
    return max(ok, key=lambda r: r["offered_rate"], default={})


def figures(run: dict[str, Any]) -> dict[str, Pair]:
    """Figure name → (one process, two workers) of one run."""
    out: dict[str, Pair] = {}
    if "A" in run["scenarios"]:
        a = run["scenarios"]["A"]
        one, two = fixed_phases(run, ONE), fixed_phases(run, TWO)
        for rate in sorted(one):
            out[f"A {rate:g} ev/s server CPU s/100k deliveries"] = (
                one[rate].get("cpu_per_100k"),
                two.get(rate, {}).get("cpu_per_100k"),
            )
            out[f"A {rate:g} ev/s server cores"] = (
                one[rate].get("server_cpu_util"),
                two.get(rate, {}).get("server_cpu_util"),
            )
        out["A highest ev/s at p99 ≤ 50 ms"] = (
            a[ONE].get("highest_ok_rate"),
            a[TWO].get("highest_ok_rate"),
        )
        out["A deliveries/s at that rate"] = (
            a[ONE].get("highest_ok_deliveries_per_s"),
            a[TWO].get("highest_ok_deliveries_per_s"),
        )
        best = (_best(a[ONE]), _best(a[TWO]))
        for key, label in (
            ("server_cpu_util", "server cores"),
            ("cpu_per_100k", "server CPU s/100k deliveries"),
        ):
            out[f"A at that rate: {label}"] = (best[0].get(key), best[1].get(key))
        out["A at that rate: load generator cores"] = (
            *(b["client_cpu_s"] / b["measured_window_s"] if b else None for b in best),
        )
        out["A at that rate: machine busy cores"] = (
            best[0].get("machine_busy_cores"),
            best[1].get("machine_busy_cores"),
        )
    if "E" in run["scenarios"]:
        e = run["scenarios"]["E"]
        for key, label in (
            ("cycles_per_s", "cycles/s"),
            ("server_cpu_ms_per_cycle", "server CPU ms per cycle"),
            ("machine_busy_cores", "machine busy cores"),
        ):
            out[f"E {label}"] = (e[ONE].get(key), e[TWO].get(key))
        out["E load generator cores"] = (
            *(
                x["client_cpu_s"] / x["seconds"] if x.get("seconds") else None
                for x in (e[ONE], e[TWO])
            ),
        )
    return out


def main(paths: list[str]) -> int:
    return print_table(paths, figures, "one process / two workers (two ÷ one)", spreads)


def spreads(run: dict[str, Any]) -> str:
    """A's subscribers per worker, as the kernel spread them (SO_REUSEPORT)."""
    spread = run["scenarios"].get("A", {}).get(TWO, {}).get("worker_spread")
    return f"A's subscribers per worker {spread}" if spread else ""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
