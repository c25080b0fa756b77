"""What one ``PATCH /api/tasks/{id}`` costs a liveboard instance on PostgreSQL (scenario C's
write path), measured alone on an otherwise idle server.

Starts one ``liveboard serve`` on a fresh PostgreSQL database and a private Redis, makes a
workspace, a project and a task, warms up with 20 requests, then sends ``--requests`` PATCHes
(a new title each) at ``--rate`` per second, each at its due time without waiting for the
previous answer, and prints the server's CPU per request (utime + stime from /proc) and the
response time percentiles. ``--profile FILE`` also records the server with py-spy (raw
collapsed stacks). ``--keys`` sends each PATCH with a fresh ``Idempotency-Key`` (what the SDKs
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
from pathlib import Path

import aiohttp
import numpy as np

from bench.infra import Postgres, RedisServer
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


async def measure(
    requests: int, rate: float, profile: Path | None, *, keys: bool = False
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="liveboard-rest-cost-") as tmp:
        workdir = Path(tmp)
        redis = RedisServer(workdir)
        await redis.ready()
        postgres = Postgres(POSTGRES_URL)
        target = LiveboardTarget(workdir, redis, postgres)
        try:
            await target.create_database(f"rest_cost_{time.strftime('%H%M%S')}")
            await target.start(1)
            await target.setup(1, 10)
            room = target.rooms[0]
            server = target.instances[0]
            async with aiohttp.ClientSession() as http:
                for n in range(20):  # connections, caches, prepared statements
                    assert await patch(http, target, room, f"warm-up {n}", key=keys)
                spy = None
                if profile is not None:
                    seconds = str(int(requests / rate) + 1)
                    spy = await asyncio.create_subprocess_exec(
                        *(str(Path(sys.executable).parent / "py-spy"), "record", "-f", "raw"),
                        *("-p", str(server.pid), "-r", "200", "-d", seconds, "-o", str(profile)),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    await asyncio.sleep(1.0)
                answered_ms: list[float] = []

                async def one(number: int) -> None:
                    started = time.perf_counter()
                    ok = await patch(http, target, room, f"request {number}", key=keys)
                    if not ok:
                        raise RuntimeError(f"PATCH {number} failed")
                    answered_ms.append((time.perf_counter() - started) * 1000.0)

                cpu_before = server.cpu()
                begun = time.perf_counter()
                sent = []
                for number in range(requests):
                    delay = begun + number / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    sent.append(asyncio.create_task(one(number)))
                await asyncio.gather(*sent)
                cpu_ms = (server.cpu() - cpu_before) * 1000.0 / requests
                if spy is not None:
                    await spy.wait()
            latencies = np.array(answered_ms)
            return {
                "cpu_ms_per_request": cpu_ms,
                "p50_ms": float(np.percentile(latencies, 50)),
                "p99_ms": float(np.percentile(latencies, 99)),
            }
        finally:
            await target.stop()
            redis.stop()
            await postgres.drop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--profile", type=Path, help="py-spy the server into this file")
    parser.add_argument("--keys", action="store_true", help="an Idempotency-Key on each PATCH")
    args = parser.parse_args()
    import uvloop

    result = uvloop.run(measure(args.requests, args.rate, args.profile, keys=args.keys))
    keyed = " with Idempotency-Key" if args.keys else ""
    print(
        f"{args.requests} PATCH /api/tasks/{{id}}{keyed} at {args.rate:g}/s: "
        f"{result['cpu_ms_per_request']:.2f} ms of server CPU each, "
        f"response p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
