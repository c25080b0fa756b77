"""A private PostgreSQL cluster with TLS on, for the TLS tests: a free port, a temporary directory.

``PrivatePostgres`` runs Debian's ``initdb`` and ``pg_ctl`` (from ``/usr/lib/postgresql/*/bin``;
as the ``postgres`` user when the tests run as root, since PostgreSQL refuses root), makes a
self-signed certificate for ``127.0.0.1`` with ``openssl`` (also the client's ``sslrootcert``),
and accepts only TLS connections (``hostssl`` lines in ``pg_hba.conf``, trust authentication):
a connection that works is encrypted. ``set_tls(False)`` turns TLS off by a configuration
reload, for the "server without TLS" case.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]  # (no type information shipped)

from tests.support.servers import free_port
from tests.support.system_tools import (
    POSTGRES_BIN_DIRS,
    as_service_user,
    give_to_service_user,
    require_tool,
)
from tests.support.timing import timeout


def make_certificate(directory: Path, name: str, common_name: str = "127.0.0.1") -> Path:
    """A self-signed certificate ``name.crt`` (and key ``name.key``) for 127.0.0.1 and
    localhost (not 127.0.0.2); returns the certificate's path."""
    openssl = require_tool("openssl")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", f"/CN={common_name}",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=timeout(30),
    )  # fmt: skip
    return cert


class PrivatePostgres:
    """One cluster: ``start``, ``stop``, ``url``, ``set_tls``, ``fetch``."""

    def __init__(self, directory: Path) -> None:
        self.initdb = require_tool("initdb", dirs=POSTGRES_BIN_DIRS)
        self.pg_ctl = require_tool("pg_ctl", dirs=POSTGRES_BIN_DIRS)
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.certificate = make_certificate(directory, "server")
        key = directory / "server.key"
        os.chmod(key, 0o600)
        give_to_service_user(self.certificate, key)

    def url(self, query: str = "", host: str = "127.0.0.1") -> str:
        return f"postgresql://postgres@{host}:{self.port}/postgres" + (f"?{query}" if query else "")

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            as_service_user(args), capture_output=True, text=True, timeout=timeout(120), check=False
        )
        if result.returncode != 0:
            log = self.directory / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}\n{tail}")

    def start(self) -> None:
        self._run(self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                # 127.0.0.2: the same server by an address its certificate does not name.
                "listen_addresses = '127.0.0.1,127.0.0.2'\n"
                f"unix_socket_directories = '{self.directory}'\n"
                "ssl = on\n"
                f"ssl_cert_file = '{self.certificate}'\n"
                f"ssl_key_file = '{self.directory / 'server.key'}'\n"
                "fsync = off\n"
                "max_connections = 40\n"
            )
        # TLS connections only: whatever connects over TCP successfully is encrypted.
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.0/8 trust\n"
        )
        self._run(
            self.pg_ctl, "-D", str(self.data), "-l", str(self.directory / "postgres.log"),
            "-w", "-t", str(int(timeout(60))), "start",
        )  # fmt: skip

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop")

    async def fetch(self, query: str) -> list[asyncpg.Record]:
        """Run ``query`` over a TLS connection that checks the certificate."""
        context = ssl.create_default_context(cafile=str(self.certificate))
        conn = await asyncpg.connect(self.url(), ssl=context, timeout=timeout(10))
        try:
            return list(await conn.fetch(query))
        finally:
            await conn.close()

    def set_tls(self, on: bool) -> None:
        """Turn TLS on or off (``ALTER SYSTEM`` and a reload; new connections see it)."""

        async def change() -> None:
            conn = await asyncpg.connect(
                host=str(self.directory), port=self.port, user="postgres", database="postgres"
            )
            try:
                await conn.execute(f"ALTER SYSTEM SET ssl = {'on' if on else 'off'}")
                await conn.execute("SELECT pg_reload_conf()")
            finally:
                await conn.close()

        asyncio.run(change())
