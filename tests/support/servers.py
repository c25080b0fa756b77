"""Real ``liveboard serve`` processes on free ports, for integration tests.

``LiveboardProcess`` starts the CLI exactly as users do (``python -m liveboard serve``), waits
for ``/healthz``, and stops it with SIGTERM (or SIGKILL for crash tests). Its output goes to a
log file whose tail is shown when a start fails. The ``server_factory`` fixture starts servers
for one test and kills them at its end; ``start_server`` starts one for a module-scoped fixture.
``free_port`` is the one way the tests pick a port.
"""

from __future__ import annotations

import os
import random
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


def _ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for ports it picks itself (outgoing connections, ``bind`` to 0)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_EPHEMERAL = _ephemeral_ports()
#: Where ``free_port`` looks first: below the ephemeral range, never a well-known port.
_PICK_FROM = (20000, _EPHEMERAL[0] - 1) if _EPHEMERAL[0] > 21000 else None
_random = random.Random()  # its own generator: tests that seed ``random`` must not share ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is bound to right now.

    A port is chosen and then bound by a server later, so another socket may take it in between.
    Ports the kernel hands out itself (to every outgoing connection, and to ``bind(0)``) come
    from the ephemeral range, where that race is likely when several test processes run at once
    (``make test`` runs pytest-xdist workers; other suites may share the machine). So a random
    port below that range is tried first, checked by binding it; ``bind(0)`` is the fallback.
    """
    if _PICK_FROM is not None:
        for _ in range(50):
            port = _random.randint(*_PICK_FROM)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _PortTakenError(RuntimeError):
    """The server could not listen: its port was taken after ``free_port`` chose it."""


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
        self._port_chosen = port is None  # chosen here, so another may be tried if it is taken
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

    def start(self, wait: float = 60.0) -> LiveboardProcess:
        """Start the server and wait until ``/healthz`` answers 200 (``wait`` seconds at most,
        scaled by ``timeout``: it returns as soon as the server answers, so the bound only
        matters on a machine loaded by other work). A port chosen by ``free_port`` that another
        process took meanwhile (the server exits: address already in use) is replaced by a new
        one, twice at most."""
        for _attempt in range(2):
            try:
                return self._start(wait)
            except _PortTakenError:
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self.ws_url = f"ws://127.0.0.1:{self.port}/ws/connect"
        return self._start(wait)

    def _start(self, wait: float) -> LiveboardProcess:
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
                output = self.log()
                if self._port_chosen and "address already in use" in output:
                    raise _PortTakenError(output)
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{output}")
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
