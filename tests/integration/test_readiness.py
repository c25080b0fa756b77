"""Start-up against an unreachable database (``LIVEBOARD_DB_WAIT``) and ``/readyz``'s checks.

Real processes: ``liveboard serve`` and ``liveboard migrate`` against a port nobody listens on,
or against PostgreSQL through ``TcpProxy`` (not yet listening, cut, paused), and a private
``redis-server`` stopped under a server with ``LIVEBOARD_REDIS_REQUIRED=1``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.postgres import fresh_postgres_database
from tests.support.redis_server import RedisServer
from tests.support.servers import ROOT, LiveboardProcess, free_port
from tests.support.tcp_proxy import TcpProxy
from tests.support.timing import timeout
from tests.support.tokens import TEST_SECRET

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

PG_HOST, PG_PORT = "127.0.0.1", 5432


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEBOARD_")}
    env.update({"PYTHONUNBUFFERED": "1", "LIVEBOARD_JWT_SECRET": TEST_SECRET, **extra})
    return env


@pytest.fixture
def database(postgres_server_url: str) -> Iterator[str]:
    """The name of an empty database of this test's own on the test PostgreSQL server."""
    with fresh_postgres_database(postgres_server_url) as url:
        yield url.rsplit("/", 1)[1]


def _records(stderr: str, fmt: str) -> list[tuple[str, str]]:
    """(level, message) of each log line; fails on a line that is not one whole record."""
    records: list[tuple[str, str]] = []
    for line in stderr.splitlines():
        if fmt == "json":
            entry = json.loads(line)  # every line is one JSON object
            records.append((entry["level"].upper(), entry["message"]))
        else:
            date, clock, level, rest = line.split(" ", 3)  # "2026-… 11:02:23,144 ERROR logger: …"
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", f"{date} {clock}"), line
            records.append((level, rest.split(": ", 1)[1]))
    return records


