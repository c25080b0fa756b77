"""What one ``PATCH /api/tasks/{id}`` costs a liveboard instance on PostgreSQL (scenario C's
write path), measured alone on an otherwise idle server, against a bare server doing the same
SQL with asyncpg directly (``bench.bare_patch``), in the same run.

Starts one ``liveboard serve`` on a fresh PostgreSQL database and a private Redis, makes a
workspace, a project and a task, and starts the bare server on the same database. Then, for
``--runs`` rounds, each server in turn (alternating which goes first) is warmed up with 20
requests and sent ``--requests`` PATCHes of that one task (a new title each) at ``--rate`` per
second, each at its due time without waiting for the previous answer; the server's CPU per
request (utime + stime from /proc) and the response time percentiles are printed per run, with
liveboard's CPU as a ratio to the bare server's of the same round
(issue 20: at most 1.5 times).
``--profile FILE`` also records liveboard in the first round with py-spy (raw collapsed
stacks). ``--keys`` sends each liveboard PATCH with a fresh ``Idempotency-Key`` (what the SDKs
do), so the difference from a run without it is the key's cost. Run:
``.venv/bin/python -m bench.rest_cost`` (PostgreSQL at 127.0.0.1:5432, or ``BENCH_POSTGRES_URL``;
``redis-server`` on PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import numpy as np

from bench.infra import (
    PYTHON,
    Postgres,
    Process,
    RedisServer,
    cpu_split,
    free_port,
    wait_http,
)
from bench.targets import LiveboardTarget, Room

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


async def patch(
    http: aiohttp.ClientSession, target: LiveboardTarget, room: Room, title: str, *, key: bool
) -> bool:
    """One PATCH of the room's task (``target.mutate``), with a fresh key when ``key``."""
    if not key:
        return await target.mutate(http, room, title)
    headers = {"Authorization": f"Bearer {target.owner_token}", "Idempotency-Key": uuid.uuid4().hex}
    url = f"{target.http()}/api/tasks/{room.task_id}"
    async with http.patch(url, json={"title": title}, headers=headers) as r:
        await r.read()
        return r.status == 200


async def bare_patch(http: aiohttp.ClientSession, url: str, title: str) -> bool:
    """One PATCH of the bare server (``bench.bare_patch``) at ``url``."""
    async with http.patch(url, json={"title": title}) as r:
        await r.read()
        return r.status == 200


Send = Callable[[str], Awaitable[bool]]


def _syscalls(pid: int) -> tuple[int, int]:
    """The read and write system calls process ``pid`` has made so far (``/proc/<pid>/io``)."""
    counts = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            name, _, value = line.partition(":")
            counts[name] = int(value)
    return counts["syscr"], counts["syscw"]


