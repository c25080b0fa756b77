"""What presence costs in Redis at rest, before and after a change to ``presence_redis``.

Runs several ``RedisPresence`` managers (instances) in this process against a private
``redis-server``, holds ``--users`` present users (one connection each) spread over ``--rooms``
rooms and the instances, and once every view is complete counts, over ``--seconds``, the commands
Redis executed (``INFO commandstats`` after ``CONFIG RESETSTAT``), the bytes it sent, and the CPU
time of this process (all the managers). Each variant gets a fresh Redis, and the variants run
one after the other in the same run, so their figures compare as ratios:

* ``baseline``: ``presence_redis.py`` as it is at ``--baseline`` (a git revision, default
  ``main``), loaded from ``git show``;
* ``current``: the module in the working tree;
* ``rewrite``: the current module made to write every entry it holds again at each heartbeat,
  the other way to heal presence (for comparison; not shipped).

Then, for ``current``, the cost of one repair: every entry of one instance is removed from Redis
behind its back (as another instance does when it takes it for dead), and the run counts the
commands and the time until Redis holds them all again.

Signals between the managers go directly from one to the other (no PUBLISH): at rest there are
none, and they are the same in every variant. Run::

    .venv/bin/python -m bench.presence_cost            # 10,000 users, 100 rooms, 2 instances
    .venv/bin/python -m bench.presence_cost --rooms 1000 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from redis.asyncio import Redis

from bench.infra import ROOT, RedisServer
from liveboard.realtime import presence_redis
from liveboard.realtime.presence import PresenceDiff


class _Quiet:
    def presence_changed(self, diff: PresenceDiff) -> None:
        pass


def load_baseline(revision: str) -> ModuleType:
    """``presence_redis`` as it is at ``revision``, as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{revision}:src/liveboard/realtime/presence_redis.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    name = "liveboard.realtime._presence_redis_baseline"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    exec(compile(source, f"{revision}:presence_redis.py", "exec"), module.__dict__)
    return module


def rewrite_variant() -> type[Any]:
    """The current manager, writing every entry it holds again at each heartbeat."""

    class Rewriting(presence_redis.RedisPresence):
        async def _heartbeat(self) -> None:
            self._unsynced |= set(self._local)
            await super()._heartbeat()

    return Rewriting


def spread(users: int, rooms: int, instances: int) -> list[list[tuple[str, str, str]]]:
    """Per instance: (room, connection, user) of each present user."""
    placed: list[list[tuple[str, str, str]]] = [[] for _ in range(instances)]
    for i in range(users):
        room = f"project:p{(i // instances) % rooms}"  # every room has users of every instance
        placed[i % instances].append((room, f"c{i}", f"user-{i:05}"))
    return placed


async def measure(
    manager: type[Any], args: argparse.Namespace, workdir: Path, *, repair: bool
) -> dict[str, float]:
    redis_server = RedisServer(workdir)
    await redis_server.ready()
    redis = Redis.from_url(redis_server.url)
    managers: list[Any] = []
    try:
        placed = spread(args.users, args.rooms, args.instances)

        def signal_from(index: int) -> Any:
            async def signal(rooms: Sequence[str]) -> None:
                for other, peer in enumerate(managers):
                    if other != index:
                        for room in rooms:
                            peer.on_signal(room)

            return signal

        for index, entries in enumerate(placed):
            rooms = sorted({room for room, _, _ in entries})
            managers.append(
                manager(
                    redis_server.url,
                    _Quiet(),
                    instance_id=f"i{index}",
                    active_rooms=lambda rooms=rooms: rooms,
                    signal=signal_from(index),
                )
            )
        for instance in managers:
            await instance.start()
        # Every instance in the live set before any join: an entry written before its
        # instance's first heartbeat is removed by the others as a dead instance's (the
        # baseline never writes it back, and its view stays one user short).
        while await redis.zcard(presence_redis.INSTANCES_KEY) < len(managers):  # noqa: ASYNC110 (Redis state: no event to wait on)
            await asyncio.sleep(0.01)
        for instance, entries in zip(managers, placed, strict=True):
            for n, (room, connection, user) in enumerate(entries):
                await instance.join(room, connection, user, user)
                if n % 500 == 499:
                    await asyncio.sleep(0.05)  # let the batched writes go out
        deadline = time.monotonic() + 60
        while any(m.user_count() != args.users for m in managers):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"views incomplete: {[m.user_count() for m in managers]}; "
                    f"{await describe_missing(redis, managers, placed)}"
                )
            await asyncio.sleep(0.1)
        await asyncio.sleep(2 * presence_redis.REFRESH_INTERVAL)  # the join burst is over

        await redis.config_resetstat()
        cpu, began = time.process_time(), time.monotonic()
        await asyncio.sleep(args.seconds)
        elapsed = time.monotonic() - began
        cpu = time.process_time() - cpu
        stats = await redis.info("commandstats")
        sent = (await redis.info("stats"))["total_net_output_bytes"]
        calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
        calls.pop("info", None)
        calls.pop("config|resetstat", None)
        result: dict[str, float] = {
            "commands/s": sum(calls.values()) / elapsed,
            # One SET (the marker) per heartbeat and instance: the cost of one period, which
            # does not depend on how many periods the window happened to hold.
            "commands/heartbeat": sum(calls.values()) / max(1, calls.get("set", 0)),
            "kB sent/s": sent / elapsed / 1000,
            "process CPU %": 100 * cpu / elapsed,
        }
        for name, count in sorted(calls.items()):
            result[f"  {name}/s"] = count / elapsed
        if repair:
            result.update(await measure_repair(redis, managers[0], placed[0]))
        return result
    finally:
        for instance in managers:
            await instance.aclose()
        await redis.aclose()
        redis_server.stop()


