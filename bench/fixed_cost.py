# ruff: noqa: RUF001
"""Scenario A's and B's per-delivery CPU for two liveboard trees, alternating, with the idle
cost, the garbage collector's share and (optionally) py-spy profiles beside it.

    python -m bench.fixed_cost --baseline ../base --runs 3                  # A 10 and 50 ev/s
    python -m bench.fixed_cost --baseline ../base --rooms 100 --rates 500,2000   # B's shape
    python -m bench.fixed_cost --baseline ../base --gc --spy 10             # where it goes

Two builds are compared: "before" is the ``src`` of ``--baseline`` (first on the server's
``PYTHONPATH``, same interpreter and packages, as ``bench.run --against`` does) and "after" is
this tree. Each run starts one server of each build in turn (the order alternates from run to
run), connects ``--subs`` subscribers over ``--rooms`` rooms, measures the server's CPU over
``--idle`` seconds with nothing published, then one phase per rate (``bench.run``'s phase: the
direct path, events appended to the log and PUBLISHed on Redis, every delivery checked). Each
phase records the load average and the CPU the rest of the machine used ("other load"), the
server's user and system CPU, and its write calls: deliveries per write above 1 mean the server
fell behind and joined events into one write per socket, which makes a delivery cheaper, so two
builds' CPU per delivery compare only at equal values (docs/benchmarks.md, "Metrics through
prometheus-client"). The summary gives each run's pair and the ranges of after ÷ before.

``--gc`` puts ``bench/gcprobe`` on the servers' ``PYTHONPATH``: its ``sitecustomize`` counts
collections per generation and the time spent in them (``gc.callbacks``), read before and after
every phase. ``--spy R`` records each build's phase at rate ``R`` with py-spy (raw stacks, 500
samples/s); the summary lists the functions whose inclusive share differs most.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.infra import ROOT, raise_fd_limit
from bench.run import Bench, Config, prioritise
from bench.targets import LiveboardSourceTarget, LiveboardTarget, write_tokens

PROBE = ROOT / "bench" / "gcprobe"


class GcProbe:
    """The probe's totals in one server (``bench/gcprobe/sitecustomize.py``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seq = 0

    async def read(self, pid: int) -> dict[str, Any]:
        os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                state: dict[str, Any] = json.loads(self.path.read_text())
            except (OSError, ValueError):
                state = {"seq": 0}
            if state["seq"] > self.seq:
                self.seq = state["seq"]
                return state
            await asyncio.sleep(0.02)
        raise RuntimeError(f"no GC probe answer from {pid}")


def gc_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        "collections": [
            a - b for a, b in zip(after["collections"], before["collections"], strict=True)
        ],
        "cpu_s": [a - b for a, b in zip(after["cpu_s"], before["cpu_s"], strict=True)],
        "tracked": after["tracked"],
        "frozen": after["frozen"],
    }