async def load(
    send: Send, pid: int, requests: int, rate: float, profile: Path | None
) -> dict[str, float]:
    """Warm up, then ``requests`` sends at ``rate``/s: CPU of process ``pid`` per request
    and the answers' p50/p99 (ms)."""
    for n in range(20):  # connections, caches, prepared statements
        assert await send(f"warm-up {n}")
    spy = None
    if profile is not None:
        seconds = str(int(requests / rate) + 1)
        spy = await asyncio.create_subprocess_exec(
            *(str(Path(sys.executable).parent / "py-spy"), "record", "-f", "raw"),
            *("-p", str(pid), "-r", "200", "-d", seconds, "-o", str(profile)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(1.0)
    answered_ms: list[float] = []

    async def one(number: int) -> None:
        started = time.perf_counter()
        if not await send(f"request {number}"):
            raise RuntimeError(f"PATCH {number} failed")
        answered_ms.append((time.perf_counter() - started) * 1000.0)

    user_before, system_before = cpu_split(pid)
    calls_before = _syscalls(pid)
    begun = time.perf_counter()
    sent = []
    for number in range(requests):
        delay = begun + number / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent.append(asyncio.create_task(one(number)))
    await asyncio.gather(*sent)
    user_after, system_after = cpu_split(pid)
    user_ms = (user_after - user_before) * 1000.0 / requests
    system_ms = (system_after - system_before) * 1000.0 / requests
    calls = [(a - b) / requests for a, b in zip(_syscalls(pid), calls_before, strict=True)]
    if spy is not None:
        await spy.wait()
    latencies = np.array(answered_ms)
    return {
        "cpu_ms_per_request": user_ms + system_ms,
        "user_ms_per_request": user_ms,
        "system_ms_per_request": system_ms,
        "reads_per_request": calls[0],
        "writes_per_request": calls[1],
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
    }


async def measure(
    requests: int, rate: float, profile: Path | None, *, keys: bool = False, runs: int = 3
) -> list[dict[str, dict[str, float]]]:
    """``runs`` rounds, each measuring liveboard and the bare server (see the module)."""
    with tempfile.TemporaryDirectory(prefix="liveboard-rest-cost-") as tmp:
        workdir = Path(tmp)
        redis = RedisServer(workdir)
        await redis.ready()
        postgres = Postgres(POSTGRES_URL)
        target = LiveboardTarget(workdir, redis, postgres)
        bare: Process | None = None
        try:
            await target.create_database(f"rest_cost_{time.strftime('%H%M%S')}")
            await target.start(1)
            await target.setup(1, 10)
            room = target.rooms[0]
            server = target.instances[0]
            assert target.database_url is not None
            port = free_port()
            argv = [PYTHON, "-m", "bench.bare_patch", "--port", str(port)]
            argv += ["--dsn", target.database_url]
            bare = Process(f"bare:{port}", argv, workdir / "bare.log")
            await wait_http(f"http://127.0.0.1:{port}/healthz", 30, bare)
            bare_url = f"http://127.0.0.1:{port}/api/tasks/{room.task_id}"
            results: list[dict[str, dict[str, float]]] = []
            async with aiohttp.ClientSession() as http:

                async def to_liveboard(title: str) -> bool:
                    return await patch(http, target, room, title, key=keys)

                async def to_bare(title: str) -> bool:
                    return await bare_patch(http, bare_url, title)

                for run in range(runs):
                    spied = profile if run == 0 else None
                    order = [("liveboard", to_liveboard, server.pid, spied)]
                    order.append(("bare", to_bare, bare.pid, None))
                    if run % 2:
                        order.reverse()
                    result = {}
                    for name, send, pid, spy in order:
                        result[name] = await load(send, pid, requests, rate, spy)
                    results.append(result)
            return results
        finally:
            if bare is not None:
                bare.stop()
            await target.stop()
            redis.stop()
            await postgres.drop_all()


def _range(values: list[float], unit: str = "") -> str:
    return f"{min(values):.2f}-{max(values):.2f}{unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--runs", type=int, default=3, help="rounds, each server once")
    parser.add_argument("--profile", type=Path, help="py-spy liveboard into this file")
    parser.add_argument("--keys", action="store_true", help="an Idempotency-Key on each PATCH")
    args = parser.parse_args()
    import uvloop

    results = uvloop.run(
        measure(args.requests, args.rate, args.profile, keys=args.keys, runs=args.runs)
    )
    keyed = " with Idempotency-Key" if args.keys else ""
    print(f"{args.requests} PATCH /api/tasks/{{id}}{keyed} at {args.rate:g}/s per server and run")
    ratios = []
    for run, result in enumerate(results, 1):
        lb, bare = result["liveboard"], result["bare"]
        ratio = lb["cpu_ms_per_request"] / bare["cpu_ms_per_request"]
        ratios.append(ratio)
        print(
            f"run {run}: liveboard {lb['cpu_ms_per_request']:.2f} ms CPU each "
            f"(p50 {lb['p50_ms']:.1f} ms, p99 {lb['p99_ms']:.1f} ms); bare asyncpg "
            f"{bare['cpu_ms_per_request']:.2f} ms (p50 {bare['p50_ms']:.1f} ms, "
            f"p99 {bare['p99_ms']:.1f} ms); ratio {ratio:.2f}x"
        )
        print(
            "       user + system ms, read + write calls per PATCH: liveboard "
            f"{lb['user_ms_per_request']:.2f} + {lb['system_ms_per_request']:.2f}, "
            f"{lb['reads_per_request']:.1f} + {lb['writes_per_request']:.1f}; bare "
            f"{bare['user_ms_per_request']:.2f} + {bare['system_ms_per_request']:.2f}, "
            f"{bare['reads_per_request']:.1f} + {bare['writes_per_request']:.1f}"
        )
    lbs = [r["liveboard"]["cpu_ms_per_request"] for r in results]
    bares = [r["bare"]["cpu_ms_per_request"] for r in results]
    print(
        f"over {len(results)} runs: liveboard {_range(lbs, ' ms')}, bare {_range(bares, ' ms')}, "
        f"liveboard / bare {_range(ratios, 'x')} (target <= 1.5x)"
    )


if __name__ == "__main__":
    main()
