"""The ``liveboard`` command as users run it (CONTRACT §1): real subprocesses, real ports.

Every subprocess gets the environment without any inherited ``LIVEBOARD_*`` variable, runs in a
temporary directory, and is killed in ``finally`` if it is still alive.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # (no type information shipped)
import jwt
import pytest

from liveboard.config import DEV_JWT_SECRET, setting_defaults
from tests.support.postgres import fresh_postgres_database
from tests.support.servers import free_port
from tests.support.timing import timeout
from tests.support.tokens import TEST_SECRET

LIVEBOARD = [sys.executable, "-m", "liveboard"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEBOARD_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LIVEBOARD, *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout(60),
        check=False,
    )


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one line on stderr, got: {text!r}"
    return lines[0]


def http(
    port: int, path: str, token: str | None = None, method: str = "GET", body: Any = None
) -> tuple[int, Any]:
    """One request to the server; returns (status, decoded JSON body)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout(10)) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + timeout(30)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.process.returncode}: {self.output()}"
                )
            try:
                status, body = http(self.port, "/healthz")
            except (OSError, ValueError):
                time.sleep(0.05)
                continue
            assert (status, body) == (200, {"status": "ok"})
            return
        raise AssertionError(f"server not healthy in time: {self.output()}")

    def terminate(self) -> int:
        """SIGTERM, then the exit code; fails if it takes more than 10 s (CONTRACT §5.7)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout(10))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit within 10 s of SIGTERM: {self.output()}") from None


@contextmanager
def server(tmp_path: Path, args: list[str], port: int, **env: str) -> Iterator[Server]:
    log = tmp_path / f"server-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*LIVEBOARD, "serve", *args],
            cwd=tmp_path,
            env=clean_env(**env),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Server(process, port, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def sqlite_url(tmp_path: Path, name: str = "cli.db") -> str:
    return f"sqlite:///{tmp_path / name}"


# serve: configuration errors


def test_serve_without_jwt_key_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run(
        ["serve", "--port", str(free_port())], tmp_path, LIVEBOARD_DATABASE_URL=sqlite_url(tmp_path)
    )
    assert result.returncode == 2, result
    line = one_line(result.stderr)
    assert "LIVEBOARD_JWT_SECRET" in line
    assert result.stdout == ""


def test_invalid_heartbeat_interval_exits_2(tmp_path: Path) -> None:
    result = run(
        ["serve", "--dev", "--port", str(free_port())],
        tmp_path,
        LIVEBOARD_DATABASE_URL=sqlite_url(tmp_path),
        LIVEBOARD_HEARTBEAT_INTERVAL="abc",
    )
    assert result.returncode == 2, result
    assert "LIVEBOARD_HEARTBEAT_INTERVAL" in one_line(result.stderr)


def test_an_invalid_redis_address_map_exits_2(tmp_path: Path) -> None:
    result = run(
        ["serve", "--dev", "--port", str(free_port())],
        tmp_path,
        LIVEBOARD_DATABASE_URL=sqlite_url(tmp_path),
        LIVEBOARD_REDIS_URL="redis+cluster://127.0.0.1:7000",
        LIVEBOARD_REDIS_ADDRESS_MAP="127.0.0.1:7000=127.0.0.1:7001,",
    )
    assert result.returncode == 2, result
    assert "LIVEBOARD_REDIS_ADDRESS_MAP: item 2 is empty" in one_line(result.stderr)


def test_invalid_database_url_exits_2(tmp_path: Path) -> None:
    result = run(
        ["serve", "--port", str(free_port())],
        tmp_path,
        LIVEBOARD_DATABASE_URL="mysql://root@localhost/db",
        LIVEBOARD_JWT_SECRET=TEST_SECRET,
    )
    assert result.returncode == 2, result
    assert "LIVEBOARD_DATABASE_URL" in one_line(result.stderr)


def test_an_unknown_database_url_parameter_exits_2(tmp_path: Path) -> None:
    result = run(
        ["serve", "--port", str(free_port())],
        tmp_path,
        LIVEBOARD_DATABASE_URL="postgresql://app:pw@127.0.0.1:5432/db?sslmode=require&sslmod=x",
        LIVEBOARD_JWT_SECRET=TEST_SECRET,
    )
    assert result.returncode == 2, result
    line = one_line(result.stderr)
    assert line.startswith("liveboard: LIVEBOARD_DATABASE_URL: unknown parameter 'sslmod'")
    assert "pw" not in line


def test_serve_help_lists_every_setting(tmp_path: Path) -> None:
    result = run(["serve", "--help"], tmp_path)
    assert result.returncode == 0, result
    listed = re.findall(r"^  (LIVEBOARD_[A-Z_]+) ", result.stdout, flags=re.MULTILINE)
    assert listed == list(setting_defaults())
    assert "LIVEBOARD_DB_POOL_SIZE               10" in result.stdout
    assert "check-config" in result.stdout


# check-config


def test_check_config_prints_the_effective_settings_masked(tmp_path: Path) -> None:
    result = run(
        ["check-config"],
        tmp_path,
        LIVEBOARD_DATABASE_URL="postgresql://app:hunter2@db.internal:5432/lb?sslmode=require",
        LIVEBOARD_REDIS_URL="redis://:redispass@cache:6379/0",
        LIVEBOARD_JWT_SECRET=TEST_SECRET,
        LIVEBOARD_DB_POOL_SIZE="4",
        LIVEBOARD_DB_POOLSIZE="3",  # a typo
    )
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert (
        "LIVEBOARD_DATABASE_URL=postgresql://app:***@db.internal:5432/lb?sslmode=require" in lines
    )
    assert "LIVEBOARD_REDIS_URL=redis://:***@cache:6379/0" in lines
    assert "LIVEBOARD_JWT_SECRET=***" in lines
    assert "LIVEBOARD_DB_POOL_SIZE=4" in lines
    assert "LIVEBOARD_DB_MAX_OVERFLOW=10  # default" in lines
    assert [line.split("=", 1)[0] for line in lines] == list(setting_defaults())
    for secret in ("hunter2", "redispass", TEST_SECRET):
        assert secret not in result.stdout + result.stderr
    assert one_line(result.stderr) == (
        "liveboard: warning: LIVEBOARD_DB_POOLSIZE is not a liveboard setting"
        " (did you mean LIVEBOARD_DB_POOL_SIZE?); it is ignored"
    )


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"LIVEBOARD_DB_MAX_OVERFLOW": "-1"}, "LIVEBOARD_DB_MAX_OVERFLOW must be at least 0"),
        (
            {"LIVEBOARD_DATABASE_URL": "postgresql://u@h/db?sslmode=required"},
            "LIVEBOARD_DATABASE_URL: sslmode must be one of",
        ),
        ({"LIVEBOARD_JWT_SECRET": ""}, "no JWT key configured"),
        (
            {
                "LIVEBOARD_REDIS_URL": "redis+cluster://127.0.0.1:7000",
                "LIVEBOARD_REDIS_ADDRESS_MAP": "127.0.0.1:7000=127.0.0.1",
            },
            "LIVEBOARD_REDIS_ADDRESS_MAP: item 1 ('127.0.0.1:7000=127.0.0.1') must be",
        ),
    ],
)
def test_check_config_refuses_an_invalid_setting_with_one_line(
    tmp_path: Path, env: dict[str, str], says: str
) -> None:
    result = run(["check-config"], tmp_path, **{"LIVEBOARD_JWT_SECRET": TEST_SECRET, **env})
    assert result.returncode == 2, result
    assert says in one_line(result.stderr)
    assert result.stdout == ""


def test_check_config_dev_needs_no_key(tmp_path: Path) -> None:
    result = run(["check-config", "--dev"], tmp_path)
    assert result.returncode == 0, result
    assert "LIVEBOARD_JWT_SECRET=***" in result.stdout.splitlines()
    assert DEV_JWT_SECRET not in result.stdout


# token


def test_token_prints_a_verifiable_jwt(tmp_path: Path) -> None:
    result = run(
        ["token", "--sub", "alice", "--name", "Alice"], tmp_path, LIVEBOARD_JWT_SECRET=TEST_SECRET
    )
    assert result.returncode == 0, result
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["name"] == "Alice"
    now = time.time()
    assert now - 60 <= claims["iat"] <= now + 1
    assert claims["exp"] - claims["iat"] == 3600


def test_token_ttl_and_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "liveboard"
    assert script.exists(), script
    result = subprocess.run(
        [str(script), "token", "--sub", "bob", "--ttl", "120"],
        cwd=tmp_path,
        env=clean_env(LIVEBOARD_JWT_SECRET=TEST_SECRET),
        capture_output=True,
        text=True,
        timeout=timeout(60),
        check=False,
    )
    assert result.returncode == 0, result
    claims = jwt.decode(result.stdout.strip(), TEST_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "bob"
    assert "name" not in claims
    assert claims["exp"] - claims["iat"] == 120


def test_token_without_secret_exits_2(tmp_path: Path) -> None:
    result = run(["token", "--sub", "alice"], tmp_path)
    assert result.returncode == 2, result
    assert "LIVEBOARD_JWT_SECRET" in one_line(result.stderr)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--sub", "u" * 256], "at most 255"),
        (["--sub", "a\udcff"], "U+0000"),  # a byte that is not UTF-8 in argv
        (["--sub", "alice", "--ttl", "inf"], "finite"),
        (["--sub", "alice", "--ttl", "1e16"], "exp"),
    ],
)
def test_token_the_server_would_refuse_exits_2(tmp_path: Path, args: list[str], says: str) -> None:
    """Before, each printed a token every request refused, or a traceback (--ttl inf)."""
    result = run(["token", *args], tmp_path, LIVEBOARD_JWT_SECRET=TEST_SECRET)
    assert result.returncode == 2, result
    assert says in one_line(result.stderr)
    assert result.stdout == ""


# migrate


def test_migrate_fresh_sqlite_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    url = f"sqlite:///{path}"
    first = run(["migrate"], tmp_path, LIVEBOARD_DATABASE_URL=url)
    assert first.returncode == 0, first
    assert path.exists()

    def tables() -> set[str]:
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {str(r[0]) for r in rows}

    created = tables()
    assert {"workspaces", "members", "projects", "tasks", "rooms", "events"} <= created
    with sqlite3.connect(path) as conn:
        applied = conn.execute("SELECT version FROM schema_migrations").fetchall()
    assert applied
    second = run(["migrate"], tmp_path, LIVEBOARD_DATABASE_URL=url)
    assert second.returncode == 0, second
    assert tables() == created
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == applied


@pytest.mark.postgres
def test_migrate_fresh_postgres_is_idempotent(tmp_path: Path, postgres_server_url: str) -> None:
    with fresh_postgres_database(postgres_server_url) as url:
        for _ in range(2):
            result = run(["migrate"], tmp_path, LIVEBOARD_DATABASE_URL=url)
            assert result.returncode == 0, result
        tables = asyncio.run(postgres_tables(url, "liveboard"))
        assert {"workspaces", "members", "projects", "tasks", "rooms", "events"} <= tables
        # Nothing of liveboard's in public but the two functions an app calls by name.
        assert asyncio.run(postgres_tables(url, "public")) == set()
        assert asyncio.run(postgres_functions(url, "public")) == {
            "liveboard_emit",
            "liveboard_position",
        }


@pytest.mark.postgres
def test_migrate_into_a_configured_schema(tmp_path: Path, postgres_server_url: str) -> None:
    with fresh_postgres_database(postgres_server_url) as url:
        result = run(["migrate"], tmp_path, LIVEBOARD_DATABASE_URL=url, LIVEBOARD_DB_SCHEMA="rt")
        assert result.returncode == 0, result
        assert {"rooms", "events"} <= asyncio.run(postgres_tables(url, "rt"))
        assert asyncio.run(postgres_tables(url, "liveboard")) == set()
        assert {"liveboard_emit", "liveboard_position"} <= asyncio.run(
            postgres_functions(url, "rt")
        )


def test_a_bad_schema_name_exits_2(tmp_path: Path) -> None:
    result = run(["migrate"], tmp_path, LIVEBOARD_DB_SCHEMA="Live-Board")
    assert result.returncode == 2, result
    assert "LIVEBOARD_DB_SCHEMA must be a lowercase SQL identifier" in result.stderr


async def postgres_tables(url: str, schema: str) -> set[str]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
    finally:
        await conn.close()
    return {str(r["tablename"]) for r in rows}


async def postgres_functions(url: str, schema: str) -> set[str]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = $1",
            schema,
        )
    finally:
        await conn.close()
    return {str(r["proname"]) for r in rows}


# serve


def dev_token(port: int, user: str) -> str:
    status, body = http(port, f"/api/dev/token?user={user}")
    assert status == 200, body
    assert set(body) == {"token"}
    token = str(body["token"])
    assert jwt.decode(token, DEV_JWT_SECRET, algorithms=["HS256"])["sub"] == user
    return token


def demo_board(port: int, user: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The demo workspace's project and tasks as ``user`` sees them."""
    token = dev_token(port, user)
    status, workspaces = http(port, "/api/workspaces", token)
    assert status == 200
    demo = [ws for ws in workspaces if ws["name"] == "Demo workspace"]
    assert len(demo) == 1, workspaces
    status, projects = http(port, f"/api/workspaces/{demo[0]['id']}/projects", token)
    assert status == 200
    assert len(projects) == 1, projects
    status, snapshot = http(port, f"/api/projects/{projects[0]['id']}/tasks", token)
    assert status == 200
    return projects[0], snapshot["tasks"]


