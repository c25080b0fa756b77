"""The npm package ``@liveboard/client`` (clients/js, issue 19 item 1), as built and as installed.

- The server's ``/static/liveboard.js`` is the package's bundle, committed (the Python package
  must install without Node): rebuilt here from clients/js/src with the pinned esbuild, it is
  byte for byte the committed file, so a change to the source without ``npm run build:static``
  fails.
- ``npm test``'s parts run: ``test:unit`` (the Board's pure logic under ``node --test``) and
  ``test:live`` (two users' boards, reference-counted subscriptions, acknowledged presence,
  ``history()``, an aborted ``Board.start``, the frozen snapshot) against a real
  ``liveboard serve --dev``. Its ``typecheck`` is tests/integration/test_protocol_typescript.py
  (which also checks that misuses fail to compile), so tsc runs once per file set.
- ``npm test`` of clients/react (issue 19 item 2): its typecheck, then Vitest with
  @testing-library/react rendering ``useBoard``, ``usePresence`` and ``useConnectionState``
  under StrictMode against the same live server.
- ``npm pack`` (what ``make dist`` runs) makes a tarball that installs into an empty project
  with no network (the package has no dependencies); the same live test passes importing
  ``@liveboard/client`` from there, and the installed type declarations type-check a consumer
  under the pinned tsc (a misspelt event name fails).

Node and the pinned toolchain come from clients/js/package-lock.json (``npm ci``, which
``make test`` runs).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import LiveboardProcess
from tests.support.timing import timeout

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "clients" / "js"
BIN = JS / "node_modules" / ".bin"
STATIC = ROOT / "src" / "liveboard" / "web" / "static" / "liveboard.js"
REACT = ROOT / "clients" / "react"


HOME = Path(tempfile.gettempdir()) / "liveboard-npm-home"


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, wait: float = 120
) -> subprocess.CompletedProcess[str]:
    assert (BIN / "esbuild").exists(), "run `make clients/js/node_modules` (npm ci) first"
    base = {"PATH": f"{Path(shutil.which('node') or '/usr/bin/node').parent}:/usr/bin:/bin"}
    # npm writes its cache and logs under HOME: out of the worktree, and away from the user's.
    HOME.mkdir(exist_ok=True)
    base["HOME"] = str(HOME)
    return subprocess.run(
        args,
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout(wait),
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def passed(tap: str) -> None:
    """A ``node --test`` report with tests and no failure."""
    assert "# fail 0" in tap, tap
    assert "# pass 0" not in tap, tap


@pytest.fixture(scope="module", name="server")
def server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveboardProcess]:
    directory = tmp_path_factory.mktemp("js_client")
    process = LiveboardProcess(
        database_url=f"sqlite:///{directory / 'liveboard.db'}",
        log_path=directory / "server.log",
        dev=True,
    ).start()
    yield process
    process.kill()


@pytest.fixture(scope="module", name="tarball")
def tarball_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``npm pack`` (its ``prepack`` builds dist/: the esbuild bundle and tsc's declarations)."""
    out = tmp_path_factory.mktemp("pack")
    ok(run(["npm", "pack", "--pack-destination", str(out)], JS))
    [tarball] = out.glob("liveboard-client-*.tgz")
    return tarball


def test_the_served_bundle_is_the_packages_build(tmp_path: Path) -> None:
    built = tmp_path / "liveboard.js"
    ok(run(["node", "scripts/build.mjs", "--out", str(built)], JS))
    assert built.read_bytes() == STATIC.read_bytes(), (
        "src/liveboard/web/static/liveboard.js is stale: run `npm run build:static` in clients/js"
    )


def test_unit_and_live_tests_pass(server: LiveboardProcess, tarball: Path) -> None:
    assert tarball.is_file()  # dist/ is built
    unit = ok(run(["npm", "run", "test:unit"], JS))
    passed(unit)
    live = ok(run(["npm", "run", "test:live"], JS, {"LIVEBOARD_URL": server.url}))
    passed(live)


CONSUMER = """\
import { Board, LiveboardClient } from "@liveboard/client";
import type { BoardSnapshot, RoomEvent } from "@liveboard/client";

const client = new LiveboardClient({ token: "jwt", baseUrl: "https://lb.example" });
const sub = client.subscribe<{ "comment:added": { body: string } }>("project:p1");
sub.onEvent("task:moved", (e) => void e.data.toStatus);
sub.onEvent("comment:added", (e) => void e.data.body);
sub.on("event", (e: RoomEvent) => void e.offset);
const board = new Board(client, "p1");
const snapshot: BoardSnapshot = board.getSnapshot();
void [snapshot.version, board.start({ signal: new AbortController().signal })];
"""


def test_the_packed_tarball_installs_and_works(
    server: LiveboardProcess, tarball: Path, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "private": true, "type": "module"}\n')
    ok(run(["npm", "install", "--offline", "--no-audit", "--no-fund", str(tarball)], app))
    installed = app / "node_modules" / "@liveboard" / "client"
    assert (installed / "dist" / "index.js").read_bytes() == STATIC.read_bytes()
    assert not (installed / "src").exists()

    test = app / "client.live.test.js"
    shutil.copy(JS / "test" / "live" / "client.live.test.js", test)
    env = {"LIVEBOARD_URL": server.url, "LIVEBOARD_CLIENT_MODULE": "@liveboard/client"}
    live = ok(run(["node", "--experimental-websocket", "--test", str(test)], app, env))
    passed(live)

    # Its declarations, found through the package's `exports`, type an app's code.
    flags = ["--noEmit", "--strict", "--module", "esnext", "--moduleResolution", "bundler"]
    flags += ["--target", "es2022", "--lib", "es2022,dom", "--pretty", "false"]
    (app / "consumer.ts").write_text(CONSUMER)
    (app / "wrong.ts").write_text(CONSUMER.replace('"task:moved"', '"task:move"'))
    checked = run([str(BIN / "tsc"), *flags, "consumer.ts", "wrong.ts"], app)
    errors = re.findall(r"^(\S+)\((\d+),\d+\): error (TS\d{4})", checked.stdout, re.M)
    # Only the misspelt event name fails ("task:move": TS2345, and its handler's use of it).
    assert {(file, line) for file, line, _ in errors} == {("wrong.ts", "6")}, checked.stdout
    assert ("wrong.ts", "6", "TS2345") in errors, checked.stdout


def test_the_react_hooks_pass_their_tests_against_the_live_server(server: LiveboardProcess) -> None:
    assert (REACT / "node_modules" / ".bin" / "vitest").exists(), "run `make test` (npm ci)"
    out = ok(run(["npm", "test"], REACT, {"LIVEBOARD_URL": server.url}))
    assert "Tests  2 passed (2)" in out, out
