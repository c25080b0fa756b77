"""Debian tools the database-connection tests run: found, required in CI, run as a non-root user.

``require_tool`` finds an executable (on ``PATH`` or in the given directories); when it is
missing the test is skipped on a developer's machine and fails under CI (``CI=true``), where
``.ci/run`` installs it. PostgreSQL's ``initdb``/``postgres`` and ``pgbouncer`` refuse to run
as root: ``as_service_user`` prefixes a command with ``runuser -u postgres --`` when the tests
run as root (CI does), and ``service_directory`` makes a temporary directory that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

#: The user the services run as when the tests run as root (Debian's PostgreSQL packages make it).
SERVICE_USER = "postgres"
POSTGRES_BIN_DIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)


def require_tool(name: str, *, dirs: Sequence[str] = ()) -> str:
    """The path of ``name``; skips the test (fails it under ``CI=true``) when it is missing."""
    for directory in dirs:
        candidate = Path(directory) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found:
        return found
    message = f"{name} is not installed (Debian: apt-get install -y {_PACKAGES.get(name, name)})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


_PACKAGES = {"initdb": "postgresql", "pg_ctl": "postgresql", "postgres": "postgresql"}


def running_as_root() -> bool:
    return os.geteuid() == 0


def as_service_user(command: Sequence[str]) -> list[str]:
    """``command`` run as ``SERVICE_USER`` when we are root, else as ourselves."""
    if not running_as_root():
        return list(command)
    runuser = require_tool("runuser")
    return [runuser, "-u", SERVICE_USER, "--", *command]


@contextmanager
def service_directory(prefix: str) -> Iterator[Path]:
    """A new temporary directory the service user may write (removed on exit)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        if running_as_root():
            try:
                user = pwd.getpwnam(SERVICE_USER)
            except KeyError:
                pytest.fail(f"running as root needs a {SERVICE_USER!r} user to run the services")
            os.chown(path, user.pw_uid, user.pw_gid)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def give_to_service_user(*paths: Path) -> None:
    """Make files written by us (root) belong to the service user."""
    if running_as_root():
        user = pwd.getpwnam(SERVICE_USER)
        for path in paths:
            os.chown(path, user.pw_uid, user.pw_gid)