def test_serve_dev_seeds_the_demo_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "LIVEBOARD_DATABASE_URL": sqlite_url(tmp_path, "dev.db"),
        # The flag wins over its variable.
        "LIVEBOARD_PORT": str(free_port()),
    }
    with server(tmp_path, ["--dev", "--port", str(port)], port, **env) as srv:
        srv.wait_healthy()
        seen = {user: demo_board(port, user) for user in ("alice", "bob", "carol")}
        project, tasks = seen["alice"]
        assert project["name"] == "Website launch"
        assert len(tasks) == 12
        assert {t["status"] for t in tasks} <= set(project["statuses"])
        assert seen["bob"] == seen["carol"] == seen["alice"]
        status, members = http(
            port, f"/api/workspaces/{project['workspaceId']}/members", dev_token(port, "bob")
        )
        assert status == 200
        assert {m["userId"] for m in members} == {"alice", "bob", "carol"}
        # A user outside the demo sees nothing of it.
        status, workspaces = http(port, "/api/workspaces", dev_token(port, "zed"))
        assert (status, workspaces) == (200, [])
        status, error = http(port, "/api/dev/token")
        assert status == 422
        assert error["error"]["code"] == "validation_error"
        assert srv.terminate() == 0

    # Started again on the same database, the demo is not seeded twice.
    with server(tmp_path, ["--dev", "--port", str(port)], port, **env) as srv:
        srv.wait_healthy()
        again, tasks = demo_board(port, "alice")
        assert again == project
        assert len(tasks) == 12
        assert srv.terminate() == 0


