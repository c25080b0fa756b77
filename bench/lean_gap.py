"""Scenario B's per-event cost of liveboard and of the lean server, taken apart: idle CPU, and
system calls and context switches per event counted by the kernel (issue 20 item 5).

    python -m bench.lean_gap --runs 3                       # liveboard, lean; alternating
    python -m bench.lean_gap --runs 3 --lean-tuned          # + the lean server, tuned sockets
    python -m bench.lean_gap --runs 3 --tree /tmp/b500-main # + liveboard from another tree

Each run starts each server in turn (the order rotates from run to run), connects ``--subs``
subscribers over ``--rooms`` rooms (scenario B: 1,000 in 100 rooms of 10), waits ``--settle``
seconds, then measures:

* **idle**: the server's CPU over ``--idle`` seconds with nothing published, once plainly and
  once under ``perf stat`` (the system calls it makes doing nothing: timers, heartbeats, the
  audit);
* **each rate** (``bench.run``'s phase: events PUBLISHed on Redis one room after another,
  every delivery checked): the server's CPU per event, in a phase of its own;
* **each rate again under** ``perf stat -e syscalls:sys_enter_*`` (kernel tracepoints, counted
  in the kernel, no ptrace): system calls by name, ``epoll_pwait`` with a zero timeout (a
  loop iteration that did not sleep) apart, context switches, and the same counts from the
  idle window scaled to the phase's length, subtracted: what each event costs.

CPU is read from ``/proc`` (utime + stime of all threads): a ratio of two servers measured in
the same run is the figure to compare; system-call counts do not depend on the machine's load.
The lean server tuned (``--lean-tuned``) runs with liveboard's socket options
(``transport.sockets.tune_socket``: 256 KiB send buffer, keepalive).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.infra import Postgres, RedisServer, raise_fd_limit
from bench.run import Bench, Config, prioritise
from bench.targets import (
    LeanTarget,
    LiveboardSourceTarget,
    LiveboardTarget,
    Room,
    Target,
    write_tokens,
)

SYSCALLS = [
    *("write", "writev", "sendto", "sendmsg", "read", "readv", "recvfrom", "recvmsg"),
    *("epoll_wait", "epoll_pwait", "epoll_ctl", "futex", "getpid", "ioctl", "mmap", "munmap"),
    *("brk", "madvise", "close", "accept4", "getsockopt", "setsockopt"),
]
ZERO_TIMEOUT = ("epoll_pwait", "epoll_wait")


def perf_events() -> list[str]:
    """``perf stat`` arguments: each system call's entry, the epoll waits with a zero timeout
    (named ``<call>:0``), all system calls, context switches."""
    argv: list[str] = []
    for name in SYSCALLS:
        argv += ["-e", f"syscalls:sys_enter_{name}"]
    for name in ZERO_TIMEOUT:
        argv += ["-e", f"syscalls:sys_enter_{name}", "--filter", "timeout == 0"]
    argv += ["-e", "raw_syscalls:sys_enter", "-e", "context-switches", "-e", "task-clock"]
    return argv


def event_names() -> list[str]:
    return [*SYSCALLS, *(f"{n}:0" for n in ZERO_TIMEOUT), "syscalls", "context-switches", "task-ms"]


def threads(pid: int) -> dict[str, tuple[int, int, float]]:
    """Per thread of ``pid`` (``main``, or the thread's name; threads of one name summed):
    voluntary and involuntary context switches so far, and CPU seconds."""
    from bench.infra import CLOCK_TICKS

    out: dict[str, tuple[int, int, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        cpu = (int(stat[11]) + int(stat[12])) / CLOCK_TICKS
        key = "main" if task.name == str(pid) else fields["Name"].strip()
        vol, invol, total = out.get(key, (0, 0, 0.0))
        out[key] = (
            vol + int(fields["voluntary_ctxt_switches"]),
            invol + int(fields["nonvoluntary_ctxt_switches"]),
            total + cpu,
        )
    return out


def thread_delta(
    before: dict[str, tuple[int, int, float]], after: dict[str, tuple[int, int, float]]
) -> dict[str, list[float]]:
    return {
        k: [a - b for a, b in zip(v, before.get(k, (0, 0, 0.0)), strict=True)]
        for k, v in after.items()
    }


class PerfStat:
    """``perf stat`` attached to one process until ``stop``; its counts by ``event_names``."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        argv = ["perf", "stat", "-x", ",", "-o", str(out), *perf_events(), "-p", str(pid)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> dict[str, float]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        values = []
        for line in self.out.read_text().splitlines():
            if not line or line.startswith("#"):
                continue
            value = line.split(",")[0]
            # "<not counted>": the process never ran while counted (an idle lean server).
            values.append(float(value) if value.replace(".", "").isdigit() else 0.0)
        names = event_names()
        if len(values) != len(names):
            raise RuntimeError(f"perf stat gave {len(values)} values, not {len(names)}: {self.out}")
        return dict(zip(names, values, strict=True))


class LeanTuned(LeanTarget):
    """The lean server with liveboard's socket options on its listening socket."""

    name = "lean-tuned"

    def __init__(self, workdir: Path, redis: RedisServer, postgres: Postgres) -> None:
        super().__init__(workdir, redis, postgres)
        self.serve_args = ["--tune-sockets"]


class LiveboardNoLog(LiveboardTarget):
    """liveboard, its events PUBLISHed without the log append before it (as the lean server's
    are): the harness does the same work per event for both servers, so the machine's other
    load is the same. Nothing else changes for the server: with the log's heads not moving,
    the audit finds nothing to read, and events arrive in order, so nothing is filled."""

    name = "liveboard-nolog"
    starts = 0

    async def start(self, count: int = 1) -> None:
        # A fresh database each time: the log's heads stay where they were while the rooms'
        # offsets move on, so a restart on the same log would wait for offsets it never has.
        LiveboardNoLog.starts += 1
        await self.create_database(f"bench_nolog_{os.getpid()}_{LiveboardNoLog.starts}")
        self.rooms = []
        self.workspace_id = ""
        await super().start(count)

    async def publish(self, rooms: list[Room]) -> None:
        await LeanTarget.publish(self, rooms)  # type: ignore[arg-type]


class LeanGap:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        config = Config.make(False)
        config.subs = args.subs
        self.bench = Bench(config, workdir, {"B"}, False)
        redis, postgres = self.bench.redis, self.bench.postgres
        self.targets: list[Target] = [
            LiveboardTarget(workdir, redis, postgres),
            LeanTarget(workdir, redis, postgres),
        ]
        if args.nolog:
            self.targets.append(LiveboardNoLog(workdir, redis, postgres))
        if args.lean_tuned:
            self.targets.append(LeanTuned(workdir, redis, postgres))
        if args.tree:
            self.targets.append(
                LiveboardSourceTarget(workdir, redis, postgres, Path(args.tree).resolve() / "src")
            )
        self.results: list[dict[str, Any]] = []

    async def idle(self, target: Target, run: int) -> tuple[float, dict[str, float]]:
        """CPU ms per s, then system calls per s, with nothing published."""
        seconds = self.args.idle
        cpu0, t0 = target.cpu(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu = (target.cpu() - cpu0) / (time.monotonic() - t0) * 1000
        perf = PerfStat(target.pid, self.workdir / f"perf-{target.name}-{run}-idle.csv")
        t0, th0 = time.monotonic(), threads(target.pid)
        await asyncio.sleep(seconds)
        counts = perf.stop()
        elapsed = time.monotonic() - t0
        per_s = {k: v / elapsed for k, v in counts.items()}
        for name, (vol, invol, _cpu) in thread_delta(th0, threads(target.pid)).items():
            per_s[f"{name} vol"] = vol / elapsed
            per_s[f"{name} invol"] = invol / elapsed
        return cpu, per_s

    @staticmethod
    def spy(
        target: Target, raw: Path, seconds: float, *, idle: bool = True
    ) -> subprocess.Popen[bytes]:
        """py-spy on ``target`` for ``seconds``, raw stacks at 1000/s (``idle``: with the
        samples of a thread waiting in epoll)."""
        spy = Path(sys.executable).parent / "py-spy"
        argv = [str(spy), "record", "-d", str(int(seconds)), "-r", "1000"]
        argv += ["--idle"] if idle else []
        argv += ["-p", str(target.pid), "--nonblocking", "-f", "raw", "-o", str(raw)]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def perf_record(target: Target, out: Path) -> subprocess.Popen[bytes]:
        """``perf record`` of ``target`` until SIGINT: CPU-clock samples at 2,000/s with DWARF
        call chains (uvloop and CPython have no frame pointers), for ``bench.perf_buckets``."""
        argv = ["perf", "record", "-e", "cpu-clock", "-F", "2000"]
        argv += ["--call-graph", "dwarf,16384", "-o", str(out), "-p", str(target.pid)]
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def one(self, run: int, target: Target) -> None:
        bench, args = self.bench, self.args
        await target.start()
        try:
            await target.setup(args.rooms, bench.users)
            rooms = target.rooms[: args.rooms]
            specs = [(i, rooms[i % len(rooms)].name) for i in range(args.subs)]
            await bench.connect(target, specs)
            await asyncio.sleep(args.settle)
            if args.idle_spy and target.name.startswith("liveboard"):
                raw = self.workdir / f"spy-{target.name}-{run}-idle-active.txt"
                await asyncio.to_thread(self.spy(target, raw, args.idle_spy, idle=False).wait)
                bench.log(f"  py-spy idle (active samples only): {raw}")
            idle_cpu, idle_rate = await self.idle(target, run)
            bench.log(
                f"  {target.name} idle: {idle_cpu:.2f} ms CPU/s,"
                f" {idle_rate['syscalls']:.0f} syscalls/s,"
                f" {idle_rate['context-switches']:.0f} switches/s"
            )
            entry: dict[str, Any] = {
                "run": run,
                "target": target.name,
                "loadavg": os.getloadavg()[0],
                "idle_cpu_ms_per_s": idle_cpu,
                "idle_per_s": idle_rate,
                "phases": {},
            }
            action = bench.publisher(target, rooms)
            for rate in args.rates:
                entry["phases"][f"{rate:g}"] = await self.rate(run, target, rate, action, idle_rate)
            self.results.append(entry)
            await bench.disconnect()
        finally:
            await target.stop()

    async def rate(
        self,
        run: int,
        target: Target,
        rate: float,
        action: Callable[[int], Awaitable[None]],
        idle_rate: dict[str, float],
    ) -> dict[str, Any]:
        """One rate: a plain phase (CPU), one under ``perf stat`` (counts), and the optional
        ``perf record`` and py-spy phases."""
        bench, args = self.bench, self.args
        r = await bench.phase(target, f"{rate:g} ev/s", rate, args.phase, action)
        perf = PerfStat(target.pid, self.workdir / f"perf-{target.name}-{run}-{rate:g}.csv")
        th0 = threads(target.pid)
        counted = await bench.phase(target, f"{rate:g} ev/s (perf)", rate, args.phase, action)
        counts = perf.stop()
        for name, (vol, invol, _cpu) in thread_delta(th0, threads(target.pid)).items():
            counts[f"{name} vol"] = vol
            counts[f"{name} invol"] = invol
        window, events = counted["measured_window_s"], counted["events"]
        per_event = {k: (v - idle_rate.get(k, 0.0) * window) / events for k, v in counts.items()}
        if rate == args.perf_record:
            out = self.workdir / f"perf-{target.name}-{run}-{rate:g}.data"
            record = self.perf_record(target, out)
            recorded = await bench.phase(
                target, f"{rate:g} ev/s (perf record)", rate, args.phase, action
            )
            record.send_signal(signal.SIGINT)
            await asyncio.to_thread(record.wait, 60)
            bench.log(
                f"  perf record: python -m bench.perf_buckets {out} --events {recorded['events']}"
            )
        if rate == args.spy and target.name.startswith("liveboard"):
            raw = self.workdir / f"spy-{target.name}-{run}-{rate:g}.txt"
            spy = self.spy(target, raw, args.phase)
            await bench.phase(target, f"{rate:g} ev/s (py-spy)", rate, args.phase, action)
            await asyncio.to_thread(spy.wait)
            bench.log(f"  py-spy: {raw}")
        cpu_us = r["server_cpu_s"] / r["events"] * 1e6
        bench.log(
            f"  {target.name} {rate:g}: {cpu_us:.1f} µs/event; per event: "
            + ", ".join(f"{k} {v:.2f}" for k, v in per_event.items() if abs(v) >= 0.05)
        )
        return {
            "cpu_us_per_event": cpu_us,
            "system_us_per_event": cpu_us * (r["server_system_share"] or 0.0),
            "cpu_ms_per_s": r["server_cpu_s"] / r["measured_window_s"] * 1000,
            "p99_ms": r["p99_ms"],
            "ok": r["ok"],
            "other_load_cores": r["other_load_cores"],
            "deliveries_per_write": r["deliveries_per_write"],
            "server_counters": r["server_counters"],  # liveboard's /metrics: catch-ups, fills
            "counted": {"events": events, "window_s": window, "ok": counted["ok"]},
            "raw": counts,
            "per_event": per_event,
        }

    async def run(self) -> None:
        bench = self.bench
        raise_fd_limit()
        await bench.redis.ready()
        write_tokens(self.workdir / "tokens.json", bench.users)
        await bench.workers.start()
        stamp = time.strftime("%Y%m%d%H%M%S")
        for i, target in enumerate(self.targets):
            if isinstance(target, LiveboardTarget) and not isinstance(target, LeanTarget):
                await target.create_database(f"bench_gap{i}_{stamp}")
        try:
            for run in range(self.args.runs):
                shift = run % len(self.targets)
                for target in self.targets[shift:] + self.targets[:shift]:
                    bench.log(f"run {run}: {target.name}")
                    await self.one(run, target)
        finally:
            for target in self.targets:
                await target.stop()
            await bench.workers.stop()
            bench.redis.stop()
            await bench.postgres.drop_all()


def task_clock(phase: dict[str, Any]) -> float:
    """µs of CPU per event in the ``perf stat`` phase (the kernel's task clock: exact, where
    ``/proc``'s CPU times count 10 ms ticks; idle included, as in ``cpu_us_per_event``)."""
    return float(phase["raw"]["task-ms"] / phase["counted"]["events"] * 1000)


def summary(results: list[dict[str, Any]]) -> str:
    """Per run and rate: each server's CPU per event (``/proc``, and the task clock of the
    counted phase) and its ratio to the lean server (and to ``liveboard-base``); then the
    per-event counts and the idle rates, averaged over the runs."""
    lines = []
    for run in sorted({e["run"] for e in results}):
        got = {e["target"]: e for e in results if e["run"] == run}
        for name, e in got.items():
            parts = [f"run {run} {name:>15}: idle {e['idle_per_s']['task-ms']:.2f} ms/s"]
            for rate, p in e["phases"].items():
                figures = f"{p['cpu_us_per_event']:.0f} / {task_clock(p):.0f} µs"
                for other in ("lean", "liveboard-base"):
                    if other in got and other != name:
                        q = got[other]["phases"][rate]
                        figures += (
                            f", ÷ {other} {p['cpu_us_per_event'] / q['cpu_us_per_event']:.2f}"
                            f" / {task_clock(p) / task_clock(q):.2f}"
                        )
                ok = "" if p["ok"] and p["counted"]["ok"] else " ✗"
                parts.append(f"{rate} ev/s {figures}, p99 {p['p99_ms']:.0f} ms{ok}")
            lines.append("; ".join(parts) + f"; load {e['loadavg']:.1f}")
    names = list(dict.fromkeys(e["target"] for e in results))

    def table(title: str, rows: Callable[[dict[str, Any]], dict[str, float]]) -> None:
        lines.append(f"\n{title}\n{'':>18}" + "".join(f"{n:>16}" for n in names))
        for key in dict.fromkeys(k for e in results for k in rows(e)):
            means = []
            for name in names:
                values = [rows(e).get(key, 0.0) for e in results if e["target"] == name]
                means.append(sum(values) / len(values))
            if any(abs(v) >= 0.05 for v in means):
                lines.append(f"{key:>18}" + "".join(f"{v:16.2f}" for v in means))

    for rate in list(results[0]["phases"]) if results else []:
        table(
            f"per event at {rate} ev/s, idle subtracted (mean over runs):",
            lambda e, rate=rate: e["phases"][rate]["per_event"],  # type: ignore[misc]
        )
    table("idle, per second (mean over runs):", lambda e: e["idle_per_s"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rates", default="500,2000", help="events per second, comma-separated")
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--subs", type=int, default=1000)
    parser.add_argument("--phase", type=float, default=6.0, help="seconds per phase")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of each idle window")
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--lean-tuned", action="store_true", help="also the lean server tuned")
    parser.add_argument(
        "--nolog", action="store_true", help="also liveboard with events published without the log"
    )
    parser.add_argument("--tree", help="also liveboard from this source tree (its src/)")
    parser.add_argument(
        "--perf-record", type=float, default=0.0, help="perf record a phase at this rate too"
    )
    parser.add_argument("--spy", type=float, default=0.0, help="py-spy liveboard at this rate")
    parser.add_argument(
        "--idle-spy", type=float, default=0.0, help="py-spy liveboard idle for this many seconds"
    )
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--nice", type=int, default=-10, help="as bench.run's (0: off)")
    parser.add_argument("--summary", help="only print the summary of this --out file")
    args = parser.parse_args()
    if args.summary:
        print(summary(json.loads(Path(args.summary).read_text())))
        return
    args.rates = [float(r) for r in args.rates.split(",")]
    workdir = Path(f"/tmp/liveboard-leangap-{os.getpid()}")
    workdir.mkdir(parents=True, exist_ok=True)
    gap = LeanGap(args, workdir)
    restore = prioritise(args.nice) if args.nice else None
    import uvloop

    try:
        uvloop.run(gap.run())
    finally:
        if restore is not None:
            prioritise(restore)
        if args.out:
            Path(args.out).write_text(json.dumps(gap.results, indent=1))
    print(summary(gap.results))


if __name__ == "__main__":
    main()
