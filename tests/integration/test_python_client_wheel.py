"""The Python client as users install it: its wheels in a fresh virtualenv (issue 19 item 5).

The wheels are built exactly as ``make dist`` builds them (``tools.dist_python``) and installed
into an empty virtualenv together with the part of requirements.lock their declared
dependencies need (hashes required), nothing else: no SQLAlchemy, asyncpg, redis, no server.
``uv pip check`` there proves the wheels declare nothing more. Then, from an empty directory
(so the repository's ``src`` is not importable):

* every module of ``liveboard.client`` and ``liveboard.protocol`` imports, from the virtualenv,
  and none of sqlalchemy, asyncpg, redis is importable or imported;
* ``python_client_app.py`` type-checks with ``mypy --strict`` against the installed wheels
  (their ``py.typed``), and runs against a real ``liveboard serve`` on PostgreSQL with Redis:
  a service key's own ids and ``publish``, a user's workspaces, members and projects, tasks,
  ``ready()``, a custom event delivered in order, history, and ``Revoked`` on removal.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from tests.support.postgres import fresh_postgres_database
from tests.support.redis_server import RedisServer
from tests.support.servers import LiveboardProcess
from tests.support.timing import timeout
from tests.support.tokens import make_token, unique
from tools.dist_python import build_wheels, client_requirements, wheel_requirements

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

APP = Path(__file__).with_name("python_client_app.py")
UV = Path(sys.executable).with_name("uv")
API_KEY = "wheel-test-service-key-0123456789"
SERVER_DEPENDENCIES = ("sqlalchemy", "asyncpg", "redis")


def run(args: list[str | Path], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command outside this virtualenv: the machine's environment (uv's index and
    certificates come from it) without anything that puts the repository on Python's path."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "CONDA_PREFIX")
    base = {k: v for k, v in os.environ.items() if k not in dropped}
    base.update(env)
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=base,
        capture_output=True,
        text=True,
        timeout=timeout(120),
        check=False,
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module", name="wheels")
def wheels_fixture(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return build_wheels(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module", name="venv_python")
def venv_python_fixture(wheels: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheels and what they declare, from the lock, only."""
    where = tmp_path_factory.mktemp("client_venv")
    venv = where / "venv"
    run([UV, "--quiet", "venv", "--python", sys.executable, venv], where)
    python = venv / "bin" / "python"
    requirements = where / "requirements.txt"
    requirements.write_text(client_requirements(wheels))
    install: list[str | Path] = [UV, "--quiet", "pip", "install", "--python", python]
    run([*install, "--require-hashes", "-r", requirements], where)
    run([*install, "--no-deps", "--no-index", *wheels], where)
    run([UV, "--quiet", "pip", "check", "--python", python], where)
    return python


def test_the_wheels_declare_only_the_protocol_aiohttp_and_msgspec(wheels: list[Path]) -> None:
    protocol, client = wheels
    assert {canonicalize_name(r.name) for r in wheel_requirements(protocol)} == {"msgspec"}
    assert {canonicalize_name(r.name) for r in wheel_requirements(client)} == {
        "liveboard-protocol",
        "aiohttp",
        "msgspec",
    }
    for wheel, package in ((protocol, "liveboard/protocol/"), (client, "liveboard/client/")):
        with zipfile.ZipFile(wheel) as archive:
            files = [n for n in archive.namelist() if ".dist-info/" not in n]
        # No liveboard/__init__.py: `liveboard` stays the server's, or a namespace without it.
        assert files, wheel
        assert all(n.startswith(package) for n in files), files
        assert f"{package}py.typed" in files
        # The same bytes as the sources the server runs: one copy of the source.
        source = Path(__file__).resolve().parents[2] / "src"
        with zipfile.ZipFile(wheel) as archive:
            for name in files:
                assert archive.read(name) == (source / name).read_bytes(), name