@pytest.mark.parametrize("command", ["serve", "migrate"])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_unreachable_database_exits_1_with_one_line(command: str, fmt: str, tmp_path: Path) -> None:
    port = free_port()  # nobody listens on it: every connection is refused
    args = [sys.executable, "-m", "liveboard", command]
    if command == "serve":
        args += ["--port", "0", "--log-format", fmt]
    started = time.monotonic()
    result = subprocess.run(
        args,
        cwd=tmp_path,
        env=_env(
            LIVEBOARD_DATABASE_URL=f"postgresql://postgres:hunter2@127.0.0.1:{port}/liveboard",
            LIVEBOARD_DB_WAIT="2",
            LIVEBOARD_LOG_FORMAT=fmt,
        ),
        capture_output=True,
        text=True,
        timeout=timeout(60),
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr  # the URL is shown without its password
    records = _records(result.stderr, fmt)
    errors = [message for level, message in records if level == "ERROR"]
    assert len(errors) == 1, result.stderr
    assert records[-1] == ("ERROR", errors[0])
    assert f"127.0.0.1:{port}/liveboard unreachable" in errors[0]
    assert "Connection refused" in errors[0]
    assert "waited 2 s" in errors[0]
    # One warning per failed attempt before the last, with backoff between them.
    warnings = [message for level, message in records if level == "WARNING"]
    assert 2 <= len(warnings) <= 10, result.stderr
    assert all("retrying in" in message for message in warnings)
    assert 2.0 <= elapsed < timeout(30)


def test_wrong_role_fails_at_once(tmp_path: Path) -> None:
    """An authentication failure cannot get better by waiting: no retry, one line, exit 1."""
    result = subprocess.run(
        [sys.executable, "-m", "liveboard", "serve", "--port", "0"],
        cwd=tmp_path,
        env=_env(
            LIVEBOARD_DATABASE_URL=f"postgresql://no_such_role@{PG_HOST}:{PG_PORT}/postgres",
            LIVEBOARD_DB_WAIT="30",
        ),
        capture_output=True,
        text=True,
        timeout=timeout(25),  # well under the 30 s wait: it did not wait
        check=False,
    )
    assert result.returncode == 1, result.stderr
    records = _records(result.stderr, "text")
    assert [level for level, _ in records if level in ("WARNING", "ERROR")] == ["ERROR"]
    assert 'role "no_such_role" does not exist' in records[-1][1]
    assert "Traceback" not in result.stderr


async def _status(url: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response,
    ):
        return response.status, await response.json()


async def _until(
    url: str, predicate: Callable[[int, Any], bool], within: float = 20.0
) -> tuple[int, Any]:
    deadline = time.monotonic() + timeout(within)
    last: tuple[int, Any] | None = None
    while time.monotonic() < deadline:
        try:
            last = await _status(url)
        except (aiohttp.ClientError, TimeoutError):
            last = None
        if last is not None and predicate(*last):
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never matched; last answer {last}")


def _server(tmp_path: Path, database_url: str, **env: str) -> LiveboardProcess:
    return LiveboardProcess(database_url=database_url, log_path=tmp_path / "server.log", env=env)


async def test_server_waits_for_the_database_then_readyz_follows_it(
    database: str, tmp_path: Path
) -> None:
    port = free_port()  # the proxy will listen here, once the server has started waiting
    server = _server(
        tmp_path, f"postgresql://postgres@127.0.0.1:{port}/{database}", LIVEBOARD_DB_WAIT="60"
    )
    proxy = TcpProxy(PG_HOST, PG_PORT)
    starting = asyncio.create_task(asyncio.to_thread(server.start, 60.0))
    try:
        # Not serving while the database is unreachable; its warnings say it is waiting.
        deadline = time.monotonic() + timeout(20)
        while server.log().count("unreachable (attempt") < 2:
            assert time.monotonic() < deadline, server.log()
            assert not starting.done(), server.log()
            await asyncio.sleep(0.05)
        await proxy.start(port)
        await starting  # /healthz answers: it came up once the database was reachable
        assert proxy.connections >= 1
        assert "reachable after" in server.log()

        ready = f"{server.url}/readyz"
        status, body = await _status(ready)
        assert (status, body) == (200, {"status": "ready", "broker": "memory", "degraded": False})

        proxy.cut()  # connections reset, new ones closed at once
        status, body = await _until(ready, lambda s, _b: s == 503)
        assert body["error"]["code"] == "unavailable"
        assert body["error"]["details"] == {"failed": ["database"]}
        assert (await _status(f"{server.url}/healthz"))[0] == 200  # liveness is unaffected

        proxy.resume()
        await _until(ready, lambda s, _b: s == 200)

        proxy.pause()  # nothing answers: the probe's timeout decides
        status, body = await _until(ready, lambda s, _b: s == 503)
        assert body["error"]["details"] == {"failed": ["database"]}

        proxy.resume()
        await _until(ready, lambda s, _b: s == 200)
        assert await asyncio.to_thread(server.terminate) == 0
    finally:
        server.kill()
        if not starting.done():
            starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await proxy.aclose()


async def test_readyz_with_redis_required(
    database: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    server = _server(
        tmp_path,
        f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{database}",
        LIVEBOARD_REDIS_URL=redis_server.url,
        LIVEBOARD_REDIS_REQUIRED="1",
    )
    await asyncio.to_thread(server.start)
    try:
        ready = f"{server.url}/readyz"
        status, body = await _status(ready)
        assert (status, body) == (200, {"status": "ready", "broker": "redis", "degraded": False})

        await asyncio.to_thread(redis_server.stop)
        status, body = await _until(ready, lambda s, _b: s == 503)
        assert body["error"]["code"] == "unavailable"
        assert body["error"]["details"] == {"failed": ["redis"]}

        await asyncio.to_thread(redis_server.start)
        await _until(ready, lambda s, _b: s == 200)
        assert await asyncio.to_thread(server.terminate) == 0
    finally:
        server.kill()


def test_redis_required_needs_a_redis_url(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "liveboard", "serve", "--port", "0"],
        cwd=ROOT,
        env=_env(LIVEBOARD_REDIS_REQUIRED="1"),
        capture_output=True,
        text=True,
        timeout=timeout(30),
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == "liveboard: LIVEBOARD_REDIS_REQUIRED=1 needs LIVEBOARD_REDIS_URL\n"
