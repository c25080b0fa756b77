# ruff: noqa: E501, RUF001
"""Run the benchmark suite: liveboard against python-socketio, same client, same run.

    python -m bench.run              # full suite (≤ 10 minutes): make bench
    python -m bench.run --quick      # smoke version (≤ 1 minute): make bench-quick
    python -m bench.run --only A,C   # some scenarios
    python -m bench.run --profile    # also py-spy the liveboard server under scenario A

Scenarios (see docs/benchmarks.md for the method):

A. one busy room: N subscribers in one project; fixed event rates, then a rate ladder to the
   highest rate with p99 ≤ 50 ms, nothing lost and nothing duplicated;
B. many small rooms: N subscribers over 100 projects;
C. end to end across instances: REST mutations on instance 1, subscribers on instance 2,
   PostgreSQL + Redis; mutation → event latency;
D. idle connections: server RSS per subscribed connection at growing counts;
E. churn: connect + subscribe + presence join + close cycles per second, sustained.

Writes ``bench/results/<timestamp>.json`` and ``.md``; the plot goes to
``docs/bench-latency.png``; ``--update-docs`` also rewrites the results section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bench.floor import minimal_fanout_async, send_floor
from bench.infra import ROOT, Postgres, RedisServer, Workers, raise_fd_limit
from bench.targets import (
    BareTarget,
    LeanTarget,
    LiveboardPostgresTarget,
    LiveboardSourceTarget,
    LiveboardTarget,
    LiveboardWorkersTarget,
    Room,
    SocketioTarget,
    Target,
    write_tokens,
)

RESULTS = ROOT / "bench" / "results"
P99_LIMIT_MS = 50.0


@dataclass
class Config:
    quick: bool
    #: Load generator processes. Two: one process or two made no consistent difference on
    #: this 2-core machine; run-to-run variance is larger (see docs/benchmarks.md, Method).
    workers: int = 2
    subs: int = 1000
    a_rates: list[float] = field(default_factory=lambda: [10.0, 50.0, 200.0])
    a_phase: float = 8.0
    ladder_step: float = 4.0
    ladder_factor: float = 1.3
    ladder_max: float = 4000.0
    #: After the ladder, liveboard only: rates past the p99 limit, for the most deliveries/s
    #: made with nothing lost (the peer is far behind by then; see docs/benchmarks.md).
    a_limit_rates: list[float] = field(default_factory=lambda: [500.0, 1000.0])
    a_limit_phase: float = 5.0
    drain: float = 5.0
    b_rooms: int = 100
    b_rates: list[float] = field(default_factory=lambda: [500.0, 2000.0])
    b_phase: float = 6.0
    c_subs: int = 1000
    c_rate: float = 50.0
    c_phase: float = 10.0
    d_steps: list[int] = field(default_factory=lambda: [1000, 10000, 19900])
    e_concurrency: int = 32
    e_phase: float = 8.0
    connect_concurrency: int = 200
    settle: float = 1.0  # seconds between connecting and reading RSS (D)

    @classmethod
    def make(cls, quick: bool, workers: int = 2) -> Config:
        if not quick:
            return cls(quick=False, workers=workers)
        return cls(
            quick=True,
            workers=workers,
            subs=200,
            a_rates=[10.0, 50.0, 200.0],
            a_phase=1.2,
            ladder_step=1.0,
            ladder_factor=2.0,
            ladder_max=800.0,
            a_limit_rates=[400.0],
            a_limit_phase=1.0,
            drain=1.5,
            b_rooms=20,
            b_rates=[200.0],
            b_phase=1.2,
            c_subs=200,
            c_phase=1.5,
            d_steps=[200, 400],
            settle=0.5,
            e_concurrency=8,
            e_phase=1.5,
        )


class Machine:
    """Whole-machine CPU use, to tell a quiet run from one sharing the cores."""

    @staticmethod
    def snapshot() -> tuple[float, float]:
        with open("/proc/stat") as f:
            parts = [float(x) for x in f.readline().split()[1:]]
        idle = parts[3] + parts[4]
        return sum(parts), idle

    @staticmethod
    def busy_cores(before: tuple[float, float], after: tuple[float, float]) -> float:
        total, idle = after[0] - before[0], after[1] - before[1]
        cores = os.cpu_count() or 1
        return 0.0 if total <= 0 else cores * (1.0 - idle / total)


def percentiles(latency: np.ndarray, missing: int) -> dict[str, float | None]:
    """p50/p90/p99/p99.9/max of the deliveries, undelivered ones counted as infinitely late."""
    total = len(latency) + missing
    out: dict[str, float | None] = {}
    for name, q in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)):
        if total == 0:
            out[name] = None
            continue
        rank = q / 100.0 * total
        if rank > len(latency):
            out[name] = math.inf
        else:
            out[name] = float(np.percentile(latency, min(100.0, 100.0 * rank / len(latency))))
    out["max"] = math.inf if missing else (float(latency.max()) if len(latency) else None)
    out["mean"] = float(latency.mean()) if len(latency) else None
    return out


class Bench:
    def __init__(
        self,
        config: Config,
        workdir: Path,
        only: set[str],
        profile: bool,
        brokers: str = "",
        against: tuple[Path, bool] | None = None,
        server_workers: str = "",
    ) -> None:
        """``brokers``: compare liveboard's brokers (``redis-first`` / ``postgres-first``: liveboard
        on Redis and on PostgreSQL's broker, in that order) instead of liveboard and the peer.
        ``against``: compare liveboard with liveboard from another source tree (``src``
        directory, whether it runs first) instead. ``server_workers``: ``1-first`` / ``2-first``:
        liveboard as one process against ``serve --workers 2``, in that order, instead."""
        self.server_workers = server_workers
        self.brokers = brokers
        self.against = against
        self.config = config
        self.workdir = workdir
        self.only = only
        self.profile = profile
        self.redis = RedisServer(workdir)
        self.postgres = Postgres(
            os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
        )
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.users = max([config.subs, config.c_subs, *config.d_steps]) + 100
        self.workers = Workers(config.workers, workdir / "tokens.json", workdir)
        self.results: dict[str, Any] = {"scenarios": {}}
        self._npz = itertools.count()

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    # Connections

    async def connect(
        self, target: Target, specs: list[tuple[int, str]], instance: int = 0
    ) -> dict[str, Any]:
        """Open and subscribe connections (``(user, room)``), spread over the workers."""
        n = self.config.workers
        answers = await self.workers.each(
            [
                {
                    "cmd": "connect",
                    "proto": target.proto,
                    "url": target.url(instance),
                    "specs": [list(s) for s in specs[k::n]],
                    "concurrency": max(1, self.config.connect_concurrency // n),
                    "wait": 30.0,
                }
                for k in range(n)
            ]
        )
        opened = sum(a["opened"] for a in answers)
        failed = sum(a["failed"] for a in answers)
        seconds = max(a["seconds"] for a in answers)
        errors: dict[str, int] = {}
        for a in answers:
            for k, v in a["errors"].items():
                errors[k] = errors.get(k, 0) + v
        self.log(
            f"  {target.name}: {opened} connections subscribed in {seconds:.1f} s"
            + (f", {failed} failed {errors}" if failed else "")
        )
        return {"opened": opened, "failed": failed, "seconds": seconds, "errors": errors}

    async def disconnect(self) -> None:
        await self.workers.all({"cmd": "close", "concurrency": 100})

    # One measured phase

    async def phase(
        self,
        target: Target,
        label: str,
        rate: float,
        duration: float,
        action: Callable[[int], Awaitable[None]],
        *,
        instances: tuple[int, ...] = (0,),
        sent_at: dict[int, float] | None = None,
        settle: Callable[[], Awaitable[None]] | None = None,
        max_batch: int = 1000,
        drain: float | None = None,
    ) -> dict[str, Any]:
        """Drive ``action`` (publish k events) at ``rate`` for ``duration`` s, wait for every
        delivery (at most ``config.drain`` s), and measure.

        ``sent_at`` (tag → unix time a request was sent) turns on tracing: each delivery's tag
        (the mutation number in the task's title) gives its request → receipt latency.
        ``settle`` is awaited once the driving stops (requests still in flight)."""
        heads = target.heads
        trace = sent_at is not None
        await self.workers.all({"cmd": "reset", "heads": heads, "tracing": trace})
        loop = asyncio.get_running_loop()
        counters0 = [await target.counters(i) for i in instances]
        cpu0 = [target.cpu(i) for i in instances]
        sys0 = [target.cpu_system(i) for i in instances]
        client0, redis0, machine0 = self.workers.cpu(), self.redis.process.cpu(), Machine.snapshot()
        harness0 = own_cpu()
        start = loop.time()
        sent = 0
        while True:
            elapsed = loop.time() - start
            if elapsed >= duration:
                break
            due = min(int(elapsed * rate) + 1 - sent, max_batch)
            if due > 0:
                await action(due)
                sent += due
            await asyncio.sleep(max(0.002, start + sent / rate - loop.time()))
        elapsed = loop.time() - start
        if settle is not None:
            await settle()
        end_heads = target.heads
        wait = self.config.drain if drain is None else drain
        drained = await self.workers.all({"cmd": "drain", "heads": end_heads, "wait": wait})
        window = loop.time() - start
        server_cpu = sum(target.cpu(i) - c for i, c in zip(instances, cpu0, strict=True))
        server_sys = sum(target.cpu_system(i) - c for i, c in zip(instances, sys0, strict=True))
        client_cpu, redis_cpu = self.workers.cpu() - client0, self.redis.process.cpu() - redis0
        busy = Machine.busy_cores(machine0, Machine.snapshot())
        harness_cpu = own_cpu() - harness0
        ours = (server_cpu + client_cpu + redis_cpu + harness_cpu) / window
        counters = {}
        for i, before in zip(instances, counters0, strict=True):
            after = await target.counters(i)
            for name, value in after.items():
                delta = value - before.get(name, 0.0)
                if delta:
                    counters[f"instance{i}:{name}"] = delta
        paths = [self.workdir / f"phase{next(self._npz)}.npz" for _ in range(self.config.workers)]
        counts = await self.workers.each(
            [{"cmd": "collect", "heads": end_heads, "path": str(p)} for p in paths]
        )
        arrays = [np.load(p) for p in paths]
        latency = np.concatenate([a["latency"] for a in arrays]).astype(np.float64)
        deliveries = sum(c["deliveries"] for c in counts)
        missing = sum(c["missing"] for c in counts)
        dups = sum(c["dups"] for c in counts)
        reordered = sum(c["reordered"] for c in counts)
        closed = sum(c["closed"] for c in counts)
        behind = sum(d["behind"] for d in drained)
        result: dict[str, Any] = {
            "label": label,
            "offered_rate": rate,
            "events": sent,
            "seconds": round(elapsed, 3),
            "achieved_rate": sent / elapsed if elapsed else 0.0,
            "deliveries": deliveries,
            "deliveries_per_s": deliveries / elapsed if elapsed else 0.0,
            "missing": missing,
            "dups": dups,
            "reordered": reordered,
            "closed": closed,
            "undrained_connections": behind,
            "server_cpu_s": server_cpu,
            "cpu_per_100k": server_cpu / deliveries * 1e5 if deliveries else None,
            "server_cpu_util": server_cpu / window,
            "server_system_share": server_sys / server_cpu if server_cpu else None,
            "client_cpu_s": client_cpu,
            "redis_cpu_s": redis_cpu,
            "harness_cpu_s": harness_cpu,
            "server_counters": counters,
            "machine_busy_cores": busy,
            "other_load_cores": max(0.0, busy - ours),
            "measured_window_s": window,
            **{f"{k}_ms": v for k, v in percentiles(latency, missing).items()},
        }
        if sent_at:
            tags = np.concatenate([a["trace_tag"] for a in arrays])
            received = np.concatenate([a["trace_time"] for a in arrays])
            table = np.full(max(sent_at) + 1, np.nan)
            table[list(sent_at)] = list(sent_at.values())
            inside = (tags >= 0) & (tags < len(table))
            requested = table[tags[inside]]
            known = ~np.isnan(requested)
            mutation = (received[inside][known] - requested[known]) * 1000.0
            result["traced_deliveries"] = len(mutation)
            for k, v in percentiles(mutation, missing).items():
                result[f"mutation_{k}_ms"] = v
        for p in paths:
            with contextlib.suppress(OSError):
                p.unlink()
        result["ok"] = bool(
            missing == 0
            and dups == 0
            and reordered == 0
            and closed == 0
            and result["p99_ms"] is not None
            and result["p99_ms"] <= P99_LIMIT_MS
            and result["achieved_rate"] >= 0.95 * rate
        )
        self.log(
            f"  {target.name} {label}: {result['deliveries_per_s']:,.0f} deliv/s, "
            f"p50 {fmt_ms(result['p50_ms'])} p99 {fmt_ms(result['p99_ms'])}, "
            f"CPU {fmt(result['cpu_per_100k'])} s/100k ({server_cpu:.2f} s), client {client_cpu:.2f} s, "
            f"missing {missing} dups {dups} reordered {reordered} closed {closed}, other load {result['other_load_cores']:.2f} cores"
            + ("" if result["ok"] else "  ✗")
        )
        return result

    def publisher(self, target: Target, rooms: list[Room]) -> Callable[[int], Awaitable[None]]:
        cycle = itertools.cycle(rooms)

        async def action(count: int) -> None:
            await target.publish([next(cycle) for _ in range(count)])

        return action

    async def reset_target(self, target: Target, specs: list[tuple[int, str]]) -> None:
        """After an overload: drop the backlog (kill, restart) and reconnect everyone."""
        self.log(f"  {target.name}: restarting after an overload, reconnecting")
        await self.disconnect()
        await target.restart()
        await self.connect(target, specs)

    # Scenarios

    async def scenario_a(self, target: Target) -> dict[str, Any]:
        cfg = self.config
        await target.start()
        await target.setup(1, self.users)
        room = target.rooms[0]
        specs = [(i, room.name) for i in range(cfg.subs)]
        out: dict[str, Any] = {
            "subscribers": cfg.subs,
            "connect": await self.connect(target, specs),
        }
        if isinstance(target, LiveboardWorkersTarget):
            out["worker_spread"] = target.spread()
            self.log(f"  {target.name}: subscribers per worker {out['worker_spread']}")
        action = self.publisher(target, [room])
        fixed = []
        for rate in cfg.a_rates:
            r = await self.phase(target, f"A {rate:g} ev/s", rate, cfg.a_phase, action)
            if not r["ok"] and r["p99_ms"] is not None and not _overloaded(r):
                # Only the p99 missed (as on the ladder): a hiccup of the machine or too much?
                r = await self.phase(target, f"A {rate:g} ev/s (again)", rate, cfg.a_phase, action)
            fixed.append(r)
            if r["undrained_connections"] or r["closed"]:
                await self.reset_target(target, specs)
        out["fixed"] = fixed
        passing = [r["offered_rate"] for r in fixed if r["ok"]]
        failing = [r["offered_rate"] for r in fixed if not r["ok"]]
        ladder = []
        if passing:
            rate = max(passing)
            ceiling = min([f for f in failing if f > rate], default=cfg.ladder_max)
            best = rate
            while True:
                rate = rate * cfg.ladder_factor
                if rate >= ceiling:
                    break
                r = await self.phase(
                    target, f"A ladder {rate:.0f} ev/s", rate, cfg.ladder_step, action
                )
                ladder.append(r)
                if not r["ok"] and not _overloaded(r):
                    # Only the p99 missed: a hiccup of the machine or an overload? Once more.
                    r = await self.phase(
                        target, f"A ladder {rate:.0f} ev/s (again)", rate, cfg.ladder_step, action
                    )
                    ladder.append(r)
                if not r["ok"]:
                    if r["undrained_connections"] or r["closed"]:
                        await self.reset_target(target, specs)
                    break
                best = rate
        else:
            # Even the lowest fixed rate failed: go down (halving) to 1 event/s at most.
            best = 0.0
            rate = min(cfg.a_rates)
            while rate > 1.0:
                rate = max(1.0, rate / 2.0)
                r = await self.phase(
                    target, f"A ladder {rate:.1f} ev/s", rate, cfg.ladder_step, action
                )
                ladder.append(r)
                if r["ok"]:
                    best = rate
                    break
                if r["undrained_connections"] or r["closed"]:
                    await self.reset_target(target, specs)
        out["ladder"] = ladder
        limit = []
        if target.proto == "lb" and passing:
            for rate in cfg.a_limit_rates:
                r = await self.phase(
                    target, f"A limit {rate:g} ev/s", rate, cfg.a_limit_phase, action
                )
                limit.append(r)
                if r["undrained_connections"] or r["closed"] or r["missing"]:
                    await self.reset_target(target, specs)
                    break
        out["limit"] = limit
        best_phase = max(
            (r for r in fixed + ladder if r["ok"]), key=lambda r: r["offered_rate"], default=None
        )
        out["highest_ok_rate"] = best
        out["max_delivered_per_s"] = max(
            r["deliveries"] / r["measured_window_s"] for r in fixed + ladder + limit
        )
        lossless = [
            r for r in fixed + ladder + limit if not (r["missing"] or r["dups"] or r["closed"])
        ]
        out["max_lossless_deliveries_per_s"] = max(
            (r["deliveries_per_s"] for r in lossless), default=0.0
        )
        out["highest_ok_deliveries_per_s"] = best_phase["deliveries_per_s"] if best_phase else 0.0
        if self.profile and target.proto == "lb":
            out["profile"] = await self.profile_server(target, action)
        await self.disconnect()
        await target.stop()
        return out

    async def profile_server(
        self, target: Target, action: Callable[[int], Awaitable[None]]
    ) -> dict[str, Any]:
        """py-spy the server for 10 s at the scenario's middle fixed rate (50 ev/s = 50k
        deliveries/s) and at 200 ev/s."""
        spy = Path(sys.executable).parent / "py-spy"
        out: dict[str, Any] = {}
        for rate in (50.0, 200.0):
            raw = self.workdir / f"profile-{rate:g}.txt"
            svg = (
                ROOT / "docs" / "bench-profile.svg"
                if rate == 50.0
                else RESULTS / f"{self.stamp}-profile-{rate:g}.svg"
            )
            argv = [
                str(spy),
                "record",
                "-d",
                "10",
                "-r",
                "100",
                "-p",
                str(target.pid),
                "--nonblocking",
            ]
            rec_raw = await asyncio.create_subprocess_exec(
                *argv,
                "-f",
                "raw",
                "-o",
                str(raw),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            rec_svg = await asyncio.create_subprocess_exec(
                *argv, "-o", str(svg), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            phase = await self.phase(target, f"A profiled {rate:g} ev/s", rate, 10.0, action)
            await rec_raw.wait()
            await rec_svg.wait()
            out[f"{rate:g}"] = {
                "phase": phase,
                "top": top_frames(raw),
                "svg": str(svg.relative_to(ROOT)),
            }
        return out

    async def scenario_b(self, target: Target) -> dict[str, Any]:
        cfg = self.config
        await target.start()
        await target.setup(cfg.b_rooms, self.users)
        rooms = target.rooms[: cfg.b_rooms]
        specs = [(i, rooms[i % len(rooms)].name) for i in range(cfg.subs)]
        out: dict[str, Any] = {
            "subscribers": cfg.subs,
            "rooms": len(rooms),
            "connect": await self.connect(target, specs),
        }
        action = self.publisher(target, rooms)
        phases = []
        for rate in cfg.b_rates:
            r = await self.phase(
                target, f"B {rate:g} ev/s over {len(rooms)} rooms", rate, cfg.b_phase, action
            )
            phases.append(r)
            if r["undrained_connections"] or r["closed"]:
                await self.reset_target(target, specs)
        out["phases"] = phases
        await self.disconnect()
        await target.stop()
        return out

    async def scenario_c(self, target: Target) -> dict[str, Any]:
        cfg = self.config
        saved = (target.rooms, target.database_url, getattr(target, "workspace_id", ""))
        target.rooms = []
        if isinstance(target, LiveboardTarget):
            target.workspace_id = ""
        kind = target.name.replace("-", "_")
        await target.create_database(f"bench_c_{kind}_{self.stamp}")
        try:
            await target.start(2)
            await target.setup(1, self.users)
            room = target.rooms[0]
            specs = [(i, room.name) for i in range(cfg.c_subs)]
            out: dict[str, Any] = {
                "subscribers": cfg.c_subs,
                "connect": await self.connect(target, specs, instance=1),
            }
            counter = itertools.count()
            failures = 0
            sent_at: dict[int, float] = {}
            answered_ms: list[float] = []  # request → HTTP response, the REST part alone
            in_flight: set[asyncio.Task[None]] = set()
            async with aiohttp.ClientSession() as http:

                async def mutation(number: int) -> None:
                    nonlocal failures
                    sent_at[number] = time.time()
                    try:
                        ok = await target.mutate(http, room, f"Mutation {number}")
                    except (aiohttp.ClientError, OSError):
                        ok = False
                    failures += not ok
                    if ok:
                        answered_ms.append((time.time() - sent_at[number]) * 1000.0)

                async def action(count: int) -> None:
                    # Each request at its due time, without waiting for the previous answer:
                    # a slow response must not delay (and so hide) the next request.
                    for _ in range(count):
                        task = asyncio.create_task(mutation(next(counter)))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)

                async def settle() -> None:
                    if in_flight:
                        await asyncio.wait(set(in_flight))

                for _ in range(3):  # warm the REST path (connections, caches) before measuring
                    await action(1)
                    await settle()
                await asyncio.sleep(0.5)
                failures = 0
                sent_at.clear()
                answered_ms.clear()
                r = await self.phase(
                    target,
                    f"C {cfg.c_rate:g} mutations/s",
                    cfg.c_rate,
                    cfg.c_phase,
                    action,
                    instances=(0, 1),
                    sent_at=sent_at,
                    settle=settle,
                    max_batch=1,
                )
            r["mutation_failures"] = failures
            for k, v in percentiles(np.array(answered_ms), 0).items():
                r[f"response_{k}_ms"] = v
            out["phase"] = r
            await self.disconnect()
            await target.stop()
            return out
        finally:
            target.rooms, target.database_url = saved[0], saved[1]
            if isinstance(target, LiveboardTarget):
                target.workspace_id = saved[2]

    async def scenario_d(self, target: Target) -> dict[str, Any]:
        cfg = self.config
        await target.start()
        rooms = await self._rooms(target, cfg.b_rooms)
        # Warm-up: first-use allocations (imports, caches, pools) are not per-connection cost.
        await self.connect(
            target, [(self.users - 1 - i, rooms[i % len(rooms)].name) for i in range(100)]
        )
        await self.disconnect()
        await asyncio.sleep(cfg.settle)
        base = target.rss_kb()
        out: dict[str, Any] = {"baseline_rss_kb": base, "steps": []}
        opened = 0
        for step in cfg.d_steps:
            specs = [(i, rooms[i % len(rooms)].name) for i in range(opened, step)]
            c = await self.connect(target, specs)
            opened += c["opened"]
            await asyncio.sleep(cfg.settle)
            rss = target.rss_kb()
            entry = {
                "target": step,
                "connections": opened,
                "rss_kb": rss,
                "kb_per_conn": (rss - base) / opened if opened else None,
                "connect": c,
            }
            out["steps"].append(entry)
            self.log(
                f"  {target.name}: {opened} idle subscribed connections, RSS {rss / 1024:.1f} MB, {entry['kb_per_conn']:.1f} KB/conn"
            )
        # Served: one event to every room must reach every connection.
        r = await self.phase(
            target,
            f"D served check ({opened} conns)",
            float(len(rooms)),
            1.0,
            self.publisher(target, rooms),
            drain=3 * cfg.drain,
        )
        keys = ("deliveries", "missing", "dups", "closed", "p50_ms", "p99_ms", "measured_window_s")
        out["served"] = {k: r[k] for k in keys}
        out["served"]["connections"] = opened
        if opened > 2000:
            # Stop the server first: closing 20k sockets one handshake at a time is not measured.
            await target.stop()
            await self.disconnect()
        else:
            await self.disconnect()
            await target.stop()
        return out

    async def _rooms(self, target: Target, count: int) -> list[Room]:
        await target.setup(count, self.users)
        return target.rooms[:count]

    async def scenario_e(self, target: Target) -> dict[str, Any]:
        cfg = self.config
        await target.start()
        rooms = await self._rooms(target, cfg.b_rooms)
        users = list(range(self.users))
        n = cfg.workers
        cpu0, client0, machine0 = target.cpu(), self.workers.cpu(), Machine.snapshot()
        spy = None
        raw = self.workdir / "profile-churn.txt"
        if self.profile and target.proto == "lb":
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "-d",
                str(max(1, int(cfg.e_phase) - 1)),
                "-r",
                "100",
                "-p",
                str(target.pid),
                "--nonblocking",
                "-f",
                "raw",
                "-o",
                str(raw),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        answers = await self.workers.each(
            [
                {
                    "cmd": "churn",
                    "proto": target.proto,
                    "url": target.url(),
                    "users": users[k::n],
                    "rooms": [r.name for r in rooms],
                    "concurrency": max(1, cfg.e_concurrency // n),
                    "duration": cfg.e_phase,
                    "wait": 10.0,
                }
                for k in range(n)
            ]
        )
        server_cpu, client_cpu = target.cpu() - cpu0, self.workers.cpu() - client0
        busy = Machine.busy_cores(machine0, Machine.snapshot())
        cycles = sum(a["cycles"] for a in answers)
        seconds = max(a["seconds"] for a in answers)
        errors: dict[str, int] = {}
        for a in answers:
            for k, v in a["errors"].items():
                errors[k] = errors.get(k, 0) + v
        out = {
            "concurrency": cfg.e_concurrency,
            "cycles": cycles,
            "failures": sum(a["failures"] for a in answers),
            "errors": errors,
            "seconds": seconds,
            "cycles_per_s": cycles / seconds if seconds else 0.0,
            "server_cpu_s": server_cpu,
            "server_cpu_ms_per_cycle": server_cpu / cycles * 1000 if cycles else None,
            "client_cpu_s": client_cpu,
            "machine_busy_cores": busy,
            "cycle_p50_ms": max((a["cycle_p50_ms"] or 0) for a in answers),
            "cycle_p99_ms": max((a["cycle_p99_ms"] or 0) for a in answers),
        }
        if spy is not None:
            await spy.wait()
            out["profile_top"] = top_frames(raw, 25)
        self.log(
            f"  {target.name} E churn: {out['cycles_per_s']:.0f} cycles/s, {out['failures']} failures, "
            f"server {fmt(out['server_cpu_ms_per_cycle'])} ms CPU/cycle, cycle p50 {out['cycle_p50_ms']:.1f} ms"
        )
        await target.stop()
        return out

    # The run

    async def run(self) -> dict[str, Any]:
        cfg = self.config
        raise_fd_limit()
        await self.redis.ready()
        write_tokens(self.workdir / "tokens.json", self.users)
        await self.workers.start()
        self.results["meta"] = environment(cfg, self.redis.port)
        self.results["meta"]["server_workers"] = self.server_workers
        if "A" in self.only:
            # Before any server runs: the kernel's price of one write, and of the bare design
            # (one transport.write per socket, a live receiver), for reading A against.
            self.results["meta"]["send_floor_s"] = send_floor()
            self.results["meta"]["minimal_fanout_s"] = await minimal_fanout_async(
                rounds=50 if cfg.quick else 150
            )
        lb = LiveboardTarget(self.workdir, self.redis, self.postgres)
        sio: Target = SocketioTarget(self.workdir, self.redis, self.postgres)
        targets = [lb, sio]
        if self.brokers:
            # liveboard on Redis against liveboard on PostgreSQL's broker (no Redis), in
            # the order asked for (alternated between runs).
            sio = LiveboardPostgresTarget(self.workdir, self.redis, self.postgres)
            lb.ts_before_write = True
            targets = [sio, lb] if self.brokers == "postgres-first" else [lb, sio]
        elif self.server_workers:
            # One process against two workers on one port, both on Redis (alternated between
            # runs); the second's CPU is its supervisor's and both workers'.
            sio = LiveboardWorkersTarget(self.workdir, self.redis, self.postgres, 2)
            targets = [sio, lb] if self.server_workers == "2-first" else [lb, sio]
        elif self.against:
            src, base_first = self.against
            sio = LiveboardSourceTarget(self.workdir, self.redis, self.postgres, src)
            targets = [sio, lb] if base_first else [lb, sio]
            if "B" in self.only:  # the lean server (B only), between them
                targets.insert(1, LeanTarget(self.workdir, self.redis, self.postgres))
            if "D" in self.only:  # the bare uvloop transport + protocol (D only), between them
                targets.insert(1, BareTarget(self.workdir, self.redis, self.postgres))
        await lb.create_database(f"bench_lb_{self.stamp}")
        if self.brokers or self.against or self.server_workers:
            await sio.create_database(f"bench_lbpg_{self.stamp}")
        scenarios = {
            "A": self.scenario_a,
            "B": self.scenario_b,
            "C": self.scenario_c,
            "D": self.scenario_d,
            "E": self.scenario_e,
        }
        try:
            for key, run in scenarios.items():
                if key not in self.only:
                    continue
                self.log(f"scenario {key}")
                entry: dict[str, Any] = {}
                for target in targets:
                    started = time.monotonic()
                    try:
                        entry[target.name] = await run(target)
                    except Exception as exc:
                        self.log(
                            f"  {target.name}: scenario {key} failed: {type(exc).__name__}: {exc}"
                        )
                        entry[target.name] = {"error": f"{type(exc).__name__}: {exc}"}
                        with contextlib.suppress(Exception):
                            await self.disconnect()
                        await target.stop(kill=True)
                    entry[target.name]["scenario_seconds"] = time.monotonic() - started
                self.results["scenarios"][key] = entry
        finally:
            for target in targets:
                await target.stop()
            await self.workers.stop()
            self.redis.stop()
            await self.postgres.drop_all()
        return self.results


def _overloaded(r: dict[str, Any]) -> bool:
    """A phase that lost, duplicated or closed something: running it again tells nothing."""
    return bool(
        r["missing"] or r["closed"] or r["dups"] or r["achieved_rate"] < 0.95 * r["offered_rate"]
    )


# Reporting


def prioritise(niceness: int) -> int | None:
    """Run this process and its children at ``niceness``; returns the previous autogroup nice.

    With the kernel's autogroup scheduling, a process's nice value only counts inside its
    session's group, so the group's own nice (``/proc/self/autogroup``) is set too. Both need
    CAP_SYS_NICE to go below 0; without it the run goes on at normal priority."""
    previous: int | None = None
    with contextlib.suppress(OSError):
        os.nice(niceness - os.nice(0))
    autogroup = Path("/proc/self/autogroup")
    with contextlib.suppress(OSError, ValueError, IndexError):
        previous = int(autogroup.read_text().split("nice")[1])
        autogroup.write_text(str(niceness))
    return previous


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    if math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "–"
    if math.isinf(value):
        return "∞ (undelivered)"
    if value >= 1000:
        return f"{value / 1000:.1f} s"
    return f"{value:.1f} ms"


def ratio(a: float | None, b: float | None, *, higher_is_better: bool = False) -> str:
    """How many times better liveboard (a) is than socketio (b)."""
    if a is None or b is None or a == 0 or b == 0 or math.isinf(a) or math.isinf(b):
        return "–"
    value = a / b if higher_is_better else b / a
    return f"{value:.1f}×"


def top_frames(raw: Path, count: int = 15) -> list[dict[str, Any]]:
    """The functions with the most samples on top of the stack (self time), from py-spy raw."""
    self_time: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    if not raw.exists():
        return []
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        samples = int(n)
        total += samples
        frames = stack.split(";")
        leaf = frames[-1]
        self_time[leaf] = self_time.get(leaf, 0) + samples
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + samples
    ranked = sorted(self_time.items(), key=lambda kv: -kv[1])[:count]
    return [
        {"frame": f, "self_pct": 100.0 * s / total, "inclusive_pct": 100.0 * inclusive[f] / total}
        for f, s in ranked
    ]


def environment(cfg: Config, redis_port: int) -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "absent"

    def command(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return "absent"

    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": "quick" if cfg.quick else "full",
        "config": asdict(cfg),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
        "niceness": os.nice(0),
        "autogroup": Path("/proc/self/autogroup").read_text().strip()
        if Path("/proc/self/autogroup").exists()
        else None,
        "commit": command(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "worktree_dirty": bool(
            command(
                ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "src"]
            )
        ),
        "redis": command(["redis-server", "--version"]),
        "postgres": command(["psql", "--version"]),
        "fd_hard_limit": raise_fd_limit(),
        "packages": {
            name: version(name)
            for name in (
                "aiohttp",
                "uvloop",
                "msgspec",
                "redis",
                "hiredis",
                "asyncpg",
                "SQLAlchemy",
                "python-socketio",
                "python-engineio",
                "picows",
                "numpy",
            )
        },
    }


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown tables (liveboard vs python-socketio, with ratios)."""
    meta = results["meta"]
    sc = results["scenarios"]
    lines = [
        f"Run {meta['started']} ({meta['mode']} mode), commit {meta['commit']}"
        + (" + uncommitted changes in src/" if meta.get("worktree_dirty") else "")
        + f"; {meta['cores']} × {meta['cpu']}; load average at start {meta['loadavg_at_start'][0]:.2f}"
        + f"; {meta['config']['workers']} load generator process(es).",
        "",
    ]
    lb, sio = "liveboard", "python-socketio"

    def get(scenario: str, target: str) -> dict[str, Any]:
        return sc.get(scenario, {}).get(target, {})

    if "A" in sc:
        a_lb, a_sio = get("A", lb), get("A", sio)
        subs = a_lb.get("subscribers", "?")
        lines += [
            f"**A. one busy room** ({subs} subscribers, events published over Redis; CPU = server seconds per 100k deliveries)",
            "",
            "| rate | liveboard CPU s/100k | liveboard p50 / p99 | socketio CPU s/100k | socketio p50 / p99 | CPU ratio | notes |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        by_rate_sio = {r["offered_rate"]: r for r in a_sio.get("fixed", [])}
        for r in a_lb.get("fixed", []):
            s = by_rate_sio.get(r["offered_rate"], {})
            notes = []
            for name, x in ((lb, r), ("socketio", s)):
                if x and x.get("missing"):
                    notes.append(
                        f"{name}: {x['missing']:,} of {x['missing'] + x['deliveries']:,} undelivered after the {x['measured_window_s'] - x['seconds']:.0f} s drain"
                    )
            other = max(
                r.get("other_load_cores", 0.0), s.get("other_load_cores", 0.0) if s else 0.0
            )
            if other >= 0.25:
                notes.append(f"other load on the machine up to {other:.1f} cores")
            lines.append(
                f"| {r['offered_rate']:g} ev/s ({r['deliveries_per_s']:,.0f} deliv/s) | {fmt(r['cpu_per_100k'])} | "
                f"{fmt_ms(r['p50_ms'])} / {fmt_ms(r['p99_ms'])} | {fmt(s.get('cpu_per_100k'))} | "
                f"{fmt_ms(s.get('p50_ms'))} / {fmt_ms(s.get('p99_ms'))} | {ratio(r['cpu_per_100k'], s.get('cpu_per_100k'))} | {'; '.join(notes)} |"
            )
        floor = meta.get("send_floor_s")
        if floor:
            at_50 = next((r for r in a_lb.get("fixed", []) if r["offered_rate"] == 50.0), None)
            versus = (
                f"; liveboard at 50 ev/s costs {at_50['cpu_per_100k'] / (floor * 1e5):.2f}× that"
                if at_50 and at_50.get("cpu_per_100k")
                else ""
            )
            lines += [
                "",
                f"Floor on this machine (`bench/floor.py`, same run): one `send()` of a 600-byte frame"
                f" to each of 1,000 loopback sockets costs {floor * 1e6:.2f} µs of CPU, i.e."
                f" {floor * 1e5:.2f} s per 100k deliveries when each delivery is its own write{versus}.",
            ]
            bare = meta.get("minimal_fanout_s")
            if bare:
                versus = (
                    f"; liveboard at 50 ev/s costs {at_50['cpu_per_100k'] / (bare * 1e5):.2f}× that"
                    if at_50 and at_50.get("cpu_per_100k")
                    else ""
                )
                lines[-1] += (
                    f" The bare design (`transport.write` of that frame to 1,000 uvloop transports,"
                    f" 50 times a second, their peers read by another process) costs"
                    f" {bare * 1e5:.2f} s per 100k deliveries{versus}."
                )
        lines += [
            "",
            "| highest rate with p99 ≤ 50 ms, nothing lost | liveboard | python-socketio | ratio |",
            "| --- | --- | --- | --- |",
            f"| events/s in the room | {a_lb.get('highest_ok_rate', 0):,.0f} | {a_sio.get('highest_ok_rate', 0):,.1f} | {ratio(a_lb.get('highest_ok_rate'), a_sio.get('highest_ok_rate'), higher_is_better=True)} |",
            f"| deliveries/s | {a_lb.get('highest_ok_deliveries_per_s', 0):,.0f} | {a_sio.get('highest_ok_deliveries_per_s', 0):,.0f} | {ratio(a_lb.get('highest_ok_deliveries_per_s'), a_sio.get('highest_ok_deliveries_per_s'), higher_is_better=True)} |",
            f"| most deliveries/s kept up with, nothing lost (any latency) | {a_lb.get('max_lossless_deliveries_per_s', 0):,.0f} | {a_sio.get('max_lossless_deliveries_per_s', 0):,.0f} | {ratio(a_lb.get('max_lossless_deliveries_per_s'), a_sio.get('max_lossless_deliveries_per_s'), higher_is_better=True)} |",
            f"| most deliveries/s in any phase (delivered ÷ time to deliver them, whatever the latency) | {a_lb.get('max_delivered_per_s', 0):,.0f} | {a_sio.get('max_delivered_per_s', 0):,.0f} | {ratio(a_lb.get('max_delivered_per_s'), a_sio.get('max_delivered_per_s'), higher_is_better=True)} |",
            "",
        ]
        limit_rows = a_lb.get("limit", [])
        if limit_rows:
            lines += [
                "Past the p99 limit (liveboard only: python-socketio already fell behind at 50 ev/s):",
                "",
                "| offered ev/s | deliveries/s | p50 / p99 | CPU s/100k | server CPU util | client CPU s | lost / dup / reordered / closed |",
                "| --- | --- | --- | --- | --- | --- | --- |",
            ]
            for r in limit_rows:
                lines.append(
                    f"| {r['offered_rate']:,.0f} | {r['deliveries_per_s']:,.0f} | {fmt_ms(r['p50_ms'])} / {fmt_ms(r['p99_ms'])} | {fmt(r['cpu_per_100k'])} | "
                    f"{r['server_cpu_util']:.0%} | {r['client_cpu_s']:.1f} | {r['missing']:,} / {r['dups']} / {r.get('reordered', 0)} / {r['closed']} |"
                )
            lines.append("")
        ladder_rows = [(lb, r) for r in a_lb.get("ladder", [])] + [
            (sio, r) for r in a_sio.get("ladder", [])
        ]
        if ladder_rows:
            lines += [
                "Rate ladder (each step after the fixed rates; the first failing step ends it):",
                "",
                "| server | offered ev/s | deliveries/s | p50 / p99 | CPU s/100k | server CPU util | client CPU s | lost / dup / reordered / closed | ok |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            ]
            for name, r in ladder_rows:
                lines.append(
                    f"| {name} | {r['offered_rate']:,.1f} | {r['deliveries_per_s']:,.0f} | {fmt_ms(r['p50_ms'])} / {fmt_ms(r['p99_ms'])} | "
                    f"{fmt(r['cpu_per_100k'])} | {r['server_cpu_util']:.0%} | {r['client_cpu_s']:.1f} | {r['missing']:,} / {r['dups']} / {r.get('reordered', 0)} / {r['closed']} | {'✓' if r['ok'] else '✗'} |"
                )
            lines.append("")
    if "B" in sc:
        b_lb, b_sio = get("B", lb), get("B", sio)
        lines += [
            f"**B. many small rooms** ({b_lb.get('subscribers', '?')} subscribers over {b_lb.get('rooms', '?')} projects)",
            "",
            "| total rate | liveboard CPU s/100k | liveboard p50 / p99 | socketio CPU s/100k | socketio p50 / p99 | CPU ratio |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        sio_phases = {r["offered_rate"]: r for r in b_sio.get("phases", [])}
        for r in b_lb.get("phases", []):
            s = sio_phases.get(r["offered_rate"], {})
            lines.append(
                f"| {r['offered_rate']:g} ev/s ({r['deliveries_per_s']:,.0f} deliv/s) | {fmt(r['cpu_per_100k'])} | {fmt_ms(r['p50_ms'])} / {fmt_ms(r['p99_ms'])} | "
                f"{fmt(s.get('cpu_per_100k'))} | {fmt_ms(s.get('p50_ms'))} / {fmt_ms(s.get('p99_ms'))} | {ratio(r['cpu_per_100k'], s.get('cpu_per_100k'))} |"
            )
        lines.append("")
    if "C" in sc:
        c_lb, c_sio = get("C", lb).get("phase", {}), get("C", sio).get("phase", {})
        lines += [
            f"**C. end to end across instances** ({get('C', lb).get('subscribers', '?')} subscribers on instance 2, mutations on instance 1, PostgreSQL + Redis)",
            "",
            "| | liveboard | python-socketio | ratio |",
            "| --- | --- | --- | --- |",
            f"| mutations/s achieved | {c_lb.get('achieved_rate', 0):.1f} | {c_sio.get('achieved_rate', 0):.1f} | |",
            f"| mutation → event p50 | {fmt_ms(c_lb.get('mutation_p50_ms'))} | {fmt_ms(c_sio.get('mutation_p50_ms'))} | {ratio(c_lb.get('mutation_p50_ms'), c_sio.get('mutation_p50_ms'))} |",
            f"| mutation → event p99 | {fmt_ms(c_lb.get('mutation_p99_ms'))} | {fmt_ms(c_sio.get('mutation_p99_ms'))} | {ratio(c_lb.get('mutation_p99_ms'), c_sio.get('mutation_p99_ms'))} |",
            f"| REST response alone p50 / p99 (instance 1) | {fmt_ms(c_lb.get('response_p50_ms'))} / {fmt_ms(c_lb.get('response_p99_ms'))} | {fmt_ms(c_sio.get('response_p50_ms'))} / {fmt_ms(c_sio.get('response_p99_ms'))} | |",
            f"| event `ts` → receipt p50 / p99 | {fmt_ms(c_lb.get('p50_ms'))} / {fmt_ms(c_lb.get('p99_ms'))} | {fmt_ms(c_sio.get('p50_ms'))} / {fmt_ms(c_sio.get('p99_ms'))} | |",
            f"| CPU s per 100k deliveries (both instances) | {fmt(c_lb.get('cpu_per_100k'))} | {fmt(c_sio.get('cpu_per_100k'))} | {ratio(c_lb.get('cpu_per_100k'), c_sio.get('cpu_per_100k'))} |",
            f"| lost / duplicated / reordered | {c_lb.get('missing', '–')} / {c_lb.get('dups', '–')} / {c_lb.get('reordered', '–')} | {c_sio.get('missing', '–')} / {c_sio.get('dups', '–')} / {c_sio.get('reordered', '–')} | |",
            "",
        ]
    if "D" in sc:
        d_lb, d_sio = get("D", lb), get("D", sio)
        lines += [
            "**D. idle subscribed connections** (server RSS growth over its baseline, per connection)",
            "",
            "| connections | liveboard KB/conn | liveboard RSS | socketio KB/conn | socketio RSS | ratio |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        sio_steps = {s["target"]: s for s in d_sio.get("steps", [])}
        for s in d_lb.get("steps", []):
            o = sio_steps.get(s["target"], {})
            lines.append(
                f"| {s['connections']:,} (socketio {o.get('connections', 0):,}) | {fmt(s['kb_per_conn'], 1)} | {s['rss_kb'] / 1024:.0f} MB | "
                f"{fmt(o.get('kb_per_conn'), 1)} | {o.get('rss_kb', 0) / 1024:.0f} MB | {ratio(s['kb_per_conn'], o.get('kb_per_conn'))} |"
            )
        d_bare = get("D", "bare")
        if d_bare.get("steps"):
            # Issue 20 item 7: every liveboard tree of the run against the bare uvloop
            # transport + protocol measured in the same run.
            bare_steps = {s["target"]: s for s in d_bare["steps"]}
            lines += [
                "",
                "| connections | bare KB/conn | server | KB/conn | × bare |",
                "| --- | --- | --- | --- | --- |",
            ]
            for name, d in sc["D"].items():
                if name == "bare":
                    continue
                for s in d.get("steps", []):
                    b = bare_steps.get(s["target"], {})
                    lines.append(
                        f"| {s['connections']:,} | {fmt(b.get('kb_per_conn'), 2)} | {name} | "
                        f"{fmt(s['kb_per_conn'], 2)} | {ratio(s['kb_per_conn'], b.get('kb_per_conn'), higher_is_better=True)} |"
                    )
        for name, d in ((lb, d_lb), (sio, d_sio)):
            served = d.get("served")
            if served:
                lines.append(
                    f"\n{name}: with {served['connections']:,} connections open, one event per room reached "
                    f"{served['deliveries']:,} sockets ({served['missing']} missing), p99 {fmt_ms(served['p99_ms'])}."
                )
        lines.append("")
    if "E" in sc:
        e_lb, e_sio = get("E", lb), get("E", sio)
        lines += [
            f"**E. churn** (connect + subscribe + presence join + close, {e_lb.get('concurrency', '?')} concurrent loops)",
            "",
            "| | liveboard | python-socketio | ratio |",
            "| --- | --- | --- | --- |",
            f"| cycles/s | {e_lb.get('cycles_per_s', 0):.0f} | {e_sio.get('cycles_per_s', 0):.0f} | {ratio(e_lb.get('cycles_per_s'), e_sio.get('cycles_per_s'), higher_is_better=True)} |",
            f"| server CPU ms per cycle | {fmt(e_lb.get('server_cpu_ms_per_cycle'))} | {fmt(e_sio.get('server_cpu_ms_per_cycle'))} | {ratio(e_lb.get('server_cpu_ms_per_cycle'), e_sio.get('server_cpu_ms_per_cycle'))} |",
            f"| cycle p50 / p99 | {fmt_ms(e_lb.get('cycle_p50_ms'))} / {fmt_ms(e_lb.get('cycle_p99_ms'))} | {fmt_ms(e_sio.get('cycle_p50_ms'))} / {fmt_ms(e_sio.get('cycle_p99_ms'))} | |",
            f"| failures | {e_lb.get('failures', '–')} | {e_sio.get('failures', '–')} | |",
            "",
        ]
    errors = [(k, t, v["error"]) for k, e in sc.items() for t, v in e.items() if "error" in v]
    for key, name, error in errors:
        lines.append(f"- scenario {key} on {name} failed: {error}")
    return "\n".join(lines) + "\n"


def jsonable(value: Any) -> Any:
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return None if math.isnan(value) else "inf"
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def update_docs(table: str) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    begin, end = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{begin}\n{end}\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _old, tail = rest.split(end, 1)
    doc.write_text(f"{head}{begin}\n{table}{end}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description="liveboard vs python-socketio benchmark suite")
    parser.add_argument("--quick", action="store_true", help="smoke version (≤ 1 minute)")
    parser.add_argument("--only", default="ABCDE", help="scenarios to run, e.g. A,C")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument("--profile", action="store_true", help="py-spy the liveboard server in A")
    parser.add_argument(
        "--update-docs", action="store_true", help="rewrite docs/benchmarks.md's table"
    )
    parser.add_argument("--no-plot", action="store_true", help="skip docs/bench-latency.png")
    parser.add_argument(
        "--brokers",
        choices=["redis-first", "postgres-first"],
        default="",
        help="liveboard on Redis against liveboard on the postgres broker (in this order),"
        " instead of against python-socketio; no ladder past 1,500 ev/s, no limit rates",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=None,
        help="niceness for the whole run (servers, Redis, load generators); default -10 for the"
        " full suite (when permitted), 0 for --quick",
    )
    parser.add_argument(
        "--against",
        type=Path,
        default=None,
        help="another liveboard source tree (e.g. a checkout of main): liveboard from it"
        " (target liveboard-base) instead of python-socketio",
    )
    parser.add_argument("--against-first", action="store_true", help="run the --against tree first")
    parser.add_argument(
        "--server-workers",
        choices=["1-first", "2-first"],
        default="",
        help="liveboard as one process against `serve --workers 2` (in this order), both on"
        " Redis, instead of against python-socketio; no limit rates (bench.workers_compare)",
    )
    parser.add_argument(
        "--d-steps",
        default="",
        help="scenario D's connection counts, comma-separated (default 1000,10000,19900)",
    )
    args = parser.parse_args()
    niceness = args.nice if args.nice is not None else (0 if args.quick else -10)
    restore_autogroup = prioritise(niceness) if niceness else None
    only = {c for c in args.only.upper() if c in "ABCDE"}
    config = Config.make(args.quick, args.workers)
    if args.brokers:
        config = dataclasses.replace(config, ladder_max=1500.0, a_limit_rates=[])
    if args.server_workers:
        config = dataclasses.replace(config, a_limit_rates=[])
    if args.d_steps:
        steps = [int(step) for step in args.d_steps.split(",")]
        config = dataclasses.replace(config, d_steps=steps)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = RESULTS / f"{stamp}.work"
    workdir.mkdir()
    started = time.monotonic()
    against = (args.against.resolve() / "src", args.against_first) if args.against else None
    bench = Bench(config, workdir, only, args.profile, args.brokers, against, args.server_workers)
    import uvloop

    try:
        results = uvloop.run(bench.run())
    finally:
        if restore_autogroup is not None:
            prioritise(restore_autogroup)
    results["meta"]["total_seconds"] = time.monotonic() - started
    table = markdown(results)
    (RESULTS / f"{stamp}.json").write_text(json.dumps(jsonable(results), indent=2))
    (RESULTS / f"{stamp}.md").write_text(table)
    print()
    print(table)
    if not args.no_plot and "A" in only:
        from bench.plot import plot

        plot(
            RESULTS / f"{stamp}.json",
            ROOT / "docs" / "bench-latency.png" if not args.quick else RESULTS / f"{stamp}.png",
        )
    if args.update_docs:
        update_docs(table)
    for bulky in (workdir / "tokens.json", *workdir.glob("*.npz")):
        bulky.unlink(missing_ok=True)  # the logs stay, for a look at what the servers said
    print(f"results: {RESULTS / stamp}.json ({results['meta']['total_seconds']:.0f} s)")
    failed = [k for k, e in results["scenarios"].items() for v in e.values() if "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
