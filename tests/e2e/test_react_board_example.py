"""The example React app (examples/react-board, issue 19 item 3) in Debian's Chromium.

The app depends on ``@liveboard/client`` and ``@liveboard/react`` as a user's app does on the
registry's: installed from the tarballs ``npm pack`` made (``make dist``; the example's
package.json names them and ``make test`` runs ``npm ci`` there), never linked to clients/. The
test builds it with the locked TypeScript and Vite (``tsc --noEmit && vite build``), serves the
build with ``vite preview`` on a loopback port, whose proxy (the example's vite.config.ts)
forwards ``/api`` and ``/ws`` to a real ``liveboard serve --dev``, so the page shares the API's
origin as it would behind a reverse proxy, and opens it as two users:

* both are shown present in both tabs;
* Alice's move shows at once and is marked saving while its request is held on the wire (Bob
  still sees the card where it was); let go, the mark goes when the server's event is in, and
  Bob's board shows the move;
* the server restarts (SIGTERM, then a new process on the same port and database): both badges
  leave "connected" and come back, both users are present again, and a change made through the
  API and one made in Bob's tab reach Alice.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.servers import LiveboardProcess, free_port
from tests.support.timing import timeout

try:
    from playwright.sync_api import Locator, Page, Route, expect
except ImportError:  # pragma: no cover - depends on the machine
    if os.environ.get("CI"):
        raise
    pytest.skip("the playwright package is not installed", allow_module_level=True)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "react-board"
STATIC = ROOT / "src" / "liveboard" / "web" / "static" / "liveboard.js"
HOME = Path(tempfile.gettempdir()) / "liveboard-npm-home"
WAIT_MS = timeout(15.0) * 1000
BADGE = "[data-testid=connection]"


def _env() -> dict[str, str]:
    node = Path(shutil.which("node") or "/usr/bin/node").parent
    HOME.mkdir(exist_ok=True)  # npm's cache and logs: out of the worktree and the user's home
    return {"PATH": f"{APP / 'node_modules' / '.bin'}:{node}:/usr/bin:/bin", "HOME": str(HOME)}


def _npm(args: list[str], wait: float = 120) -> str:
    result = subprocess.run(
        args,
        cwd=APP,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout(wait),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module", name="built")
def built_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The app as ``npm run build`` makes it (typecheck, then ``vite build``), into a temp dir."""
    lock = APP / "node_modules" / ".package-lock.json"
    assert lock.exists(), "run `make examples/react-board/node_modules/.package-lock.json`"
    # Installed from the packed tarballs, not linked to clients/: what a registry install gives.
    installed = json.loads(lock.read_text())["packages"]
    for name in ("client", "react"):
        entry = installed[f"node_modules/@liveboard/{name}"]
        assert re.fullmatch(rf"file:\.\./\.\./dist/liveboard-{name}-[\d.]+\.tgz", entry["resolved"])
        assert not entry.get("link")
        assert not (APP / "node_modules" / "@liveboard" / name / "src").exists()
    # ... and from this source: the client's bundle is the one the server serves (itself checked
    # against clients/js/src by tests/integration/test_js_client_package.py).
    bundle = APP / "node_modules" / "@liveboard" / "client" / "dist" / "index.js"
    assert bundle.read_bytes() == STATIC.read_bytes(), "stale tarball: run `make dist-npm`"
    out = tmp_path_factory.mktemp("react-board") / "dist"
    _npm(["npm", "run", "build", "--", "--outDir", str(out), "--logLevel", "warn"])
    assert (out / "index.html").is_file()
    return out


@pytest.fixture(name="preview")
def preview_fixture(built: Path, tmp_path: Path) -> Iterator[Callable[[LiveboardProcess], str]]:
    """``vite preview`` of the build on a loopback port, its proxy forwarding /api and /ws to
    the server (vite.config.ts): the page and the API share an origin, as behind a reverse proxy.
    """
    started: list[subprocess.Popen[bytes]] = []

    def start(server: LiveboardProcess) -> str:
        port = free_port()
        log = (tmp_path / "vite.log").open("ab")
        args = ["vite", "preview", "--outDir", str(built), "--host", "127.0.0.1"]
        process = subprocess.Popen(
            [*args, "--port", str(port), "--strictPort"],
            cwd=APP,
            env={**_env(), "LIVEBOARD_URL": server.url},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        started.append(process)
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + timeout(20)
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "vite.log").read_text()
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return url
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.05)
        raise AssertionError(f"vite preview did not answer: {(tmp_path / 'vite.log').read_text()}")

    yield start
    for process in started:
        process.kill()
        process.wait(timeout=10)