def test_importing_the_client_imports_no_server_dependency(
    venv_python: Path, tmp_path: Path
) -> None:
    probe = f"""
import importlib, importlib.util, json, pkgutil, sys
import liveboard.client, liveboard.protocol
names = []
for package in (liveboard.client, liveboard.protocol):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
        names.append(info.name)
print(json.dumps({{
    "client_file": liveboard.client.__file__,
    "modules": names,
    "loaded": sorted(m for m in {SERVER_DEPENDENCIES!r} if m in sys.modules),
    "installed": sorted(m for m in {SERVER_DEPENDENCIES!r} if importlib.util.find_spec(m)),
    "server": importlib.util.find_spec("liveboard.app") is not None,
}}))
"""
    seen = json.loads(run([venv_python, "-c", probe], tmp_path).stdout)
    assert seen["client_file"].startswith(str(venv_python.parents[1])), seen
    assert "liveboard.client.board" in seen["modules"]
    assert "liveboard.client.service" in seen["modules"]
    assert "liveboard.protocol.events" in seen["modules"]
    assert seen["loaded"] == []
    assert seen["installed"] == []
    assert seen["server"] is False
    # The console script of the client alone.
    usage = run([venv_python.with_name("liveboard-tail"), "--help"], tmp_path).stdout
    assert "--room" in usage


def test_an_app_type_checks_against_the_installed_wheels(venv_python: Path, tmp_path: Path) -> None:
    shutil.copy(APP, tmp_path / "app.py")
    mypy = Path(sys.executable).with_name("mypy")
    # The virtualenv's site-packages are the only place liveboard.client can come from.
    args: list[str | Path] = [
        "--strict",
        "--python-executable",
        venv_python,
        "--config-file",
        os.devnull,
    ]
    result = run([mypy, *args, "--cache-dir", tmp_path / "cache", "app.py"], tmp_path)
    assert "Success" in result.stdout


@pytest.fixture(scope="module", name="server")
def server_fixture(
    postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveboardProcess]:
    directory = tmp_path_factory.mktemp("wheel_server")
    with (
        fresh_postgres_database(postgres_server_url, prefix="liveboard_wheel") as database,
        RedisServer(directory) as redis,
    ):
        process = LiveboardProcess(
            database_url=database,
            log_path=directory / "server.log",
            env={"LIVEBOARD_REDIS_URL": redis.url, "LIVEBOARD_API_KEYS": API_KEY},
        ).start()
        yield process
        process.kill()


def test_the_installed_client_against_a_live_server(
    venv_python: Path, server: LiveboardProcess, tmp_path: Path
) -> None:
    shutil.copy(APP, tmp_path / "app.py")
    tag = unique("wheel")
    args = [server.url, API_KEY, make_token("alice"), make_token("bob"), tag]
    seen: dict[str, Any] = json.loads(run([venv_python, "app.py", *args], tmp_path).stdout)

    assert seen["server_modules_loaded"] == []
    assert seen["put_workspace_again_same"] is True
    assert seen["project"] == [f"prj_{tag}", ["todo", "done"]]
    assert f"ws_{tag}" in seen["alice_workspaces"]
    assert seen["alice_projects"] == [f"prj_{tag}"]
    assert seen["bob_role"] == "member"
    assert seen["members"] == [["alice", "admin"], ["bob", "member"]]
    assert seen["own_project_in_own_workspace"] is True
    # The task's event, then the published one right after it, by a key (no user).
    (created, created_offset, alice), (custom, custom_offset, nobody) = seen["events"]
    assert (created, alice) == ("task:created", "alice")
    assert (custom, nobody) == ("wheel:hello", None)
    assert custom_offset == created_offset + 1
    assert seen["positions"] == [created_offset, custom_offset]
    assert seen["task_event_data_id"] is True
    assert seen["custom_data"] == {"n": 1}
    assert seen["publish_repeat_same"] is True  # the idempotency key: published once
    assert seen["history"][-2:] == [
        ["task:created", created_offset],
        ["wheel:hello", custom_offset],
    ]
    assert seen["history_head"] == custom_offset
    assert seen["bob_items_end"] == ["Revoked"]
    assert seen["bob_revoked"] is True
    assert seen["ready_after_revoked"] == "ClientClosedError"
