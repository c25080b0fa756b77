"""What a hung Redis costs a mutation: PATCH response times with Redis running, then with Redis
stopped by SIGSTOP (it accepts nothing and answers nothing: the worst outage for a writer).

    python -m bench.hung_broker [--requests 20] [--runs 3]

One ``liveboard serve`` on a fresh PostgreSQL database and a private Redis, a workspace, a
project and a task; per run: 20 warm-up PATCHes, ``--requests`` PATCHes one after the other with
Redis up, then Redis SIGSTOPped and ``--requests`` more, then SIGCONT. Prints the median and the
maximum of each and the ratio hung / up (the baseline is the same server in the same run).
Before writes stopped waiting for the PUBLISH, each PATCH of the hung phase took the publish
timeout (1 s). PostgreSQL at 127.0.0.1:5432 (or ``BENCH_POSTGRES_URL``); ``redis-server`` on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.infra import Postgres, RedisServer
from bench.targets import LiveboardTarget, Room

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


async def _timed_patches(
    http: aiohttp.ClientSession, target: LiveboardTarget, room: Room, count: int, tag: str
) -> list[float]:
    taken: list[float] = []
    for number in range(count):
        started = time.perf_counter()
        if not await target.mutate(http, room, f"{tag} {number}"):
            raise RuntimeError(f"PATCH {tag} {number} failed")
        taken.append((time.perf_counter() - started) * 1000.0)
    return taken


async def measure(requests: int, runs: int) -> list[tuple[list[float], list[float]]]:
    with tempfile.TemporaryDirectory(prefix="liveboard-hung-broker-") as tmp:
        workdir = Path(tmp)
        redis = RedisServer(workdir)
        await redis.ready()
        postgres = Postgres(POSTGRES_URL)
        target = LiveboardTarget(workdir, redis, postgres)
        results: list[tuple[list[float], list[float]]] = []
        try:
            await target.create_database(f"hung_broker_{time.strftime('%H%M%S')}")
            await target.start(1)
            await target.setup(1, 10)
            room = target.rooms[0]
            async with aiohttp.ClientSession() as http:
                for run in range(runs):
                    await _timed_patches(http, target, room, 20, f"warm-up {run}")
                    up = await _timed_patches(http, target, room, requests, f"up {run}")
                    redis.process.proc.send_signal(signal.SIGSTOP)
                    try:
                        hung = await _timed_patches(http, target, room, requests, f"hung {run}")
                    finally:
                        redis.process.proc.send_signal(signal.SIGCONT)
                    results.append((up, hung))
                    await asyncio.sleep(3.0)  # the broker's reconnect after the outage
        finally:
            await target.stop()
            redis.stop()
            await postgres.drop_all()
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for run, (up, hung) in enumerate(asyncio.run(measure(args.requests, args.runs)), 1):
        up_median, hung_median = statistics.median(up), statistics.median(hung)
        print(
            f"run {run}: Redis up median {up_median:.1f} ms (max {max(up):.1f}); "
            f"Redis hung median {hung_median:.1f} ms (max {max(hung):.1f}); "
            f"hung / up {hung_median / up_median:.2f}x"
        )


if __name__ == "__main__":
    main()
