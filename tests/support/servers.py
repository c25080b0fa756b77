"""Real ``liveboard serve`` processes on free ports, for integration tests.

``LiveboardProcess`` starts the CLI exactly as users do (``python -m liveboard serve``), waits
for ``/healthz``, and stops it with SIGTERM (or SIGKILL for crash tests). Its output goes to a
log file whose tail is shown when a start fails. The ``server_factory`` fixture starts servers
for one test and kills them at its end; ``start_server`` starts one for a module-scoped fixture.
``free_port`` is the one way the tests pick a port.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.timing import timeout
from tests.support.tokens import TEST_SECRET

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveboardProcess:
    """One server process. ``url`` is its base URL once started."""

    def __init__(
        self,
        *,
        database_url: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        dev: bool = False,
        nofile: tuple[int, int] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.nofile = nofile  # (soft, hard) RLIMIT_NOFILE to start the process with
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws/connect"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._dev = dev
        base = {k: v for k, v in os.environ.items() if not k.startswith("LIVEBOARD_")}
        base.update(
            {
                "LIVEBOARD_DATABASE_URL": database_url,
                "LIVEBOARD_JWT_SECRET": TEST_SECRET,
                "PYTHONUNBUFFERED": "1",
            }
        )
        base.update(env or {})
        self.env = base

    def start(self, wait: float = 20.0) -> LiveboardProcess:
        args = [sys.executable, "-m", "liveboard", "serve", "--port", str(self.port)]
        if self._dev:
            args.append("--dev")
        log = self.log_path.open("ab")
        limits = self.nofile

        def set_limits() -> None:  # in the child, before exec
            if limits is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, limits)

        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=set_limits if limits is not None else None,
        )
        log.close()
        deadline = time.monotonic() + timeout(wait)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def terminate(self, wait: float = 15.0) -> int:
        """SIGTERM and wait; return the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout(wait))

    def kill(self) -> None:
        """SIGKILL (a crash); no cleanup happens in the server."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


def start_server(
    tmp_path_factory: pytest.TempPathFactory, name: str, env: Mapping[str, str] | None = None
) -> LiveboardProcess:
    """A real server on a free port with its own SQLite file (for module-scoped fixtures)."""
    directory = tmp_path_factory.mktemp(name)
    return LiveboardProcess(
        database_url=f"sqlite:///{directory / 'liveboard.db'}",
        log_path=directory / "server.log",
        env=env,
    ).start()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveboardProcess]]:
    """Start servers: ``server_factory(database_url=..., env={...}, dev=False, nofile=None)``."""
    started: list[LiveboardProcess] = []
    counter = iter(range(1000))

    def start(
        *,
        database_url: str | None = None,
        env: Mapping[str, str] | None = None,
        dev: bool = False,
        port: int | None = None,
        nofile: tuple[int, int] | None = None,
    ) -> LiveboardProcess:
        n = next(counter)
        url = database_url or f"sqlite:///{tmp_path / 'liveboard.db'}"
        server = LiveboardProcess(
            database_url=url,
            log_path=tmp_path / f"server-{n}.log",
            env=env,
            port=port,
            dev=dev,
            nofile=nofile,
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()
