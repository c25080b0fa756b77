"""A private PgBouncer in transaction pooling mode, in front of the test PostgreSQL server.

``PgBouncer`` writes an ini file (``pool_mode = transaction``, trust authentication, every
database forwarded to ``127.0.0.1:5432``) in a directory of its own, starts Debian's
``pgbouncer`` on a free port (as the ``postgres`` user when the tests run as root: PgBouncer
refuses root) and waits until the port accepts connections. ``url_for`` turns a PostgreSQL URL
of the test server into the same database through this PgBouncer.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.support.servers import free_port
from tests.support.system_tools import as_service_user, give_to_service_user, require_tool

READY_TIMEOUT = 10.0


class PgBouncer:
    """One ``pgbouncer`` process; ``start`` and ``stop``."""

    def __init__(self, directory: Path, *, server_pool_size: int = 5) -> None:
        self.executable = require_tool("pgbouncer")
        self.directory = directory
        self.port = free_port()
        self.server_pool_size = server_pool_size
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "pgbouncer.log"

    def url_for(self, postgres_url: str) -> str:
        """``postgres_url`` (a database on 127.0.0.1:5432) through this PgBouncer."""
        parts = urlsplit(postgres_url)
        user = parts.username or "postgres"
        return urlunsplit((parts.scheme, f"{user}@127.0.0.1:{self.port}", parts.path, "", ""))

    def start(self) -> None:
        userlist = self.directory / "userlist.txt"
        userlist.write_text('"postgres" ""\n')
        ini = self.directory / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            "* = host=127.0.0.1 port=5432\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {userlist}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.server_pool_size}\n"
            "max_client_conn = 500\n"
            f"logfile = {self.log_path}\n"
            f"pidfile = {self.directory / 'pgbouncer.pid'}\n"
        )
        give_to_service_user(userlist, ini)
        self.process = subprocess.Popen(
            as_service_user([self.executable, str(ini)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._accepts():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pgbouncer did not start on port {self.port}:\n{self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def _accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # runuser passes SIGTERM on to pgbouncer
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
