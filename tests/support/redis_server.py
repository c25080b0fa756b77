"""A private ``redis-server`` for tests: a free port, a temporary directory, no persistence.

``RedisServer`` starts, stops and restarts the server on the same port (for outage tests); the
``redis_server`` fixture gives each test its own. The shared Redis on 6379 is never touched.
``start``/``stop``/``restart`` block for at most a few seconds: from async code, call them with
``asyncio.to_thread`` so the event loop keeps running meanwhile.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import free_port

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def ping(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis server on ``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process, restartable on the same port."""

    def __init__(self, directory: Path, executable: str = "redis-server") -> None:
        self.directory = directory
        self.executable = executable
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the server (a no-op if it runs) and wait until it answers PING."""
        if self.running:
            return
        log = (self.directory / "redis.log").open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    self.executable,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self.directory),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        finally:
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while not ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{tail}")
            time.sleep(0.01)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT``; returns once the process is gone."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo ``pause`` (SIGCONT)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stop, then start again on the same port (empty: nothing is persisted)."""
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh private ``redis-server`` for one test (needs ``redis-server`` on PATH)."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not on PATH (a test prerequisite, see the README)")
    server = RedisServer(tmp_path_factory.mktemp("redis"), executable)
    for _attempt in range(3):  # the free port may be taken between choosing and binding it
        try:
            server.start()
            break
        except RuntimeError:
            server.port = free_port()
    else:
        server.start()
    try:
        yield server
    finally:
        server.stop()
