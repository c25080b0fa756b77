# ruff: noqa: RUF001
"""Scenario G: a deploy as a reconnect storm, the build under test against a baseline build,
alternating in the same run (issue 20 item 4).

One liveboard instance on a fresh PostgreSQL database and a private Redis; ``--rooms``
projects; ``--clients`` subscribers (``bench.storm_client``, two processes), spread over the
rooms, each holding a known offset. While events are written at ``--rate`` per second (round
robin over the rooms: the log, then Redis, as a server's commit does), the instance gets
SIGTERM (1012 to every socket, spread out) and exits; the same command starts again on the same
port. Every client comes back by itself after ``uniform(0, --delay)`` (retrying refused
connects as often, as the SDK does in its restart window), with ``since``; ``--delay 0`` is
"all at once": every client connects the moment the new server listens. Measured from the
moment the restarted server answers ``/healthz`` (polled every 10 ms, "listening"):

* the time by which 50 %, 99 % and 100 % of the clients held every event of their room up to
  its head at that moment, gap-free (each event the previous + 1, none twice), with every
  ``subscribed`` saying ``recovered: true``;
* the server's CPU per reconnect: its CPU from listening to the last client caught up, less
  what the same process spends in the same time serving the writes alone (measured right after,
  for ``STEADY`` seconds), divided by the reconnects;
* refused attempts, by kind (connection refused while the server is down, 503, timeouts).

The baseline is the ``src/`` of ``--baseline`` (a git ref, default ``main``), extracted with
``git archive`` and put first on the server's ``PYTHONPATH``; the build under test is this
checkout (its ``src/`` copied when the bench starts). Each run measures both, in alternating
order. ``--profile`` also records the build under test's restarted server with py-spy from
the moment it listens (the last run) and prints where its time went.

    .venv/bin/python -m bench.storm --clients 2000 --runs 3
    .venv/bin/python -m bench.storm --clients 10000 --runs 3 --delay 1.5 --profile

PostgreSQL at 127.0.0.1:5432 (or ``BENCH_POSTGRES_URL``); ``redis-server`` on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bench.infra import (
    PYTHON,
    ROOT,
    Postgres,
    Process,
    RedisServer,
    Workers,
    cpu_seconds,
    raise_fd_limit,
)
from bench.run import top_frames
from bench.targets import SECRET, LiveboardTarget, write_tokens

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
#: Seconds of writes alone after the storm, for the CPU the writes cost (subtracted).
STEADY = 3.0
#: A storm not caught up by then is reported as such (the run goes on).
CATCH_UP_LIMIT = 60.0
#: Where each share of the profile is counted: the first pattern found in a sample's stack.
PROFILE_PARTS = [
    ("JWT verification", ("auth.py", "token_cache", "jwt")),
    (
        "the subscribe's database read",
        ("Node._admit", "subscribe_read.py", "store/admission.py", "eventlog.py"),
    ),
    (
        "accept, upgrade, session",
        ("endpoint.py", "handshake", "realtime/admission.py", "UpgradeAcceptor"),
    ),
    ("subscribe (hub, broker interest)", ("node.py",)),
    ("asyncpg/SQLAlchemy elsewhere", ("sqlalchemy", "asyncpg")),
    ("fan-out of live events", ("hub.py", "redis")),
]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Build:
    """One build of the server (its ``PYTHONPATH``), its database and its rooms; every server
    process it spawned (stopped by ``stop_all``, whatever happened)."""

    def __init__(self, name: str, src: Path | None, workdir: Path, redis: RedisServer) -> None:
        self.name = name
        self.src = src
        self.workdir = workdir / name
        self.workdir.mkdir()
        self.target = LiveboardTarget(self.workdir, redis, Postgres(POSTGRES_URL))
        if src is not None:
            self.target.extra_env["PYTHONPATH"] = str(src)
        self.env: dict[str, str] = {}
        self.port = 0
        self.spawned: list[Process] = []

    async def setup(self, rooms: int, users: int) -> None:
        await self.target.create_database(f"bench_storm_{self.name}")
        await self.target.start(1)
        await self.target.setup(rooms, users)
        await self.target.stop()

    def spawn(self, port: int, label: str) -> Process:
        env = {
            "LIVEBOARD_DATABASE_URL": str(self.target.database_url),
            "LIVEBOARD_JWT_SECRET": SECRET,
            "LIVEBOARD_REDIS_URL": self.target.redis.url,
            "LIVEBOARD_LOG_FORMAT": "text",
            "LIVEBOARD_LOG_LEVEL": "warning",
            **self.target.extra_env,
        }
        argv = [PYTHON, "-m", "liveboard", "serve", "--port", str(port)]
        process = Process(f"{self.name}:{port}", argv, self.workdir / f"{label}.log", env)
        self.spawned.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.spawned:
            with contextlib.suppress(Exception):
                process.stop(kill=True)
        self.spawned = []


async def listening(url: str, process: Process, timeout: float = 60.0) -> float:  # noqa: ASYNC109
    """Poll ``url`` every 10 ms; the wall-clock time of its first 200."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited; see {process.log_path}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return time.time()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{process.name} did not answer {url}")
            await asyncio.sleep(0.01)


