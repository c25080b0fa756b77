"""The demo board as its users saw it (issue 19, item 6), in Debian's Chromium through Playwright.

* On a 390 px phone the top bar fits (nothing wider than the screen, the project's name whole,
  at its full size, with three people present), the Activity panel is there, under the board,
  already filled from the room's history, and a card held then dragged with a finger moves.
* While the server cannot be reached, the board says so and when it tries again ("Can't reach
  the server — retrying in N s") in amber, not a red "Offline", and "Retry now" reconnects at
  once; a browser without network is "Offline".
* After a graceful restart (SIGTERM: every socket closed with 1012) tabs are back within the
  client's restart delay (at most 1.5 s) of the new server answering, never "offline".

``LIVEBOARD_E2E_SCREENSHOTS=DIR`` saves the board at 1366 px and 390 px wide into DIR
(``board-1366.png``, ``board-390.png``: that is how docs/ gets them).
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.test_board import STATE, WAIT_MS, _card, _column, _dev_token, _get_json
from tests.support.servers import LiveboardProcess
from tests.support.tcp_proxy import ProxyThread
from tests.support.timing import timeout

try:
    from playwright.sync_api import Page, expect
except ImportError:  # pragma: no cover - depends on the machine
    if os.environ.get("CI"):
        raise
    pytest.skip("the playwright package is not installed", allow_module_level=True)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, CDPSession

pytestmark = pytest.mark.slow

PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
DESKTOP: dict[str, Any] = {"viewport": {"width": 1366, "height": 800}}
BANNER = "[data-testid=connection-banner-text]"
RETRY = "[data-testid=retry-now]"
LABEL = "#connection-label"


def _open(context: BrowserContext, url: str, user: str, query: str = "") -> Page:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{url}/?user={user}{query}")
    expect(page.locator(STATE)).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    expect(page.locator("[data-testid=task-card]")).to_have_count(12, timeout=WAIT_MS)
    return page


def _project(server: LiveboardProcess, token: str) -> dict[str, Any]:
    workspace = _get_json(f"{server.url}/api/workspaces", token=token)[0]
    project: dict[str, Any] = _get_json(
        f"{server.url}/api/workspaces/{workspace['id']}/projects", token=token
    )[0]
    return project


def _tasks(server: LiveboardProcess, project_id: str, token: str) -> dict[str, dict[str, Any]]:
    tasks = _get_json(f"{server.url}/api/projects/{project_id}/tasks", token=token)["tasks"]
    return {t["title"]: t for t in tasks}


# What overflows the top bar, how the project's name is drawn (run in the page).
LAYOUT = """() => {
  const width = document.documentElement.clientWidth;
  const outside = [...document.querySelectorAll(".topbar *, .conn-banner *")]
    .filter((el) => {
      const r = el.getBoundingClientRect();
      return r.width > 1 && (r.left < -0.5 || r.right > width + 0.5);
    })
    .map((el) => el.id || el.className);
  const bar = document.querySelector(".topbar");
  const name = document.getElementById("project-name");
  const activity = document.getElementById("activity").getBoundingClientRect();
  return {
    width,
    pageWidth: document.documentElement.scrollWidth,
    bar: [bar.scrollWidth, bar.clientWidth],
    outside,
    name: {
      text: name.textContent,
      width: name.getBoundingClientRect().width,
      cut: name.scrollWidth > name.clientWidth,
      fontSize: parseFloat(getComputedStyle(name).fontSize),
    },
    activityWidth: activity.width,
  };
}"""


class Finger:
    """One finger on the screen, through Chromium's input pipeline (CDP touch events), so the
    browser scrolls or not exactly as it would for a person."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.cdp: CDPSession = page.context.new_cdp_session(page)
        self.x = self.y = 0.0

    def _send(self, kind: str) -> None:
        points = [] if kind == "touchEnd" else [{"x": self.x, "y": self.y}]
        self.cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

    def down(self, x: float, y: float) -> None:
        self.x, self.y = x, y
        self._send("touchStart")

    def move(self, x: float, y: float, steps: int = 8) -> None:
        x0, y0 = self.x, self.y
        for i in range(1, steps + 1):
            self.x, self.y = x0 + (x - x0) * i / steps, y0 + (y - y0) * i / steps
            self._send("touchMove")
            self.page.wait_for_timeout(16)

    def up(self) -> None:
        self._send("touchEnd")