def test_serve_without_dev_has_no_dev_token_route(tmp_path: Path) -> None:
    port = free_port()
    env = {"LIVEBOARD_DATABASE_URL": sqlite_url(tmp_path), "LIVEBOARD_JWT_SECRET": TEST_SECRET}
    with server(tmp_path, ["--port", str(port)], port, **env) as srv:
        srv.wait_healthy()
        status, error = http(port, "/api/dev/token?user=alice")
        assert status == 404
        assert error["error"]["code"] == "not_found"
        # No demo data, and a token from `liveboard token` is accepted.
        minted = run(["token", "--sub", "alice"], tmp_path, LIVEBOARD_JWT_SECRET=TEST_SECRET)
        assert minted.returncode == 0, minted
        status, workspaces = http(port, "/api/workspaces", minted.stdout.strip())
        assert (status, workspaces) == (200, [])
        status, created = http(
            port, "/api/workspaces", minted.stdout.strip(), method="POST", body={"name": "Real"}
        )
        assert status == 201
        assert created["name"] == "Real"
        # A dev-secret token is not accepted by a server with its own secret.
        forged = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, DEV_JWT_SECRET)
        status, error = http(port, "/api/workspaces", forged)
        assert status == 401
        assert error["error"]["code"] == "unauthorized"
        started = time.monotonic()
        assert srv.terminate() == 0
        assert time.monotonic() - started < timeout(10)
