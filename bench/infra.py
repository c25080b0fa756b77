"""Processes of a benchmark run: private Redis, fresh PostgreSQL databases, servers, workers.

Everything the suite starts is a child of ``bench.run`` on 127.0.0.1, on free ports, and is
stopped by it. CPU time and RSS are read from ``/proc/<pid>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (the most an unprivileged process may have)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    user, system = cpu_split(pid)
    return user + system


def write_calls(pid: int) -> int:
    """``write``/``writev`` system calls a process has made so far (``syscw`` in
    ``/proc/<pid>/io``). uvloop (libuv) writes to a socket with these, one call per
    ``transport.write`` that is not queued, so the count tells how many frames each write carried;
    ``send``/``sendmsg`` (asyncio's own loop) are not counted."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("syscw:"):
                return int(line.split()[1])
    return 0


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Process:
    """A child process with its log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_fd_limit,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def cpu_system(self) -> float:
        return cpu_split(self.pid)[1]

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def write_calls(self) -> int:
        return write_calls(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


async def wait_http(url: str, timeout: float, proc: Process) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited; see {proc.log_path}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} did not answer {url}; see {proc.log_path}")
            await asyncio.sleep(0.05)


class RedisServer:
    """A private redis-server on a free port: never the shared one."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not on PATH")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        argv += ["--bind", "127.0.0.1", "--daemonize", "no", "--dir", str(workdir)]
        self.process = Process("redis", argv, workdir / "redis.log")

    async def ready(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        self.process.stop()


class Postgres:
    """Fresh databases on the local PostgreSQL (trust auth), dropped at the end."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.created: list[str] = []

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    async def create(self, name: str) -> str:
        import asyncpg

        conn = await asyncpg.connect(self.url("postgres"))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        return self.url(name)

    async def drop_all(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.url("postgres"))
        try:
            for name in self.created:
                with contextlib.suppress(Exception):
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


class Workers:
    """The load generator processes, driven over their stdin/stdout (JSON lines)."""

    def __init__(
        self, count: int, tokens_file: Path, workdir: Path, module: str = "bench.loadgen"
    ) -> None:
        self.workdir = workdir
        self.module = module
        self.procs: list[asyncio.subprocess.Process] = []
        self.count = count
        self.tokens_file = tokens_file

    async def start(self) -> None:
        for index in range(self.count):
            proc = await asyncio.create_subprocess_exec(
                PYTHON,
                "-m",
                self.module,
                "--tokens",
                str(self.tokens_file),
                "--worker",
                str(index),
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=open(self.workdir / f"worker{index}.log", "ab"),  # noqa: ASYNC230, SIM115
                limit=1 << 24,
            )
            self.procs.append(proc)
        await self.all({"cmd": "ping"})

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    async def one(self, index: int, command: dict[str, Any]) -> dict[str, Any]:
        proc = self.procs[index]
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write((json.dumps(command) + "\n").encode())
        await proc.stdin.drain()
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator {index} died; see {self.workdir}")
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise RuntimeError(f"load generator {index}: {answer.get('error')}")
        return answer

    async def all(self, command: dict[str, Any]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self.one(i, dict(command)) for i in range(self.count))))

    async def each(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self.one(i, c) for i, c in enumerate(commands))))

    async def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                assert proc.stdin is not None
                proc.stdin.write(b'{"cmd": "exit"}\n')
                await proc.stdin.drain()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