def test_on_a_phone_the_header_fits_activity_has_history_and_a_finger_drags_a_card(
    browser: Browser,
    server_factory: Callable[..., LiveboardProcess],
    tmp_path: Path,
) -> None:
    server = server_factory(dev=True, database_url=f"sqlite:///{tmp_path / 'board.db'}")
    # History made before anyone opens the board: Carol moves a card and renames another.
    carol_token = _dev_token(server, "carol")
    project = _project(server, carol_token)
    tasks = _tasks(server, project["id"], carol_token)
    moved, renamed = tasks["Review pricing copy"], tasks["Pick the hero image"]
    _get_json(
        f"{server.url}/api/tasks/{moved['id']}/move", token=carol_token, body={"toStatus": "done"}
    )
    request = f"{server.url}/api/tasks/{renamed['id']}"
    _patch(request, carol_token, {"title": "Pick the hero photo", "version": renamed["version"]})

    contexts = [browser.new_context(**PHONE), browser.new_context(**DESKTOP)]
    contexts.append(browser.new_context(**PHONE))
    try:
        alice = _open(contexts[0], server.url, "alice")
        bob = _open(contexts[1], server.url, "bob")
        _open(contexts[2], server.url, "carol")
        for user in ("alice", "bob", "carol"):
            avatar = alice.locator(f"[data-testid=presence-avatar][data-user-id={user}]")
            expect(avatar).to_be_visible(timeout=WAIT_MS)

        # The Activity panel, under the board, with what happened before the page opened.
        items = alice.locator("[data-testid=activity-item]")
        expect(
            items.filter(has_text="Carol Chen moved “Review pricing copy” to Done")
        ).to_have_count(1, timeout=WAIT_MS)
        expect(
            items.filter(
                has_text="Carol Chen renamed “Pick the hero image” to “Pick the hero photo”"
            )
        ).to_have_count(1)
        assert items.count() >= 12  # and the seeded cards' creation
        expect(alice.locator("#activity-empty")).to_be_hidden()
        # Its help speaks of touch on a touch screen, of keys elsewhere.
        expect(alice.locator(".help-touch")).to_be_visible()
        expect(alice.locator(".help-keys")).to_be_hidden()
        expect(bob.locator(".help-keys")).to_be_visible()

        layout = alice.evaluate(LAYOUT)
        assert layout["width"] == 390
        assert layout["pageWidth"] <= 390, layout
        assert layout["bar"][0] <= layout["bar"][1], layout
        assert layout["outside"] == [], layout
        assert layout["name"]["text"] == project["name"]
        assert not layout["name"]["cut"], layout  # the whole name, not "W…"
        assert layout["name"]["fontSize"] >= 16, layout
        assert layout["name"]["width"] >= 100, layout
        assert layout["activityWidth"] >= 300, layout

        first = _card(_column(alice, "todo"), "Write the launch announcement")
        finger = Finger(alice)
        # Held, then dragged to the right edge (the board scrolls), then let go over the next
        # column: the card moves there, in this tab, on the server and in Bob's.
        box = first.bounding_box()
        assert box is not None
        finger.down(box["x"] + box["width"] / 2, box["y"] + 20)
        alice.wait_for_timeout(500)
        expect(alice.locator(".drag-ghost")).to_have_count(1)
        finger.move(378, box["y"] + 40)
        deadline = time.monotonic() + timeout(5.0)
        while alice.evaluate("document.getElementById('board').scrollLeft") < 150:
            assert time.monotonic() < deadline, "the board did not scroll under the finger"
            alice.wait_for_timeout(20)
        finger.move(200, box["y"] + 40, steps=4)
        target = alice.evaluate(
            "([x, y]) => document.elementFromPoint(x, y).closest('.column').dataset.status",
            [200, box["y"] + 40],
        )
        assert target in ("in_progress", "done")
        finger.up()
        title = "Write the launch announcement"
        expect(_card(_column(alice, target), title)).to_have_count(1, timeout=WAIT_MS)
        expect(_card(_column(alice, "todo"), title)).to_have_count(0)
        expect(alice.locator(".drag-ghost")).to_have_count(0)
        expect(_card(_column(bob, target), title)).to_have_count(1, timeout=WAIT_MS)
        expect(_card(alice, title)).to_have_attribute("data-pending", "false", timeout=WAIT_MS)
        assert _tasks(server, project["id"], carol_token)[title]["status"] == target
        # No click came out of the drag (it would have opened the title's editor).
        expect(alice.locator("[data-testid=task-title-input]")).to_have_count(0)

        shots = os.environ.get("LIVEBOARD_E2E_SCREENSHOTS")
        if shots:
            for page, name in ((bob, "board-1366.png"), (alice, "board-390.png")):
                page.evaluate(
                    "window.scrollTo(0, 0); document.getElementById('board').scrollLeft = 0"
                )
                if page is bob:  # (on the phone a mouse would turn it into a hover device)
                    page.mouse.move(0, 0)
                page.wait_for_timeout(2000)  # the highlight of the last change fades
                if page is alice:
                    # The phone's whole page: the Activity panel is under the board. (Not with
                    # full_page: Chromium draws that as a device that hovers.)
                    height = page.evaluate("document.documentElement.scrollHeight")
                    page.set_viewport_size({"width": 390, "height": height})
                    page.wait_for_timeout(300)
                page.screenshot(path=str(Path(shots) / name))

        for page in (alice, bob):
            assert page.errors == [], page.errors  # type: ignore[attr-defined]
    finally:
        for context in contexts:
            context.close()


