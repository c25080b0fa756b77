"""Publishing over HTTP (``POST /api/rooms/{room}/events``, CONTRACT §6.3) on one server
process: the rate it sustains, its response times and its CPU per publish, against a baseline
build of liveboard (``--baseline``, default ``main``) and the HTTP floor in the same run.

Starts two ``liveboard serve`` processes (one worker each), each on a fresh PostgreSQL database
with a private Redis and an API key: this checkout's ``src/`` ("branch") and the ``src/`` of
``--baseline`` extracted with ``git archive`` ("base"); each gets a workspace and ``--rooms``
project rooms (10) with a task each. Then, for each of ``--rounds`` rounds and each rate of
``--rates``, it sends ``--seconds`` of publishes into the rooms in turn, open loop, to one
server and then the other (the order alternates by round), and ``GET /healthz`` to the branch
at the highest rate (the HTTP floor: no database). ``--patch`` adds ``PATCH /api/tasks/{id}``
to the branch (liveboard's own write path into the same rooms).

The load generator is ``bench.http_load`` (raw asyncio protocol on uvloop, keep-alive
connections, requests built before the timed window, response times from each request's due
time); it runs in this process and its CPU per request is printed beside the server's. Every
figure line also carries the 1-minute load average: the machine has 2 cores, shared with
PostgreSQL, Redis and the generator (and, on a shared machine, other jobs).

Run: ``.venv/bin/python -m bench.publish_rate`` (PostgreSQL at 127.0.0.1:5432, or
``BENCH_POSTGRES_URL``; ``redis-server`` on PATH). ``wrk`` is not needed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import msgspec
import numpy as np

from bench.http_load import LoadResult, OpenLoop, http_request
from bench.infra import Postgres, RedisServer
from bench.storm import extract_baseline
from bench.targets import SECRET, LiveboardSourceTarget, LiveboardTarget, Room

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
API_KEY = "bench-" + secrets.token_urlsafe(24)
_encode = msgspec.json.Encoder().encode


def host_of(target: LiveboardTarget) -> str:
    return f"127.0.0.1:{target.ports[0]}"


def publishes(target: LiveboardTarget, rooms: list[Room], count: int, *, keys: bool) -> list[bytes]:
    """``count`` publishes into ``rooms`` in turn, as bytes (a fresh key each with ``keys``)."""
    out = []
    for number in range(count):
        room = rooms[number % len(rooms)]
        headers = {"Authorization": f"apikey {API_KEY}", "Content-Type": "application/json"}
        if keys:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        body = _encode({"type": "comment:added", "data": {"taskId": room.task_id, "n": number}})
        path = f"/api/rooms/{room.name}/events"
        out.append(http_request("POST", path, host_of(target), headers, body))
    return out


def patches(target: LiveboardTarget, rooms: list[Room], count: int, users: int) -> list[bytes]:
    """``count`` PATCHes of the rooms' tasks, spread over ``users`` members (each under the
    per-user REST rate limit, which is not what is measured)."""
    from liveboard.auth import issue_token

    tokens = [issue_token(SECRET, f"u{i}", ttl=7200) for i in range(users)]
    out = []
    for number in range(count):
        headers = {
            "Authorization": f"Bearer {tokens[number % users]}",
            "Content-Type": "application/json",
        }
        path = f"/api/tasks/{rooms[number % len(rooms)].task_id}"
        body = _encode({"title": f"title {number}"})
        out.append(http_request("PATCH", path, host_of(target), headers, body))
    return out


def healthz(target: LiveboardTarget, count: int) -> list[bytes]:
    return [http_request("GET", "/healthz", host_of(target), {})] * count


class Figures(msgspec.Struct):
    achieved: float
    p50: float
    p99: float
    server_cpu: float
    client_cpu: float
    failures: int
    load: float


async def run_one(
    target: LiveboardTarget, load: OpenLoop, requests: list[bytes], rate: float, expected: int
) -> Figures:
    server = target.instances[0]
    load_avg = os.getloadavg()[0]
    cpu_before = server.cpu()
    result: LoadResult = await load.run(requests, rate, expected=expected)
    latencies = np.array(result.latencies_ms)
    return Figures(
        achieved=result.achieved_per_s,
        p50=float(np.percentile(latencies, 50)),
        p99=float(np.percentile(latencies, 99)),
        server_cpu=(server.cpu() - cpu_before) * 1000.0 / result.sent,
        client_cpu=result.client_cpu_ms,
        failures=result.failures,
        load=load_avg,
    )


def line(label: str, rate: float, f: Figures) -> str:
    return (
        f"{label:16} offered {rate:5.0f}/s: achieved {f.achieved:5.0f}/s, "
        f"p50 {f.p50:7.1f} ms, p99 {f.p99:8.1f} ms, server CPU {f.server_cpu:.3f} ms/req, "
        f"load generator CPU {f.client_cpu:.3f} ms/req, failures {f.failures}, "
        f"load {f.load:.1f}"
    )


def span(values: list[float], fmt: str) -> str:
    low, high = min(values), max(values)
    return format(low, fmt) if f"{low:{fmt}}" == f"{high:{fmt}}" else f"{low:{fmt}}-{high:{fmt}}"


async def measure(args: argparse.Namespace) -> None:
    rates: list[float] = args.rates
    with tempfile.TemporaryDirectory(prefix="liveboard-publish-rate-") as tmp:
        workdir = Path(tmp)
        baseline_dir = workdir / "baseline"
        baseline_dir.mkdir()
        extract_baseline(args.baseline, baseline_dir)
        redis = RedisServer(workdir)
        await redis.ready()
        postgres = Postgres(POSTGRES_URL)
        (workdir / "branch").mkdir()
        (workdir / "base").mkdir()
        branch = LiveboardTarget(workdir / "branch", redis, postgres)
        base = LiveboardSourceTarget(workdir / "base", redis, postgres, baseline_dir / "src")
        targets = {"base": base, "branch": branch}
        loads: dict[str, OpenLoop] = {}
        users = max(10, int(max(rates) / 25) + 1)
        try:
            for name, target in targets.items():
                target.extra_env["LIVEBOARD_API_KEYS"] = API_KEY
                target.ready_timeout = 180.0
                await target.create_database(f"publish_rate_{name}_{time.strftime('%H%M%S')}")
                await target.start(1)
                await target.setup(args.rooms, users)
                loads[name] = OpenLoop("127.0.0.1", target.ports[0], max_connections=512)
                await loads[name].open(64)
                warm = publishes(target, target.rooms[: args.rooms], 300, keys=args.keys)
                await loads[name].run(warm, 300, expected=201)  # caches, prepared statements
            results: dict[tuple[str, float], list[Figures]] = defaultdict(list)
            for round_number in range(1, args.rounds + 1):
                order = ["base", "branch"] if round_number % 2 else ["branch", "base"]
                for rate in rates:
                    count = int(rate * args.seconds)
                    for name in order:
                        target = targets[name]
                        requests = publishes(
                            target, target.rooms[: args.rooms], count, keys=args.keys
                        )
                        figures = await run_one(target, loads[name], requests, rate, 201)
                        results[(f"publish {name}", rate)].append(figures)
                        print(
                            f"round {round_number} " + line(f"publish {name}", rate, figures),
                            flush=True,
                        )
                    if args.patch:
                        requests = patches(branch, branch.rooms[: args.rooms], count, users)
                        figures = await run_one(branch, loads["branch"], requests, rate, 200)
                        results[("PATCH branch", rate)].append(figures)
                        print(
                            f"round {round_number} " + line("PATCH branch", rate, figures),
                            flush=True,
                        )
                top = max(rates)
                figures = await run_one(
                    branch, loads["branch"], healthz(branch, int(top * args.seconds)), top, 200
                )
                results[("healthz branch", top)].append(figures)
                print(f"round {round_number} " + line("healthz branch", top, figures), flush=True)
            print(f"\nover {args.rounds} rounds (min-max); baseline: {args.baseline}")
            print(
                "| kind | offered | achieved | p50 ms | p99 ms | server CPU ms | "
                "generator CPU ms | failures | load |"
            )
            print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
            for (kind, rate), runs in results.items():
                print(
                    f"| {kind} | {rate:g}/s | {span([r.achieved for r in runs], '.0f')}/s "
                    f"| {span([r.p50 for r in runs], '.1f')} "
                    f"| {span([r.p99 for r in runs], '.1f')} "
                    f"| {span([r.server_cpu for r in runs], '.2f')} "
                    f"| {span([r.client_cpu for r in runs], '.3f')} "
                    f"| {sum(r.failures for r in runs)} | {span([r.load for r in runs], '.1f')} |"
                )
            for rate in rates:
                ratios = [
                    b.server_cpu / a.server_cpu
                    for a, b in zip(
                        results[("publish base", rate)],
                        results[("publish branch", rate)],
                        strict=True,
                    )
                ]
                print(f"server CPU per publish, branch / base at {rate:g}/s: {span(ratios, '.2f')}")
        except Exception:
            for target in targets.values():
                for instance in target.instances:  # what the server said, before it is deleted
                    print(instance.log_path.read_text()[-3000:], flush=True)
            raise
        finally:
            for load in loads.values():
                await load.aclose()
            for target in targets.values():
                await target.stop()
            redis.stop()
            await postgres.drop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates",
        type=lambda text: [float(r) for r in text.split(",")],
        default=[500.0, 1000.0],
        help="offered rates, requests per second, comma-separated",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each load")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", action="store_true", help="an Idempotency-Key on each publish")
    parser.add_argument("--rooms", type=int, default=10, help="project rooms, used in turn")
    parser.add_argument("--patch", action="store_true", help="also PATCH on the branch")
    parser.add_argument("--baseline", default="main", help="git ref of the baseline's src/")
    args = parser.parse_args()
    import uvloop

    uvloop.run(measure(args))


if __name__ == "__main__":
    main()
