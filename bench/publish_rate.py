"""Publishing over HTTP (``POST /api/rooms/{room}/events``, CONTRACT §6.3) on one instance:
does it sustain a rate, and at what response time, against a task ``PATCH`` in the same run.

Starts one ``liveboard serve`` on a fresh PostgreSQL database and a private Redis with an API
key, makes a workspace and ``--rooms`` projects (10) with a task each, warms up, then for each
of ``--rounds`` rounds sends, open-loop (each request at its due time, without waiting for the
previous answer), ``--seconds`` of ``POST /api/rooms/project:{id}/events`` at ``--rate`` per
second (the rooms in turn: a room's writers are serialised by its row lock until they commit,
so one room's rate is bounded by the database's commit time), then the same of
``PATCH /api/tasks/{id}`` (a baseline: liveboard's own write path into the same rooms, spread
over enough users to stay under the per-user rate limit), then of ``GET /healthz`` (the other
baseline: the HTTP floor, no database). For each it prints the rate achieved (answers per
second over the time from the first request to the last answer), the response time p50/p99
and the server's CPU per request.
Every answer must be a success (a failure aborts the run). ``--keys`` sends each request with a
fresh ``Idempotency-Key``.

Run: ``.venv/bin/python -m bench.publish_rate`` (PostgreSQL at 127.0.0.1:5432, or
``BENCH_POSTGRES_URL``; ``redis-server`` on PATH). The load generator runs on the same machine:
its CPU is taken from the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import numpy as np

from bench.infra import Postgres, RedisServer
from bench.targets import SECRET, LiveboardTarget, Room

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
API_KEY = "bench-" + secrets.token_urlsafe(24)

Request = Callable[[aiohttp.ClientSession, int], Awaitable[bool]]


def publisher(target: LiveboardTarget, rooms: list[Room], *, keys: bool) -> Request:
    """Publishes into the rooms in turn."""

    async def publish(http: aiohttp.ClientSession, number: int) -> bool:
        room = rooms[number % len(rooms)]
        url = f"{target.http()}/api/rooms/{room.name}/events"
        headers = {"Authorization": f"apikey {API_KEY}"}
        if keys:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        body = {"type": "comment:added", "data": {"taskId": room.task_id, "n": number}}
        async with http.post(url, json=body, headers=headers) as r:
            await r.read()
            return _ok(r, 201)

    return publish


def patcher(target: LiveboardTarget, rooms: list[Room], *, keys: bool, users: int) -> Request:
    """PATCHes of the rooms' tasks in turn, spread over ``users`` members: the per-user REST
    rate limit (50/s, burst 200) applies to users and not to API keys, and is not what is
    measured."""
    from liveboard.auth import issue_token

    tokens = [issue_token(SECRET, f"u{i}", ttl=7200) for i in range(users)]

    async def patch(http: aiohttp.ClientSession, number: int) -> bool:
        url = f"{target.http()}/api/tasks/{rooms[number % len(rooms)].task_id}"
        headers = {"Authorization": f"Bearer {tokens[number % users]}"}
        if keys:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        async with http.patch(url, json={"title": f"title {number}"}, headers=headers) as r:
            await r.read()
            return _ok(r, 200)

    return patch


def floor(target: LiveboardTarget) -> Request:
    """``GET /healthz``: the HTTP floor (the server's and the load generator's own cost)."""
    url = f"{target.http()}/healthz"

    async def get(http: aiohttp.ClientSession, number: int) -> bool:
        async with http.get(url) as r:
            await r.read()
            return _ok(r, 200)

    return get


def _ok(response: aiohttp.ClientResponse, expected: int) -> bool:
    if response.status != expected:
        print(f"  {response.method} {response.url.path}: {response.status}", flush=True)
    return response.status == expected


async def run_load(
    http: aiohttp.ClientSession, target: LiveboardTarget, send: Request, rate: float, seconds: float
) -> dict[str, float]:
    """``rate`` requests per second for ``seconds``, open-loop; the figures of the round."""
    server = target.instances[0]
    count = int(rate * seconds)
    answered_ms: list[float] = []

    async def one(number: int) -> None:
        started = time.perf_counter()
        if not await send(http, number):
            raise RuntimeError(f"request {number} failed")
        answered_ms.append((time.perf_counter() - started) * 1000.0)

    cpu_before = server.cpu()
    begun = time.perf_counter()
    sent = []
    for number in range(count):
        delay = begun + number / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent.append(asyncio.create_task(one(number)))
    await asyncio.gather(*sent)
    elapsed = time.perf_counter() - begun
    latencies = np.array(answered_ms)
    return {
        "achieved_per_s": count / elapsed,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "cpu_ms": (server.cpu() - cpu_before) * 1000.0 / count,
    }


async def measure(rate: float, seconds: float, rounds: int, *, keys: bool, room_count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="liveboard-publish-rate-") as tmp:
        workdir = Path(tmp)
        redis = RedisServer(workdir)
        await redis.ready()
        postgres = Postgres(POSTGRES_URL)
        target = LiveboardTarget(workdir, redis, postgres)
        target.extra_env["LIVEBOARD_API_KEYS"] = API_KEY
        try:
            await target.create_database(f"publish_rate_{time.strftime('%H%M%S')}")
            await target.start(1)
            users = max(10, int(rate / 25) + 1)  # each under 25/s
            await target.setup(room_count, users)
            rooms = target.rooms[:room_count]
            requests = {
                "publish": publisher(target, rooms, keys=keys),
                "PATCH": patcher(target, rooms, keys=keys, users=users),
                "healthz": floor(target),
            }
            connector = aiohttp.TCPConnector(limit=200)
            async with aiohttp.ClientSession(connector=connector) as http:
                for send in requests.values():  # connections, caches, prepared statements
                    for n in range(50):
                        assert await send(http, n)
                for round_number in range(1, rounds + 1):
                    for name, send in requests.items():
                        result = await run_load(http, target, send, rate, seconds)
                        print(
                            f"round {round_number} {name:8} offered {rate:g}/s for {seconds:g}s: "
                            f"achieved {result['achieved_per_s']:.0f}/s, "
                            f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                            f"server CPU {result['cpu_ms']:.2f} ms/request",
                            flush=True,
                        )
        except Exception:
            for instance in target.instances:  # what the server said, before it is deleted
                print(instance.log_path.read_text()[-3000:], flush=True)
            raise
        finally:
            await target.stop()
            redis.stop()
            await postgres.drop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", action="store_true", help="an Idempotency-Key on each request")
    parser.add_argument("--rooms", type=int, default=10, help="project rooms, used in turn")
    args = parser.parse_args()
    import uvloop

    uvloop.run(measure(args.rate, args.seconds, args.rounds, keys=args.keys, room_count=args.rooms))


if __name__ == "__main__":
    main()