def _patch(url: str, token: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


# Records, in the page, every state the indicator shows and when it is connected again.
WATCH = """() => {
  const el = document.querySelector("[data-testid=connection-status]");
  window.seen = [];
  window.backAt = null;
  new MutationObserver(() => {
    const label = document.getElementById("connection-label").textContent;
    window.seen.push(el.dataset.state + "/" + label);
    if (el.dataset.state === "connected" && window.seen.length > 1 && window.backAt === null) {
      window.backAt = Date.now();
    }
  }).observe(el, { attributes: true, subtree: true, childList: true, characterData: true });
}"""


def test_the_board_says_why_it_is_disconnected_and_comes_back_soon_after_a_restart(
    browser: Browser,
    server_factory: Callable[..., LiveboardProcess],
    tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'board.db'}"
    server = server_factory(dev=True, database_url=database_url)
    proxy = ProxyThread("127.0.0.1", server.port)
    phone = browser.new_context(**PHONE)
    # The top of each jitter range, so that the waits are known: 0.5, 1, 2, 4, 8 s.
    phone.add_init_script("Math.random = () => 1;")
    desktop = browser.new_context(**DESKTOP)
    try:
        # Alice (a phone) reaches the server through a proxy the test can cut; Bob directly.
        alice = _open(phone, proxy.url, "alice", "&maxDelay=30000")
        bob = _open(desktop, server.url, "bob")
        state = alice.locator(STATE)
        banner = alice.locator(BANNER)

        # No network at all: "Offline", in red, and nothing to retry until the network is back.
        proxy.cut()
        phone.set_offline(True)
        expect(alice.locator(LABEL)).to_have_text("Offline", timeout=WAIT_MS)
        expect(state).to_have_attribute("data-cause", "network")
        expect(banner).to_have_text(re.compile(r"^You're offline"))
        expect(alice.locator(RETRY)).to_be_hidden()

        # The network is back but the server cannot be reached: amber, and when it tries again.
        phone.set_offline(False)
        expect(banner).to_have_text(
            re.compile(r"^Can't reach the server — retrying (in \d+ s|now…)$"), timeout=WAIT_MS
        )
        expect(alice.locator(RETRY)).to_be_visible()
        expect(alice.locator(LABEL)).to_have_text("Reconnecting…")
        expect(state).to_have_attribute("data-cause", "server")
        # The attempt 4 s away: the countdown says so, and the layout still fits the phone.
        expect(banner).to_have_text(re.compile(r"retrying in [3-8] s$"), timeout=WAIT_MS)
        layout = alice.evaluate(LAYOUT)
        assert layout["pageWidth"] <= 390, layout
        assert layout["outside"] == [], layout

        # "Retry now" reconnects sooner than the attempt scheduled.
        proxy.resume()
        seconds = int(re.findall(r"in (\d+) s", banner.inner_text())[0])
        assert seconds >= 3
        clicked = time.monotonic()
        alice.locator(RETRY).click()
        expect(state).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
        waited = time.monotonic() - clicked
        assert waited < seconds - 1, (waited, seconds)  # the attempt was > seconds - 1 s away
        expect(alice.locator("[data-testid=connection-banner]")).to_be_hidden()
        assert alice.locator(LABEL).inner_text() == "Connected"

        # A graceful restart (1012): both tabs back within the restart delay, never "offline".
        # (A 1012 starts the pace over whatever the backoff was: no need to wait for stableAfter.)
        alice.evaluate("Math.random = () => 0.5")  # the middle of the restart delay's range
        for page in (alice, bob):
            page.evaluate(WATCH)
        assert server.terminate() == 0  # every socket closed with 1012
        restarted = server_factory(dev=True, database_url=database_url, port=server.port)
        answered = time.time() * 1000  # the new server has just answered /healthz
        assert restarted.url == server.url
        for page in (alice, bob):
            expect(page.locator(STATE)).to_have_attribute(
                "data-state", "connected", timeout=WAIT_MS
            )
            back = page.evaluate("window.backAt") - answered
            # restartDelay is [0, 1500] ms; the rest is a connect on a loaded machine.
            assert back < timeout(2.5) * 1000, back
            seen = page.evaluate("window.seen")
            assert not [s for s in seen if s.startswith("offline") or s.endswith("Offline")], seen
        for page in (alice, bob):
            assert page.errors == [], page.errors  # type: ignore[attr-defined]
    finally:
        phone.close()
        desktop.close()
        proxy.close()
