"""CPU of the parts of a ``PATCH`` that issue 20 item 6's last round made cheaper, each alone
and in its old and new form, in one process (``resource.getrusage``: user + system, the round
trips' system calls included). Complements ``bench.rest_cost``, whose per-request figure is
too coarse (10 ms clock ticks, a shared machine) to show a few microseconds each.

* ``driver()``: a checkout of the asyncpg connection through SQLAlchemy's pool and its
  check-in (``DRIVER_SPARES = 0``, as before) against the kept connection, with one
  ``SELECT 1`` each (PostgreSQL at ``BENCH_POSTGRES_URL``, default 127.0.0.1:5432).
* PUBLISH of a 400-byte payload to a private ``redis-server``: redis-py's
  ``execute_command`` with a socket timeout (as before), without one, and
  ``redis_direct.DirectCommands``.
* The request histogram: ``labels(...).observe`` against the cached series.
* The access line (text format, to ``/dev/null``): ``logs.log_access`` as it was (a copy)
  against now, both through today's formatter; ``redact`` of the line against the
  substitution it skips.
* An empty ``async with`` block: ``asynccontextmanager`` against a class.

Run: ``.venv/bin/python -m bench.patch_parts`` (prints µs of CPU per operation).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bench.infra import Postgres, RedisServer
from liveboard import logs
from liveboard.realtime.brokers.redis_direct import DirectCommands
from liveboard.realtime.brokers.redis_pools import connection_pool
from liveboard.realtime.metrics import Metrics
from liveboard.request_metrics import _Series
from liveboard.store import database
from liveboard.store.database import Database

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _per_call(call: Callable[[], Awaitable[object]], n: int) -> float:
    """µs of this process's CPU per ``call``, after ``n // 10`` warm-up calls."""
    for _ in range(n // 10):
        await call()
    started = _cpu()
    for _ in range(n):
        await call()
    return (_cpu() - started) * 1e6 / n


async def _driver(url: str, n: int) -> None:
    for spares in (0, database.DRIVER_SPARES, 0, database.DRIVER_SPARES):
        database.DRIVER_SPARES = spares
        db = Database(url)
        try:

            async def one(db: Database = db) -> None:
                async with db.driver() as conn:
                    await conn.fetchval("SELECT 1")

            cost = await _per_call(one, n)
        finally:
            await db.aclose()
        kind = "through the pool each time" if spares == 0 else "kept connection"
        print(f"driver() + SELECT 1, {kind}: {cost:.1f} us")


async def _publish(url: str, n: int) -> None:
    payload = b"x" * 400
    for _ in range(2):
        for name, timeout in (("execute_command, socket timeout 2 s", 2.0), ("no timeout", None)):
            pool = connection_pool(url, max_connections=16, timeout=1.0, socket_timeout=timeout)
            client: Any = Redis(connection_pool=pool)

            async def via_client(client: Any = client) -> None:
                async with asyncio.timeout(1.0):
                    await client.execute_command("PUBLISH", b"ch", payload)

            print(f"PUBLISH, {name}: {await _per_call(via_client, n):.1f} us")
            if timeout is None:
                direct = DirectCommands(client, pool)

                async def via_direct(direct: DirectCommands = direct) -> None:
                    async with asyncio.timeout(1.0):
                        await direct.execute("PUBLISH", b"ch", payload)

                print(f"PUBLISH, DirectCommands: {await _per_call(via_direct, n):.1f} us")
                await direct.aclose()
            await client.aclose(close_connection_pool=True)


def _histogram(n: int) -> None:
    histogram: Any = Metrics().http_duration
    series = _Series(histogram)
    for name, observe in (
        ("labels().observe()", lambda: histogram.labels("PATCH", "/t", "200").observe(0.003)),
        ("cached series", lambda: series.observe("PATCH", "/t", "200", 0.003)),
    ):
        started = time.process_time()
        for _ in range(n):
            observe()
        print(f"request histogram, {name}: {(time.process_time() - started) * 1e6 / n:.1f} us")


def _log_access_before(
    logger: logging.Logger,
    method: str,
    path: str,
    status: int,
    seconds: float,
    remote: str | None,
    **ids: str | None,
) -> None:
    """``logs.log_access`` as it was before (a copy, for the comparison)."""
    extra: dict[str, Any] = {
        "method": method,
        "path": path,
        "status": status,
        "ms": round(seconds * 1000, 2),
        "remote": remote,
    }
    extra.update((name, value) for name, value in ids.items() if value is not None)
    logger.info("%s %s %d %.1fms", method, path, status, seconds * 1000, extra=extra)


def _access_line(n: int) -> None:
    logs.configure_logging("text", "INFO")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    with open(os.devnull, "w") as devnull:
        handler.setStream(devnull)
        logger = logs.access_log
        ids = {"request_id": "0123456789abcdef0123456789abcdef", "user_id": "owner"}

        def before() -> None:
            _log_access_before(logger, "PATCH", "/api/tasks/t1", 200, 0.0031, "127.0.0.1", **ids)

        def after() -> None:
            logs.log_access(logger, "PATCH", "/api/tasks/t1", 200, 0.0031, "127.0.0.1", **ids)

        line = "2026-12-06 20:30:01,123 INFO aiohttp.access: PATCH /api/tasks/t1 200 3.1ms"
        for name, call in (
            ("log_access as before", before),
            ("log_access", after),
            ("redact's substitution", lambda: logs._SECRETS.sub("[redacted]", line)),
            ("redact", lambda: logs.redact(line)),
        ):
            started = time.process_time()
            for _ in range(n):
                call()
            print(f"access line, {name}: {(time.process_time() - started) * 1e6 / n:.1f} us")


@asynccontextmanager
async def _generator_block() -> AsyncIterator[None]:
    yield


class _ClassBlock:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None


async def _blocks(n: int) -> None:
    for name, block in (("asynccontextmanager", _generator_block), ("class", _ClassBlock)):

        async def one(block: Callable[[], AbstractAsyncContextManager[None]] = block) -> None:
            async with block():
                pass

        print(f"empty async with, {name}: {await _per_call(one, n):.1f} us")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="liveboard-patch-parts-") as tmp:
        redis = RedisServer(Path(tmp))
        postgres = Postgres(POSTGRES_URL)
        try:
            await redis.ready()
            url = await postgres.create(f"patch_parts_{os.getpid()}")
            await _driver(url, 3000)
            await _publish(redis.url, 5000)
            _histogram(50_000)
            _access_line(20_000)
            await _blocks(100_000)
        finally:
            redis.stop()
            await postgres.drop_all()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