def _open(context: BrowserContext, url: str, user: str) -> Page:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{url}?user={user}")
    expect(page.locator(BADGE)).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    expect(page.locator("[data-testid=card]")).to_have_count(12, timeout=WAIT_MS)
    return page


def _column(page: Page, status: str) -> Locator:
    return page.locator(f"[data-testid=column][data-status={status}]")


def _card(scope: Page | Locator, title: str) -> Locator:
    return scope.locator("[data-testid=card]", has_text=title)


def _avatar(page: Page, user: str) -> Locator:
    return page.locator(f"[data-testid=presence] [data-user-id={user}]")


def _api(server: LiveboardProcess, path: str, body: Any = None, user: str = "carol") -> Any:
    with urllib.request.urlopen(f"{server.url}/api/dev/token?user={user}", timeout=10) as r:
        token = json.loads(r.read())["token"]
    request = urllib.request.Request(
        f"{server.url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def test_two_users_move_cards_see_each_other_and_come_back_after_a_restart(
    browser: Browser,
    preview: Callable[[LiveboardProcess], str],
    server_factory: Callable[..., LiveboardProcess],
    tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'board.db'}"
    server = server_factory(dev=True, database_url=database_url)
    contexts = [browser.new_context(viewport={"width": 1280, "height": 800}) for _ in range(2)]
    try:
        url = preview(server)
        held: list[Route] = []  # Alice's moves, kept on the wire until the test lets them go

        def hold(route: Route) -> None:
            held.append(route)

        contexts[0].route("**/api/tasks/*/move", hold)
        alice = _open(contexts[0], url, "alice")
        bob = _open(contexts[1], url, "bob")

        # Presence: both users in both tabs.
        for page in (alice, bob):
            expect(_avatar(page, "alice")).to_have_text("Alice Martin", timeout=WAIT_MS)
            expect(_avatar(page, "bob")).to_have_text("Bob Okafor", timeout=WAIT_MS)

        # An optimistic move: shown at once, marked saving, while the request has not left.
        title = "Review pricing copy"
        _card(_column(alice, "todo"), title).get_by_role("button", name="Move right").click()
        moved = _card(_column(alice, "in_progress"), title)
        expect(moved).to_have_attribute("data-pending", "true", timeout=WAIT_MS)
        expect(_card(_column(alice, "todo"), title)).to_have_count(0)
        # The card is marked before the route handler runs: Playwright calls it when it next
        # dispatches the page's events, so give it the chance (the request itself is held).
        for _ in range(int(WAIT_MS // 50)):
            if held:
                break
            alice.wait_for_timeout(50)
        assert len(held) == 1, "the move's request is on the wire, unanswered"
        expect(_card(_column(bob, "todo"), title)).to_have_count(1)  # not on the server yet
        # Confirmed: the request goes through; the mark goes once the server's event is in.
        held[0].continue_()
        contexts[0].unroute("**/api/tasks/*/move", hold)
        expect(moved).to_have_attribute("data-pending", "false", timeout=WAIT_MS)
        expect(_card(_column(bob, "in_progress"), title)).to_have_count(1, timeout=WAIT_MS)
        expect(_card(_column(bob, "todo"), title)).to_have_count(0)

        # A graceful restart (SIGTERM: sockets closed with 1012), a new process on the same port.
        assert server.terminate() == 0
        for page in (alice, bob):
            expect(page.locator(BADGE)).not_to_have_attribute(
                "data-state", "connected", timeout=WAIT_MS
            )
        restarted = server_factory(dev=True, database_url=database_url, port=server.port)
        for page in (alice, bob):
            expect(page.locator(BADGE)).to_have_attribute(
                "data-state", "connected", timeout=WAIT_MS
            )
            expect(_avatar(page, "alice")).to_be_visible(timeout=WAIT_MS)
            expect(_avatar(page, "bob")).to_be_visible(timeout=WAIT_MS)

        # Live again, resubscribed: a move through the API and one in Bob's tab reach Alice.
        other = "Set up the status page"
        task_id = _card(alice, other).get_attribute("data-task-id")
        _api(restarted, f"/api/tasks/{task_id}/move", {"toStatus": "done"})
        for page in (alice, bob):
            expect(_card(_column(page, "done"), other)).to_have_count(1, timeout=WAIT_MS)
        _card(_column(bob, "in_progress"), title).get_by_role("button", name="Move right").click()
        expect(_card(_column(alice, "done"), title)).to_have_count(1, timeout=WAIT_MS)
        expect(alice.locator("[data-testid=card]")).to_have_count(12)

        for page in (alice, bob):
            assert page.errors == [], page.errors  # type: ignore[attr-defined]
    finally:
        for context in contexts:
            context.close()
