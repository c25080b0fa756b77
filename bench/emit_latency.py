"""Scenario F: commit → subscriber latency of an event another backend commits with
``liveboard_emit``, against a task ``PATCH`` through liveboard's REST in the same run.

Starts two ``liveboard serve`` instances on a fresh PostgreSQL database and a private Redis, one
project, and one WebSocket subscriber of its room on each instance. Then, ``--rounds`` times at
``--rate`` per second, alternately:

* **emit**: an app's transaction on its own asyncpg connection (``INSERT`` into its own table,
  ``SELECT liveboard_emit(…)``, ``COMMIT``);
* **patch** (the baseline): ``PATCH /api/tasks/{id}`` through one instance or the other.

Measured at each subscriber, for every event: for emit, from the moment ``COMMIT`` returned (the
event exists) to its arrival (``emit``); for both kinds, from the event's ``ts`` (taken in the
writing transaction, just before its commit; wall clock, whole milliseconds) to its arrival
(``*_ts``: the same definition for both), and from the start of the write (``BEGIN``, or the
request) to its arrival (``*_write``). A PATCH's answer is no start line: its event reaches the
instance's own subscribers before the answer is sent. The emit path is LISTEN/NOTIFY → a log
read → fan-out; the PATCH path is the instance's own publish (local fan-out, Redis for the
other instance). Each run prints p50/p99 and the ratios emit / PATCH; ``--runs`` repeats it
for a range. Run: ``.venv/bin/python -m bench.emit_latency`` (PostgreSQL at 127.0.0.1:5432
or ``BENCH_POSTGRES_URL``; ``redis-server`` on PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import numpy as np

from bench.infra import Postgres, RedisServer
from bench.targets import LiveboardTarget, Room

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


class Receiver:
    """One subscriber: the arrival time (``perf_counter``) of each offset of the room, and the
    event's age then (arrival, wall clock, minus the event's ``ts``; whole milliseconds)."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.age: dict[int, float] = {}
        self.changed = asyncio.Event()

    async def run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            event = json.loads(message.data)
            if "ts" in event and "offset" in event:
                offset = int(event["offset"])
                if offset not in self.arrived:
                    self.arrived[offset] = time.perf_counter()
                    self.age[offset] = time.time() - event["ts"] / 1000.0
                self.changed.set()

    async def wait_for(self, offset: int, wait: float = 10.0) -> None:
        deadline = time.perf_counter() + wait
        while offset not in self.arrived:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise RuntimeError(f"offset {offset} never arrived")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000.0, q))


async def one_run(rounds: int, rate: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="liveboard-emit-latency-") as tmp:
        workdir = Path(tmp)
        redis = RedisServer(workdir)
        await redis.ready()
        postgres = Postgres(POSTGRES_URL)
        target = LiveboardTarget(workdir, redis, postgres)
        try:
            await target.create_database(f"emit_latency_{time.strftime('%H%M%S')}")
            await target.start(2)
            await target.setup(1, 0)
            room: Room = target.rooms[0]
            app = await asyncpg.connect(target.database_url)
            await app.execute("CREATE TABLE comments (id bigserial PRIMARY KEY, body text)")
            headers = {"Authorization": f"Bearer {target.owner_token}"}
            async with aiohttp.ClientSession() as http:
                receivers, pumps = [], []
                for index in range(2):
                    ws = await http.ws_connect(f"{target.url(index)}/ws/connect", headers=headers)
                    await ws.send_json({"type": "subscribe", "room": room.name})
                    receiver = Receiver()
                    receivers.append(receiver)
                    pumps.append(asyncio.create_task(receiver.run(ws)))
                await asyncio.sleep(0.5)
                samples: dict[str, list[float]] = {
                    "emit": [],
                    "emit_ts": [],
                    "emit_write": [],
                    "patch_ts": [],
                    "patch_write": [],
                }

                async def emit(number: int) -> None:
                    began = time.perf_counter()
                    async with app.transaction():
                        await app.execute("INSERT INTO comments (body) VALUES ($1)", f"c{number}")
                        offset = await app.fetchval(
                            "SELECT liveboard_emit($1, 'comment:added', $2::jsonb)",
                            room.name,
                            json.dumps({"n": number}),
                        )
                    committed = time.perf_counter()
                    room.head = max(room.head, int(offset))
                    for receiver in receivers:
                        await receiver.wait_for(int(offset))
                        samples["emit"].append(receiver.arrived[int(offset)] - committed)
                        samples["emit_ts"].append(receiver.age[int(offset)])
                        samples["emit_write"].append(receiver.arrived[int(offset)] - began)

                async def patch(number: int) -> None:
                    began = time.perf_counter()
                    async with http.patch(
                        f"{target.http(number % 2)}/api/tasks/{room.task_id}",
                        json={"title": f"t{number}"},
                        headers=headers,
                    ) as response:
                        assert response.status == 200, await response.text()
                        offset = int(response.headers["Liveboard-Offset"])
                    for receiver in receivers:
                        await receiver.wait_for(offset)
                        samples["patch_ts"].append(receiver.age[offset])
                        samples["patch_write"].append(receiver.arrived[offset] - began)

                for number in range(10):  # warm-up: connections, caches, prepared statements
                    await (emit if number % 2 else patch)(-1 - number)
                for values in samples.values():
                    values.clear()
                started = time.perf_counter()
                for number in range(rounds):
                    delay = started + number / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await (emit if number % 2 else patch)(number)
                wakeups = 0.0
                for index in range(2):
                    async with http.get(f"{target.http(index)}/metrics") as response:
                        for line in (await response.text()).splitlines():
                            if line.startswith("liveboard_wakeups_total "):
                                wakeups += float(line.split()[1])
                for pump in pumps:
                    pump.cancel()
            await app.close()
            result: dict[str, Any] = {"wakeups": wakeups}
            for kind, values in samples.items():
                result[kind] = {
                    "count": len(values),
                    "p50_ms": percentile_ms(values, 50),
                    "p99_ms": percentile_ms(values, 99),
                }
            return result
        finally:
            await target.stop()
            redis.stop()
            await postgres.drop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=400, help="writes per run (half each)")
    parser.add_argument("--rate", type=float, default=20.0, help="writes per second")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import uvloop

    runs = []
    for run in range(args.runs):
        result = uvloop.run(one_run(args.rounds, args.rate))
        runs.append(result)
        e = result["emit"]
        print(
            f"run {run + 1} ({e['count']} emit deliveries, 2 subscribers): "
            f"COMMIT returned → subscriber p50 {e['p50_ms']:.1f} p99 {e['p99_ms']:.1f} ms | "
            + " | ".join(
                f"{label}: emit p50 {result['emit_' + kind]['p50_ms']:.1f} "
                f"p99 {result['emit_' + kind]['p99_ms']:.1f}, "
                f"PATCH p50 {result['patch_' + kind]['p50_ms']:.1f} "
                f"p99 {result['patch_' + kind]['p99_ms']:.1f} ms, ratio p50 "
                f"{result['emit_' + kind]['p50_ms'] / result['patch_' + kind]['p50_ms']:.2f} "
                f"p99 {result['emit_' + kind]['p99_ms'] / result['patch_' + kind]['p99_ms']:.2f}"
                for kind, label in (("ts", "ts → subscriber"), ("write", "write → subscriber"))
            )
            + f" | wake-ups {result['wakeups']:.0f}",
            flush=True,
        )
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"emit-latency-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(runs, indent=1))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
