"""The demo board in a real browser: headless Chromium (Debian's package) driven by Playwright.

Two users open the board served by a real ``liveboard serve --dev``; what one does appears in the
other's tab, both see each other present, and when the server is killed the board says so, then
reconnects to the restarted server and catches up with a change made while it was down.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``) and the ``playwright`` package (see
conftest.py: without them the test skips, except in CI). ``LIVEBOARD_E2E_SCREENSHOT=PATH``
saves a screenshot of the board at the end (that is how docs/board.png is made).
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.servers import LiveboardProcess
from tests.support.timing import timeout

try:
    from playwright.sync_api import Locator, Page, expect
except ImportError:  # pragma: no cover - depends on the machine
    if os.environ.get("CI"):
        raise
    pytest.skip("the playwright package is not installed", allow_module_level=True)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext

pytestmark = pytest.mark.slow

STATE = "[data-testid=connection-status]"
WAIT_MS = timeout(15.0) * 1000


# Helpers


def _get_json(url: str, *, token: str | None = None, body: Any = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def _dev_token(server: LiveboardProcess, user: str) -> str:
    token: str = _get_json(f"{server.url}/api/dev/token?user={user}")["token"]
    return token


def _open_board(context: BrowserContext, server: LiveboardProcess, user: str) -> Page:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    # maxDelay caps the reconnect backoff so that the restart below is noticed quickly.
    page.goto(f"{server.url}/?user={user}&maxDelay=1000")
    expect(page.locator(STATE)).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    expect(page.locator("[data-testid=task-card]")).to_have_count(12, timeout=WAIT_MS)
    return page


def _column(page: Page, status: str) -> Locator:
    return page.locator(f'[data-testid=column][data-status="{status}"]')


def _card(scope: Page | Locator, title: str) -> Locator:
    page = scope if isinstance(scope, Page) else scope.page
    exact = re.compile(f"^{re.escape(title)}$")
    # ``has`` is matched inside each card: build it from the page, not from ``scope``.
    title_cell = page.locator("[data-testid=task-title]").filter(has_text=exact)
    return scope.locator("[data-testid=task-card]").filter(has=title_cell)


def _avatar(page: Page, user: str) -> Locator:
    return page.locator(f"[data-testid=presence-avatar][data-user-id={user}]")


def test_two_users_see_each_other_live_and_catch_up_after_a_restart(
    browser: Browser,
    server_factory: Callable[..., LiveboardProcess],
    tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'board.db'}"
    server = server_factory(dev=True, database_url=database_url)
    contexts = [browser.new_context(viewport={"width": 1280, "height": 800}) for _ in range(2)]
    try:
        alice = _open_board(contexts[0], server, "alice")
        bob = _open_board(contexts[1], server, "bob")

        # Presence: both avatars in both tabs.
        for page in (alice, bob):
            expect(_avatar(page, "alice")).to_be_visible(timeout=WAIT_MS)
            expect(_avatar(page, "bob")).to_be_visible(timeout=WAIT_MS)

        # Alice creates a task: it appears in Bob's "todo" column, highlighted.
        title = "Record the product demo"
        todo = _column(alice, "todo")
        todo.locator("[data-testid=new-task-input]").fill(title)
        todo.locator("[data-testid=new-task-input]").press("Enter")
        expect(_card(_column(alice, "todo"), title)).to_have_count(1, timeout=WAIT_MS)
        bobs_card = _card(_column(bob, "todo"), title)
        expect(bobs_card).to_have_count(1, timeout=WAIT_MS)
        expect(bobs_card).to_have_class(re.compile(r"\bflash\b"), timeout=WAIT_MS)
        task_id = _card(alice, title).get_attribute("data-task-id")
        assert task_id

        # Alice moves it right: it moves in Bob's tab.
        _card(alice, title).locator("[data-testid=move-right]").click()
        expect(_card(_column(bob, "in_progress"), title)).to_have_count(1, timeout=WAIT_MS)
        expect(_card(_column(bob, "todo"), title)).to_have_count(0)

        # Bob renames it inline: Alice sees the new title.
        renamed = "Record the product demo (2 min)"
        _card(bob, title).locator("[data-testid=edit-task]").click()
        editor = bob.locator("[data-testid=task-title-input]")
        editor.fill(renamed)
        editor.press("Enter")
        expect(_card(_column(alice, "in_progress"), renamed)).to_have_count(1, timeout=WAIT_MS)

        # The server dies: both tabs say so.
        server.kill()
        for page in (alice, bob):
            expect(page.locator(STATE)).to_have_attribute(
                "data-state", re.compile(r"^(reconnecting|offline)$"), timeout=WAIT_MS
            )

        # While it is down, Carol changes the board through another instance on the same DB.
        other = server_factory(dev=True, database_url=database_url)
        carol = _dev_token(other, "carol")
        _get_json(f"{other.url}/api/tasks/{task_id}/move", token=carol, body={"toStatus": "done"})
        project_id = _get_json(f"{other.url}/api/tasks/{task_id}", token=carol)["projectId"]
        missed = "Send the launch email"
        _get_json(
            f"{other.url}/api/projects/{project_id}/tasks",
            token=carol,
            body={"title": missed, "status": "in_progress", "assigneeId": "carol"},
        )
        other.kill()

        # The server comes back on the same port: both tabs reconnect and catch up, once.
        restarted = server_factory(dev=True, database_url=database_url, port=server.port)
        assert restarted.url == server.url
        for page in (alice, bob):
            expect(page.locator(STATE)).to_have_attribute(
                "data-state", "connected", timeout=WAIT_MS
            )
            expect(_card(_column(page, "done"), renamed)).to_have_count(1, timeout=WAIT_MS)
            expect(_card(_column(page, "in_progress"), missed)).to_have_count(1, timeout=WAIT_MS)
            expect(page.locator("[data-testid=task-card]")).to_have_count(14)
            expect(_avatar(page, "alice")).to_be_visible(timeout=WAIT_MS)
            expect(_avatar(page, "bob")).to_be_visible(timeout=WAIT_MS)

        # And it is live again: a move by Bob reaches Alice.
        _card(bob, missed).locator("[data-testid=move-left]").click()
        expect(_card(_column(alice, "todo"), missed)).to_have_count(1, timeout=WAIT_MS)

        screenshot = os.environ.get("LIVEBOARD_E2E_SCREENSHOT")
        if screenshot:
            alice.mouse.move(0, 0)
            alice.wait_for_timeout(400)
            alice.screenshot(path=screenshot)

        for page in (alice, bob):
            assert page.errors == [], page.errors  # type: ignore[attr-defined]
    finally:
        for context in contexts:
            context.close()


CSP_LISTENER = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


def test_titles_count_characters_as_the_server_does_under_the_boards_csp(
    browser: Browser, server_factory: Callable[..., LiveboardProcess]
) -> None:
    """A title may hold 200 characters (code points) whatever they are: the input's
    ``maxlength`` counted UTF-16 units and stopped 150 emoji at 100. The page runs under its
    Content-Security-Policy without a violation (the columns' colours are set through the
    CSSOM, which the policy allows, not through style attributes, which it refuses)."""
    server = server_factory(dev=True)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(CSP_LISTENER)
    try:
        alice = _open_board(context, server, "alice")
        todo = _column(alice, "todo")
        field = todo.locator("[data-testid=new-task-input]")
        for typed, kept in ((150, 150), (230, 200)):
            title = "🚀" * kept
            field.click()
            alice.keyboard.insert_text("🚀" * typed)  # as a paste or an input method does
            assert field.input_value() == title
            field.press("Enter")
            expect(_card(todo, title)).to_have_count(1, timeout=WAIT_MS)
        # Renaming inline follows the same rule.
        _card(todo, "🚀" * 150).locator("[data-testid=edit-task]").click()
        editor = alice.locator("[data-testid=task-title-input]")
        editor.press("End")
        alice.keyboard.insert_text("é" * 80)
        assert len(editor.input_value()) == 200
        editor.press("Enter")
        expect(_card(todo, "🚀" * 150 + "é" * 50)).to_have_count(1, timeout=WAIT_MS)
        hue = todo.evaluate("el => getComputedStyle(el).getPropertyValue('--accent-hue')")
        assert hue.strip() == "220"
        assert alice.evaluate("window.cspViolations") == []
        assert alice.errors == []  # type: ignore[attr-defined]
    finally:
        context.close()


def test_comment_counts_from_events_another_backend_publishes(
    browser: Browser,
    server_factory: Callable[..., LiveboardProcess],
    tmp_path: Path,
) -> None:
    """``comment:added`` events published with an API key show as a count on the card: those
    before the page opened (read from the room's history) and those after (live)."""
    key = "svc-e2e-0123456789abcdef"
    server = server_factory(
        dev=True,
        database_url=f"sqlite:///{tmp_path / 'board.db'}",
        env={"LIVEBOARD_API_KEYS": key},
    )

    def publish(pid: str, task_id: str) -> None:
        request = urllib.request.Request(
            f"{server.url}/api/rooms/project:{pid}/events",
            data=json.dumps({"type": "comment:added", "data": {"taskId": task_id}}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"apikey {key}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201

    token = _dev_token(server, "alice")
    workspace = _get_json(f"{server.url}/api/workspaces", token=token)[0]
    project = _get_json(f"{server.url}/api/workspaces/{workspace['id']}/projects", token=token)[0]
    tasks = _get_json(f"{server.url}/api/projects/{project['id']}/tasks", token=token)["tasks"]
    first, second = tasks[0]["id"], tasks[1]["id"]
    publish(project["id"], first)
    publish(project["id"], first)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = _open_board(context, server, "alice")
        badge = page.locator(f'[data-task-id="{first}"] [data-testid=comment-count]')
        expect(badge).to_have_text("💬 2", timeout=WAIT_MS)
        publish(project["id"], first)
        publish(project["id"], second)
        expect(badge).to_have_text("💬 3", timeout=WAIT_MS)
        other = page.locator(f'[data-task-id="{second}"] [data-testid=comment-count]')
        expect(other).to_have_text("💬 1", timeout=WAIT_MS)
        assert page.errors == []  # type: ignore[attr-defined]
    finally:
        context.close()