def spy_totals(raw: Path) -> tuple[int, dict[str, int]]:
    """Samples in all, and per function (inclusive: once per stack it appears on)."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        # By function, not line: the two trees' line numbers differ.
        for frame in {re.sub(r":\d+\)$", ")", f) for f in stack.split(";")}:
            inclusive[frame] = inclusive.get(frame, 0) + int(n)
    return total, inclusive


class FixedCost:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        config = Config.make(False)
        config.subs = args.subs
        self.bench = Bench(config, workdir, {"A"}, False)
        redis, postgres = self.bench.redis, self.bench.postgres
        self.after = (
            LiveboardSourceTarget(workdir, redis, postgres, Path(args.target).resolve() / "src")
            if args.target
            else LiveboardTarget(workdir, redis, postgres)
        )
        self.before = LiveboardSourceTarget(
            workdir, redis, postgres, Path(args.baseline).resolve() / "src"
        )
        self.before.name = "before"
        self.after.name = "after"
        self.results: list[dict[str, Any]] = []

    def probe_env(self, target: LiveboardTarget) -> Path | None:
        if not self.args.gc:
            return None
        out = self.workdir / f"gcprobe-{target.name}.json"
        paths = [str(PROBE)]
        tree = self.args.baseline if target is self.before else self.args.target
        if tree:
            paths.append(str(Path(tree).resolve() / "src"))
        target.extra_env["PYTHONPATH"] = os.pathsep.join(paths)
        target.extra_env["BENCH_GCPROBE_OUT"] = str(out)
        out.unlink(missing_ok=True)
        return out

    async def one(self, run: int, target: LiveboardTarget) -> None:
        bench, args = self.bench, self.args
        probe_path = self.probe_env(target)
        try:
            await target.start()
        except RuntimeError as exc:  # a loaded machine may take longer than 30 s to start it
            bench.log(f"  {target.name} did not start ({exc}); once more")
            await target.start()
        try:
            await target.setup(args.rooms, bench.users)
            rooms = target.rooms[: args.rooms]
            specs = [(i, rooms[i % len(rooms)].name) for i in range(args.subs)]
            await bench.connect(target, specs)
            await asyncio.sleep(args.settle)
            probe = GcProbe(probe_path) if probe_path else None
            if args.idle:
                cpu0, t0 = target.cpu(), time.monotonic()
                await asyncio.sleep(args.idle)
                idle = (target.cpu() - cpu0) / (time.monotonic() - t0)
                bench.log(f"  {target.name} idle: {idle * 1000:.2f} ms CPU/s")
                self.results.append(
                    {"run": run, "build": target.name, "phase": "idle", "cpu_ms_per_s": idle * 1000}
                )
            action = bench.publisher(target, rooms)
            for rate in args.rates:
                gc0 = await probe.read(target.pid) if probe else None
                spy = self.start_spy(target, run, rate)
                load = os.getloadavg()[0]
                system0 = target.cpu_system()
                r = await bench.phase(target, f"{rate:g} ev/s", rate, args.phase, action)
                system = target.cpu_system() - system0
                entry = {
                    "system_ms_per_s": system / r["measured_window_s"] * 1000,
                    "write_calls": r["server_write_calls"],
                    "deliveries_per_write": r["deliveries_per_write"],
                    "cpu_us_per_write": (
                        r["server_cpu_s"] / r["server_write_calls"] * 1e6
                        if r["server_write_calls"]
                        else None
                    ),
                    "run": run,
                    "build": target.name,
                    "phase": f"{rate:g}",
                    "loadavg": load,
                    "cpu_ms_per_s": r["server_cpu_s"] / r["measured_window_s"] * 1000,
                    **{
                        k: r[k]
                        for k in (
                            "cpu_per_100k",
                            "deliveries",
                            "missing",
                            "dups",
                            "other_load_cores",
                            "server_cpu_s",
                            "measured_window_s",
                            "p50_ms",
                            "p99_ms",
                            "server_counters",
                        )
                    },
                }
                if spy is not None:
                    spy.wait()
                if gc0 is not None and probe is not None:
                    entry["gc"] = gc_delta(gc0, await probe.read(target.pid))
                    g = entry["gc"]
                    bench.log(
                        f"  {target.name} GC: {g['collections']} collections,"
                        f" {sum(g['cpu_s']) * 1000:.1f} ms CPU"
                        f" ({[round(c * 1000, 1) for c in g['cpu_s']]}),"
                        f" {g['tracked']:,} tracked, {g['frozen']:,} frozen"
                    )
                self.results.append(entry)
            await bench.disconnect()
        finally:
            await target.stop()

    def start_spy(
        self, target: LiveboardTarget, run: int, rate: float
    ) -> subprocess.Popen[bytes] | None:
        if self.args.spy != rate:
            return None
        spy = Path(sys.executable).parent / "py-spy"
        raw = self.workdir / f"spy-{target.name}-{run}.txt"
        argv = [str(spy), "record", "-d", str(int(self.args.phase)), "-r", "500"]
        argv += ["-p", str(target.pid), "--nonblocking", "-f", "raw", "-o", str(raw)]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def run(self) -> None:
        bench = self.bench
        raise_fd_limit()
        await bench.redis.ready()
        write_tokens(self.workdir / "tokens.json", bench.users)
        await bench.workers.start()
        stamp = time.strftime("%Y%m%d%H%M%S")
        await self.before.create_database(f"bench_fc_before_{stamp}")
        await self.after.create_database(f"bench_fc_after_{stamp}")
        try:
            for run in range(self.args.runs):
                order = [self.before, self.after]
                if (run % 2 == 1) != self.args.after_first:
                    order.reverse()
                for target in order:
                    bench.log(f"run {run}: {target.name}")
                    await self.one(run, target)
        finally:
            for target in (self.before, self.after):
                await target.stop()
            await bench.workers.stop()
            bench.redis.stop()
            await bench.postgres.drop_all()

    def pairs(self, phase: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(before, after) of each run that has both, for ``phase``."""
        out = []
        for run in range(self.args.runs):
            got = {e["build"]: e for e in self.results if e["run"] == run and e["phase"] == phase}
            if "before" in got and "after" in got:
                out.append((got["before"], got["after"]))
        return out

    def summary(self) -> str:
        lines = []
        phases = ["idle"] if self.args.idle else []
        phases += [f"{r:g}" for r in self.args.rates]
        for phase in phases:
            key = "cpu_ms_per_s" if phase == "idle" else "cpu_per_100k"
            pairs = self.pairs(phase)
            for run, (b, a) in enumerate(pairs):
                extra = ""
                if "gc" in a:
                    extra = (
                        f"; GC ms {sum(b['gc']['cpu_s']) * 1000:.1f} {b['gc']['collections']}"
                        f" → {sum(a['gc']['cpu_s']) * 1000:.1f} {a['gc']['collections']}"
                    )
                if phase != "idle":
                    extra += (
                        f"; CPU ms/s {b['cpu_ms_per_s']:.1f} → {a['cpu_ms_per_s']:.1f},"
                        f" system {b['system_ms_per_s']:.1f} → {a['system_ms_per_s']:.1f};"
                        f" p50 {b['p50_ms']:.1f} → {a['p50_ms']:.1f} ms;"
                        f" deliveries/write {b['deliveries_per_write']:.3f} → "
                        f"{a['deliveries_per_write']:.3f};"
                        f" µs/write {b['cpu_us_per_write']:.2f} → {a['cpu_us_per_write']:.2f};"
                        f" load {b['loadavg']:.1f}/{a['loadavg']:.1f},"
                        f" other {b['other_load_cores']:.2f}/{a['other_load_cores']:.2f} cores"
                    )
                lines.append(
                    f"{phase:>6} run {run}: {b[key]:.3f} → {a[key]:.3f}"
                    f" ({a[key] / b[key]:.2f}×){extra}"
                )
            keys = [key] if phase == "idle" else [key, "cpu_us_per_write", "deliveries_per_write"]
            for k in keys:
                if not pairs or not all(b[k] and a[k] for b, a in pairs):
                    continue
                ratios = [a[k] / b[k] for b, a in pairs]
                before = [b[k] for b, _a in pairs]
                after = [a[k] for _b, a in pairs]
                lines.append(
                    f"{phase:>6} {k}: before {min(before):.3f}-{max(before):.3f},"
                    f" after {min(after):.3f}-{max(after):.3f},"
                    f" after ÷ before {min(ratios):.2f}-{max(ratios):.2f} ({len(pairs)} runs)"
                )
        if self.args.spy:
            lines.append(self.spy_summary())
        return "\n".join(lines)

    def spy_summary(self) -> str:
        shares: dict[str, dict[str, float]] = {}
        for build in ("before", "after"):
            total_all = 0
            sums: dict[str, int] = {}
            for run in range(self.args.runs):
                raw = self.workdir / f"spy-{build}-{run}.txt"
                if not raw.exists():
                    continue
                total, inclusive = spy_totals(raw)
                total_all += total
                for k, v in inclusive.items():
                    sums[k] = sums.get(k, 0) + v
            shares[build] = {k: v / total_all for k, v in sums.items()} if total_all else {}
            shares[build]["__samples__"] = total_all
        frames = set(shares["before"]) | set(shares["after"])
        diff = sorted(
            frames,
            key=lambda f: -abs(shares["after"].get(f, 0.0) - shares["before"].get(f, 0.0)),
        )
        out = [
            f"py-spy samples: before {shares['before'].get('__samples__', 0):.0f},"
            f" after {shares['after'].get('__samples__', 0):.0f}; inclusive share, before → after:"
        ]
        for f in diff[:40]:
            if f == "__samples__":
                continue
            out.append(
                f"  {shares['before'].get(f, 0.0):6.1%} → {shares['after'].get(f, 0.0):6.1%}  {f}"
            )
        return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="the other tree (its src/ is used)")
    parser.add_argument("--target", help="run this tree's src/ as 'after' instead of this tree")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rates", default="10,50", help="events per second, comma-separated")
    parser.add_argument("--rooms", type=int, default=1, help="1: scenario A; 100: scenario B")
    parser.add_argument("--subs", type=int, default=1000)
    parser.add_argument("--phase", type=float, default=15.0, help="seconds per rate")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds measured idle (0: none)")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds between connecting and measuring"
    )
    parser.add_argument("--gc", action="store_true", help="count GC runs in the servers")
    parser.add_argument("--spy", type=float, default=0.0, help="py-spy the phase at this rate")
    parser.add_argument("--after-first", action="store_true", help="this tree first in run 0")
    parser.add_argument("--out", help="write the phases as JSON here")
    parser.add_argument("--nice", type=int, default=-10, help="as bench.run's (0: off)")
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",")]
    workdir = Path(f"/tmp/liveboard-fixedcost-{os.getpid()}")
    workdir.mkdir(parents=True, exist_ok=True)
    fc = FixedCost(args, workdir)
    restore = prioritise(args.nice) if args.nice else None
    import uvloop

    try:
        uvloop.run(fc.run())
    finally:
        if restore is not None:
            prioritise(restore)
    print(fc.summary())
    if args.out:
        Path(args.out).write_text(json.dumps(fc.results, indent=1))


if __name__ == "__main__":
    main()
