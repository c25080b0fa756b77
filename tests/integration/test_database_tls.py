"""TLS to PostgreSQL with libpq's ``sslmode``: a private cluster with a self-signed certificate.

The cluster (``tests.support.private_postgres``) accepts TLS connections only, so a command
that works against it was encrypted. Real ``liveboard serve`` and ``liveboard migrate``
processes; a failure is one line on stderr and exit 1, without retries (one line: no
"retrying" warnings before it).

Needs Debian's PostgreSQL server binaries and ``openssl`` (``.ci/run`` installs them): skipped
without them, failed under CI.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.board import Board
from tests.support.private_postgres import PrivatePostgres, make_certificate
from tests.support.servers import ROOT, LiveboardProcess
from tests.support.system_tools import service_directory
from tests.support.timing import timeout
from tests.support.tokens import TEST_SECRET

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivatePostgres]:
    with service_directory("liveboard-tls-") as directory:
        postgres = PrivatePostgres(directory)
        try:
            postgres.start()
            yield postgres
        finally:
            postgres.stop()


def migrate(database_url: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """``liveboard migrate`` against ``database_url`` (waiting up to 30 s for a reachable one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEBOARD_", "PGSSL"))}
    env.update(LIVEBOARD_DATABASE_URL=database_url, LIVEBOARD_DB_WAIT="30", **extra)
    return subprocess.run(
        [sys.executable, "-m", "liveboard", "migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout(120),
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert " ERROR liveboard: " in lines[0]
    return lines[0]


async def test_serve_with_sslmode_require_is_encrypted(
    cluster: PrivatePostgres, tmp_path: Path
) -> None:
    server = LiveboardProcess(
        database_url=cluster.url("sslmode=require&application_name=liveboard-tls"),
        log_path=tmp_path / "server.log",
        env={"LIVEBOARD_JWT_SECRET": TEST_SECRET},
    )
    server.start()
    try:
        async with Board(server) as board:
            owner = board.user("owner")
            _, pid = await board.board(owner)
            await board.task(owner, pid, "Over TLS")
            assert [t["title"] for t in (await board.snapshot(owner, pid))["tasks"]] == ["Over TLS"]
        rows = await cluster.fetch(
            "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
            " WHERE a.application_name = 'liveboard-tls'"
        )
        assert rows, "liveboard's pooled connections are not there"
        assert all(row["ssl"] for row in rows)
        assert all(row["version"].startswith("TLS") for row in rows)
    finally:
        assert server.terminate() == 0


def test_verify_full_with_the_servers_certificate_as_root(cluster: PrivatePostgres) -> None:
    url = cluster.url(f"sslmode=verify-full&sslrootcert={cluster.certificate}")
    result = migrate(url)
    assert result.returncode == 0, result.stderr
    assert "applied migrations" in result.stdout or "up to date" in result.stdout


def test_verify_full_with_another_root_fails_at_once(
    cluster: PrivatePostgres, tmp_path: Path
) -> None:
    other = make_certificate(tmp_path, "other-ca")
    line = one_error_line(migrate(cluster.url(f"sslmode=verify-full&sslrootcert={other}")))
    assert "cannot use the database" in line
    assert "certificate verify failed" in line


def test_verify_full_without_a_root_certificate_fails_at_once(
    cluster: PrivatePostgres, tmp_path: Path
) -> None:
    """No ``sslrootcert`` and no ``~/.postgresql/root.crt`` (libpq's default place)."""
    line = one_error_line(migrate(cluster.url("sslmode=verify-full"), HOME=str(tmp_path)))
    assert f'root certificate file "{tmp_path}/.postgresql/root.crt" does not exist' in line


def test_verify_full_by_a_name_the_certificate_does_not_carry(cluster: PrivatePostgres) -> None:
    """The certificate names 127.0.0.1 and localhost; the cluster listens on 127.0.0.2 too."""
    url = cluster.url(f"sslmode=verify-full&sslrootcert={cluster.certificate}", host="127.0.0.2")
    line = one_error_line(migrate(url))
    assert "certificate verify failed: IP address mismatch" in line
    # verify-ca checks the chain only, as libpq's does: the same address is accepted.
    url = cluster.url(f"sslmode=verify-ca&sslrootcert={cluster.certificate}", host="127.0.0.2")
    assert migrate(url).returncode == 0


def test_sslmode_disable_is_refused_by_the_tls_only_cluster(cluster: PrivatePostgres) -> None:
    """The control: without TLS this cluster refuses the connection (``hostssl`` only)."""
    line = one_error_line(migrate(cluster.url("sslmode=disable")))
    assert "no encryption" in line


def test_sslmode_require_against_a_server_without_tls_fails_with_one_line(
    cluster: PrivatePostgres,
) -> None:
    cluster.set_tls(False)
    try:
        line = one_error_line(migrate(cluster.url("sslmode=require")))
    finally:
        cluster.set_tls(True)
    assert "rejected SSL upgrade" in line
    assert asyncio.run(cluster.fetch("SELECT 1"))  # TLS is back for the other tests