async def describe_missing(
    redis: Redis, managers: list[Any], placed: list[list[tuple[str, str, str]]]
) -> str:
    """Which users a view lacks, and whether Redis holds their entries."""
    lines = []
    for viewer, manager in enumerate(managers):
        for owner, entries in enumerate(placed):
            for room, connection, user in entries:
                if user not in dict(manager.users(room)):
                    field = f"i{owner}:{connection}"
                    stored = await redis.hget(presence_redis.KEY_PREFIX + room, field)
                    lines.append(f"i{viewer} lacks {user} of i{owner} in {room}; Redis: {stored!r}")
    return "; ".join(lines[:10])


async def measure_repair(
    redis: Redis, instance: Any, entries: list[tuple[str, str, str]]
) -> dict[str, float]:
    """Remove all of ``instance``'s entries behind its back; count what putting them back takes."""
    fields: dict[str, list[str]] = {}
    for room, connection, _ in entries:
        fields.setdefault(room, []).append(f"{instance._instance}:{connection}")
    await redis.config_resetstat()
    began = time.monotonic()
    async with redis.pipeline(transaction=False) as pipe:
        for room, names in fields.items():
            pipe.hdel(presence_redis.KEY_PREFIX + room, *names)
        await pipe.execute()
    while True:
        async with redis.pipeline(transaction=False) as pipe:
            for room, names in fields.items():
                pipe.hmget(presence_redis.KEY_PREFIX + room, names)
            found = await pipe.execute()
        if all(all(v is not None for v in values) for values in found):
            break
        if time.monotonic() - began > 30:
            raise RuntimeError("the entries were not written back within 30 s")
        await asyncio.sleep(0.01)
    took = time.monotonic() - began
    stats = await redis.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    ours = {"hdel": len(fields)}  # the removal; the HMGETs, INFO and RESETSTAT are the bench's
    mine = ("hmget", "info", "config|resetstat")
    spent = {k: v - ours.get(k, 0) for k, v in calls.items() if k not in mine}
    spent = {k: v for k, v in spent.items() if v > 0}
    result: dict[str, float] = {
        "repair: entries removed": len(entries),
        "repair: seconds until all back": took,
        "repair: commands meanwhile": sum(spent.values()),
    }
    for name, count in sorted(spent.items()):
        result[f"repair:   {name}"] = count
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--baseline", default="main", help="git revision before the change")
    parser.add_argument("--rounds", type=int, default=2, help="each variant this many times")
    args = parser.parse_args()

    variants = {
        "baseline": (load_baseline(args.baseline).RedisPresence, False),
        "current": (presence_redis.RedisPresence, True),
        "rewrite": (rewrite_variant(), False),
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            # Every other round in the opposite order, so that a drift of the machine's load
            # over the run weighs on every variant alike.
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in order:
                manager, repair = variants[name]
                workdir = Path(tmp) / f"{name}-{round_}"
                workdir.mkdir()
                result = await measure(manager, args, workdir, repair=repair)
                runs[name].append(result)
                print(
                    f"round {round_ + 1} {name}: {result['commands/s']:.1f} commands/s, "
                    f"CPU {result['process CPU %']:.2f}%",
                    flush=True,
                )
    results = {
        name: {key: sum(r[key] for r in rs) / len(rs) for key in rs[0]} for name, rs in runs.items()
    }
    print(
        f"\n{args.users:,} present users, {args.rooms:,} rooms, {args.instances} instances, "
        f"{args.seconds:g} s at rest per variant, mean of {args.rounds} rounds "
        f"(baseline: {args.baseline})\n"
    )
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    print(f"{'':34}" + "".join(f"{n:>12}" for n in results) + "   current/baseline")
    for key in keys:
        row = [results[n].get(key) for n in results]
        cells = "".join(f"{'':>12}" if v is None else f"{v:>12.2f}" for v in row)
        base, cur = results["baseline"].get(key), results["current"].get(key)
        ratio = f"{cur / base:>10.2f}" if base and cur is not None else ""
        print(f"{key:34}{cells}   {ratio}")


if __name__ == "__main__":
    asyncio.run(main())