def listen_drops() -> int:
    """The machine's TCP listen-queue overflows so far (``/proc/net/netstat``, TcpExt
    ListenOverflows): connects the kernel dropped because a listener's accept queue was full."""
    with contextlib.suppress(OSError):
        lines = Path("/proc/net/netstat").read_text().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            if names.startswith("TcpExt:"):
                row = dict(zip(names.split()[1:], values.split()[1:], strict=False))
                return int(row.get("ListenOverflows", 0))
    return 0


async def recoveries(port: int) -> dict[str, float]:
    """``liveboard_recoveries_total`` by source, from the server's /metrics ({} without it)."""
    found: dict[str, float] = {}
    with contextlib.suppress(Exception):
        url = f"http://127.0.0.1:{port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            text = await response.text()
        for line in text.splitlines():
            if line.startswith("liveboard_recoveries_total{"):
                source = line.split('source="', 1)[1].split('"', 1)[0]
                found[source] = float(line.rsplit(" ", 1)[1])
    return found


def free_port() -> int:
    from bench.infra import free_port as pick

    return pick()


async def storm(
    build: Build, workers: Workers, args: argparse.Namespace, run: int, profile: bool
) -> dict[str, Any]:
    """One storm against ``build``: connect, write, SIGTERM, restart, measure."""
    target = build.target
    for attempt in range(5):  # a port just picked may be taken meanwhile (a client's socket)
        port = free_port()
        server = build.spawn(port, f"run{run}-first-{attempt}")
        try:
            await listening(f"http://127.0.0.1:{port}/readyz", server)
            break
        except RuntimeError:
            server.stop(kill=True)
    else:
        raise RuntimeError(f"{build.name}: no server started; see {build.workdir}")
    rooms = target.rooms
    specs = [[n % args.users, rooms[n % len(rooms)].name] for n in range(args.clients)]
    count = len(workers.procs)
    answers = await workers.each(
        [
            {
                "cmd": "connect",
                "url": f"ws://127.0.0.1:{port}",
                "specs": specs[k::count],
                "concurrency": 100,
                "delay": args.delay,
                "wait": 10.0,
            }
            for k in range(count)
        ]
    )
    opened = sum(a["opened"] for a in answers)
    if opened != args.clients:
        errors = [a["errors"] for a in answers]
        raise RuntimeError(f"{opened} of {args.clients} connected: {errors}")

    stop_writing = asyncio.Event()
    written = 0

    async def write() -> None:
        nonlocal written
        period = 1.0 / args.rate
        next_at = time.monotonic()
        while not stop_writing.is_set():
            await target.publish([rooms[written % len(rooms)]])
            written += 1
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    writer = asyncio.create_task(write())
    try:
        await asyncio.sleep(1.0)
        await workers.all({"cmd": "arm"})
        terminated = time.time()
        server.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.proc.wait, 60)
        server.stop()
        stopped = time.time()
        drops_before = listen_drops()
        load = os.getloadavg()[0]
        again = build.spawn(port, f"run{run}-restarted")
        listen_at = await listening(f"http://127.0.0.1:{port}/healthz", again)
        await workers.all({"cmd": "release"})  # --delay 0: all at once, now
        spy: asyncio.subprocess.Process | None = None
        raw = build.workdir / f"profile-run{run}.txt"
        if profile:  # from listening on: the storm, not the imports and migrations before it
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"),
                *("record", "-r", "200", "-d", str(int(args.profile_seconds)), "-f", "raw"),
                *("-o", str(raw), "-p", str(again.pid), "--nonblocking"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        cpu_at_listen = cpu_seconds(again.pid)
        heads = dict(target.heads)  # every event committed before the server listened
        deadline = time.monotonic() + CATCH_UP_LIMIT
        while True:
            behind = await workers.all({"cmd": "collect", "heads": heads, "since": listen_at})
            if sum(b["behind"] for b in behind) == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        caught_wall = time.time()
        cpu_storm = cpu_seconds(again.pid) - cpu_at_listen
        drops = listen_drops() - drops_before
        from_where = await recoveries(port)
        storm_seconds = caught_wall - listen_at
        steady_from = cpu_seconds(again.pid)
        await asyncio.sleep(STEADY)
        steady_rate = (cpu_seconds(again.pid) - steady_from) / STEADY
    finally:
        stop_writing.set()
        await writer
    final_heads = dict(target.heads)
    await asyncio.sleep(1.0)
    results = await workers.all({"cmd": "collect", "heads": final_heads, "since": listen_at})
    if spy is not None:
        with contextlib.suppress(ProcessLookupError):
            spy.send_signal(signal.SIGINT)
        await spy.wait()
    await workers.all({"cmd": "close"})
    again.stop()

    # ``caught`` as collected above (against the heads at listening) — from the storm loop's
    # last answers: the final collect measures against the final heads for gaps and loss.
    caught = [c for b in behind for c in b["caught"]]
    late = sum(1 for c in caught if c is None)
    times = np.array([max(0.0, c) for c in caught if c is not None])
    refusals: dict[str, int] = {}
    for b in behind:
        for kind, n in b["refusals"].items():
            refusals[kind] = refusals.get(kind, 0) + n
    reconnects = sum(r["reconnects"] for r in results)
    extra_cpu = cpu_storm - steady_rate * storm_seconds
    out = {
        "build": build.name,
        "exit_code": code,
        "down_seconds": stopped - terminated,
        "restart_to_listen_seconds": listen_at - stopped,
        "caught_p50_s": float(np.percentile(times, 50)) if len(times) else None,
        "caught_p99_s": float(np.percentile(times, 99)) if len(times) else None,
        "caught_all_s": None if late else float(times.max()),
        "not_caught": late,
        "reconnects": reconnects,
        "server_cpu_s": cpu_storm,
        "steady_cpu_per_s": steady_rate,
        # Not caught up: the server was still working through the storm when the writes alone
        # were measured, and the difference means nothing.
        "cpu_per_reconnect_ms": None if late else 1000.0 * extra_cpu / max(1, reconnects),
        "refusals": refusals,
        "gaps": sum(r["gaps"] for r in results),
        "gap_samples": [g for r in results for g in r["gap_samples"]][:10],
        "dups": sum(r["dups"] for r in results),
        "not_recovered": sum(r["not_recovered"] for r in results),
        "behind_at_end": sum(r["behind"] for r in results),
        "events_written": written,
        "load_1m": load,
        "listen_overflows": drops,
        "recoveries": from_where,
    }
    if profile:
        out["profile_top"] = top_frames(raw, 25)
        out["profile_parts"] = profile_parts(raw)
    return out


def profile_parts(raw: Path) -> dict[str, float]:
    """Share of the samples (%) in each of ``PROFILE_PARTS`` (first match wins), idle apart."""
    counts: dict[str, int] = {}
    total = 0
    if not raw.exists():
        return {}
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        samples = int(n)
        total += samples
        part = "other"
        if "select (selectors.py" in stack or "_run_once" in stack.rsplit(";", 1)[-1]:
            part = "idle (waiting in the loop)"
        else:
            for name, patterns in PROFILE_PARTS:
                if any(p in stack for p in patterns):
                    part = name
                    break
        counts[part] = counts.get(part, 0) + samples
    return {k: 100.0 * v / total for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def summary(rows: list[dict[str, Any]]) -> str:
    def fmt(v: Any) -> str:
        return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    lines = [
        "| run | build | p50 s | p99 s | 100 % s | not caught | CPU/reconnect ms | reconnects "
        "| refusals | gaps | dups | not recovered | from memory / read | listen overflows | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['build']} | {fmt(r['caught_p50_s'])} | {fmt(r['caught_p99_s'])} "
            f"| {fmt(r['caught_all_s'])} | {r['not_caught']} | {fmt(r['cpu_per_reconnect_ms'])} "
            f"| {r['reconnects']} | {r['refusals']} | {r['gaps']} | {r['dups']} "
            f"| {r['not_recovered']} | {r['recoveries'].get('memory', '-')} / "
            f"{r['recoveries'].get('database', '-')} | {r['listen_overflows']} "
            f"| {r['load_1m']:.1f} |"
        )
    return "\n".join(lines)


def ratios(rows: list[dict[str, Any]]) -> str:
    """after / before per run, for CPU per reconnect and the catch-up times."""
    out = []
    for run in sorted({r["run"] for r in rows}):
        pair = {r["build"]: r for r in rows if r["run"] == run}
        if "before" not in pair or "after" not in pair:
            continue
        b, a = pair["before"], pair["after"]
        parts = []
        for key in ("cpu_per_reconnect_ms", "caught_p50_s", "caught_p99_s", "caught_all_s"):
            if a.get(key) and b.get(key):
                parts.append(f"{key} {a[key] / b[key]:.2f}×")
        out.append(f"run {run}: " + ", ".join(parts))
    return "\n".join(out)


def copy_source(into: Path) -> Path:
    """A copy of this checkout's ``src/`` under ``into``; its path."""
    shutil.copytree(ROOT / "src", into / "src", ignore=shutil.ignore_patterns("__pycache__"))
    return into / "src"


def extract_baseline(ref: str, into: Path) -> None:
    """``src/`` of git ref ``ref`` under ``into``."""
    archive = subprocess.run(
        ["git", "archive", ref, "src"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


async def main_async(args: argparse.Namespace) -> int:
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="bench-storm-"))
    baseline = workdir / "baseline"
    baseline.mkdir()
    extract_baseline(args.baseline, baseline)
    redis = RedisServer(workdir)
    await redis.ready()
    builds = {
        "before": Build("before", baseline / "src", workdir, redis),
        # A copy: editing the checkout during a run must not change the restarted server.
        "after": Build("after", copy_source(workdir / "current"), workdir, redis),
    }
    tokens = workdir / "tokens.json"
    write_tokens(tokens, args.users)
    workers = Workers(2, tokens, workdir, module="bench.storm_client")
    rows: list[dict[str, Any]] = []
    try:
        await workers.start()
        for build in builds.values():
            if args.only and build.name != args.only:
                continue
            await build.setup(args.rooms, args.users)
        for run in range(args.runs):
            order = ["before", "after"] if run % 2 == 0 else ["after", "before"]
            for name in order:
                if args.only and name != args.only:
                    continue
                profile = args.profile and name == "after" and run == args.runs - 1
                log(f"run {run}: {name}, {args.clients} clients")
                row = await storm(builds[name], workers, args, run, profile)
                row["run"] = run
                rows.append(row)
                log(
                    f"  p50 {row['caught_p50_s']} p99 {row['caught_p99_s']} all "
                    f"{row['caught_all_s']} s; {row['cpu_per_reconnect_ms']} ms CPU/reconnect;"
                    f" refusals {row['refusals']}; gaps {row['gaps']} dups {row['dups']} "
                    f"not recovered {row['not_recovered']}"
                )
    finally:
        await workers.stop()
        for build in builds.values():
            build.stop_all()
            await build.target.stop(kill=True)
        redis.stop()
        for build in builds.values():
            await build.target.postgres.drop_all()
    print(summary(rows))
    print(ratios(rows))
    for row in rows:
        if "profile_parts" in row:
            print("where the restarted server's time went (% of samples):")
            print(json.dumps(row["profile_parts"], indent=1))
            print(json.dumps(row["profile_top"][:15], indent=1))
    out = Path(args.output) if args.output else workdir / "storm.json"
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    log(f"results: {out}")
    bad = any(r["gaps"] or r["dups"] or r["not_recovered"] or r["behind_at_end"] for r in rows)
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0, help="events written per second")
    parser.add_argument(
        "--delay",
        type=float,
        default=0.0,
        help="each client waits uniform(0, delay) s "
        "before each attempt (0: all at once when the new server listens; the SDK's restart "
        "window: 1.5)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", default="main", help="git ref of the baseline's src/")
    parser.add_argument("--only", choices=["before", "after"], default=None)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument("--output", default=None, help="JSON results file")
    args = parser.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
