"""``liveboard serve --workers N``: N server processes on one port, and the supervisor that keeps
them running (CONTRACT §6.6).

Each worker is a whole ``liveboard serve`` process (its own node, instance id, database pool and
broker connections), started with ``--reuse-port``: every worker binds the same address with
``SO_REUSEPORT`` and the kernel spreads new connections over their listening sockets by a hash of
the connection's addresses. A parent that accepted and handed sockets on would add a hop to
every connection and a single point the workers wait on; a shared listening socket that all
workers accept from wakes whichever is idle first, which tends to pile connections onto a few.
Together the workers behave as N instances joined by the broker, which is why more than one
needs a broker (``config.check_workers``).

The supervisor holds the port while the workers start (a bound, non-listening ``SO_REUSEPORT``
socket, so ``--port 0`` picks one port for all), forwards SIGTERM and SIGINT to every worker so
each drains as a single server does (CONTRACT §5.7), restarts a worker that exits on its own, and
gives up, stopping the others and exiting 1, when workers keep dying (``RestartBudget``). Workers
are asked to die with it (``PR_SET_PDEATHSIG``), so a killed supervisor leaves no orphan holding
the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import socket
import sys
from collections import deque

from liveboard.config import Settings

log = logging.getLogger("liveboard.workers")

#: How long a worker has to drain after SIGTERM before it is killed (its own deadline is 30 s).
DRAIN_TIMEOUT = 40.0
#: The pause before a dead worker's replacement starts (a crash loop must not spin).
RESTART_PAUSE = 0.5


class RestartBudget:
    """Whether a worker that died may be replaced: at most ``max_deaths`` deaths within any
    ``window`` seconds. Pure: the caller passes the time."""

    def __init__(self, max_deaths: int = 5, window: float = 60.0) -> None:
        self.max_deaths = max_deaths
        self.window = window
        self._deaths: deque[float] = deque()

    def allows_restart(self, now: float) -> bool:
        """Record a death at ``now``; False once the deaths within the window exceed the budget."""
        self._deaths.append(now)
        while self._deaths and self._deaths[0] <= now - self.window:
            self._deaths.popleft()
        return len(self._deaths) <= self.max_deaths


def worker_command(settings: Settings, port: int, index: int = 0) -> list[str]:
    """The command line of worker ``index``: ``serve`` on the supervisor's port, one process,
    its metrics (if asked for) on ``metrics_port + index``."""
    metrics = (
        ["--metrics-port", str(settings.metrics_port + index)] if settings.metrics_port else []
    )
    return [
        sys.executable,
        "-m",
        "liveboard",
        "serve",
        "--host",
        settings.host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--reuse-port",
        "--log-format",
        settings.log_format,
        *metrics,
    ]


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, non-listening ``SO_REUSEPORT`` socket on ``host``:``port`` (port 0: a free
    one). The kernel hands connections only to listening sockets, so holding it costs the
    workers nothing; it keeps the port for them. Raises ``OSError`` if the port is taken."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    """Ask Linux to send this process SIGTERM when its parent (the supervisor) dies."""
    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Supervisor:
    """Runs ``settings.workers`` workers until told to stop or until they keep dying."""

    def __init__(self, settings: Settings, budget: RestartBudget | None = None) -> None:
        self.settings = settings
        self.budget = budget or RestartBudget()
        self._workers: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()

    async def run(self) -> int:
        """Start the workers and supervise them; the exit code: 0 after a stop, 1 when workers
        kept dying or the port could not be had."""
        try:
            reserved = reserve_port(self.settings.host, self.settings.port)
        except OSError as exc:
            log.error(
                "cannot listen on %s:%s: %s", self.settings.host, self.settings.port, exc.strerror
            )
            return 1
        port = int(reserved.getsockname()[1])
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        log.info(
            "supervising %d workers on http://%s:%s",
            self.settings.workers,
            self.settings.host,
            port,
            extra={"port": port, "workers": self.settings.workers},
        )
        try:
            slots = [
                asyncio.create_task(self._keep_running(index, port))
                for index in range(self.settings.workers)
            ]
            done, _ = await asyncio.wait(
                [*slots, asyncio.create_task(self._stopping.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
            gave_up = any(task in done and task.result() is False for task in slots)
            if not gave_up:
                log.info("stopping %d workers", len(slots))
            self._stopping.set()
            for task in slots:  # no replacement starts from here on
                task.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            await self._stop_all()
        finally:
            reserved.close()
        log.info("all workers stopped")
        return 1 if gave_up else 0

    async def _keep_running(self, index: int, port: int) -> bool:
        """Run worker ``index`` and replace it whenever it exits while the supervisor is not
        stopping. Returns False when the restart budget is spent."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            process = await asyncio.create_subprocess_exec(
                *worker_command(self.settings, port, index), preexec_fn=_die_with_parent
            )
            self._workers[index] = process
            log.info("worker %d started (pid %d)", index, process.pid)
            code = await process.wait()
            if self._stopping.is_set():
                break
            log.warning("worker %d (pid %d) exited with %d", index, process.pid, code)
            if not self.budget.allows_restart(loop.time()):
                log.error(
                    "workers died %d times within %.0f s; stopping",
                    self.budget.max_deaths + 1,
                    self.budget.window,
                )
                return False
            await asyncio.sleep(RESTART_PAUSE)
        return True

    async def _stop_all(self) -> None:
        """SIGTERM to every worker (each drains its connections), SIGKILL after the deadline."""
        running = [p for p in self._workers.values() if p.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        waits = [asyncio.create_task(process.wait()) for process in running]
        if not waits:
            return
        _, late = await asyncio.wait(waits, timeout=DRAIN_TIMEOUT)
        for process in running:
            if process.returncode is None:
                log.warning("worker pid %d did not stop in time; killing it", process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
