"""The demo board's optimistic changes in a real browser (Debian's Chromium, Playwright).

Alice's tab reaches a real ``liveboard serve --dev`` through a TCP proxy the test controls
(``tests.support.tcp_proxy.ProxyThread``); Bob's tab reaches it directly:

* with every answer of the server delayed 2 s, a move shows at once, marked pending, and the
  mark goes only when the move's event is in;
* a move the server refuses (the card was deleted meanwhile: 404) is undone with a sentence,
  never "Failed to fetch";
* cut off, Alice makes 5 creates and 20 moves, reloads the page (the app's files come from a
  local copy, as a service worker would serve them; the server stays unreachable), sees
  "25 changes waiting" read back from IndexedDB, and when the server is back every change is
  applied once, in order, and shows on Bob's board.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.test_board import STATE, WAIT_MS, _card, _column, _dev_token, _get_json
from tests.support.servers import LiveboardProcess
from tests.support.tcp_proxy import ProxyThread

try:
    from playwright.sync_api import Page, Route, expect
except ImportError:  # pragma: no cover - depends on the machine
    if os.environ.get("CI"):
        raise
    pytest.skip("the playwright package is not installed", allow_module_level=True)

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.slow

STATIC = Path(__file__).resolve().parents[2] / "src" / "liveboard" / "web" / "static"
TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
CARDS = "[data-testid=task-card]"


@pytest.fixture
def server(server_factory: Callable[..., LiveboardProcess], tmp_path: Path) -> LiveboardProcess:
    return server_factory(dev=True, database_url=f"sqlite:///{tmp_path / 'board.db'}")


@pytest.fixture
def proxy(server: LiveboardProcess) -> Iterator[ProxyThread]:
    thread = ProxyThread("127.0.0.1", server.port, delayable=True)
    yield thread
    thread.close()


def _open(browser: Browser, url: str, user: str, query: str = "") -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{url}/?user={user}&maxDelay=1000{query}")
    expect(page.locator(STATE)).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    expect(page.locator(CARDS)).to_have_count(12, timeout=WAIT_MS)
    return page


def _tasks(server: LiveboardProcess, project_id: str) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = _get_json(
        f"{server.url}/api/projects/{project_id}/tasks", token=_dev_token(server, "carol")
    )["tasks"]
    return tasks


def _delete(server: LiveboardProcess, task_id: str) -> None:
    request = urllib.request.Request(
        f"{server.url}/api/tasks/{task_id}",
        method="DELETE",
        headers={"Authorization": f"Bearer {_dev_token(server, 'bob')}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204


# Clicks a card's button and reads the board in the same turn of the page's event loop: what the
# user sees right after the click, before any answer could have come back.
CLICK_AND_LOOK = """([id, action]) => {
  const card = document.querySelector(`[data-task-id="${id}"]`);
  card.querySelector(`[data-action="${action}"]`).click();
  const now = document.querySelector(`[data-task-id="${id}"]`);
  const write = window.liveboard.board.writes.list.find((w) => w.taskId === id);
  return { column: now.closest("[data-testid=column]").dataset.status,
           pending: now.dataset.pending, answered: Boolean(write.answered) };
}"""


def test_a_move_shows_at_once_while_the_server_answers_2_s_late(
    browser: Browser, server: LiveboardProcess, proxy: ProxyThread
) -> None:
    alice = _open(browser, proxy.url, "alice")
    bob = _open(browser, server.url, "bob")
    title = "Review pricing copy"
    card = _card(alice, title)
    task_id = card.get_attribute("data-task-id")
    proxy.set_delay(2.0)

    seen = alice.evaluate(CLICK_AND_LOOK, [task_id, "right"])
    assert seen == {"column": "in_progress", "pending": "true", "answered": False}
    expect(card).to_have_class(re.compile(r"\bis-pending\b"))
    # Confirmed when its event is in (2 s later): the mark goes, the card stays where it is.
    expect(card).to_have_attribute("data-pending", "false", timeout=WAIT_MS)
    expect(_card(_column(alice, "in_progress"), title)).to_have_count(1)
    expect(_card(_column(bob, "in_progress"), title)).to_have_count(1, timeout=WAIT_MS)
    assert alice.evaluate("window.liveboard.board.writes.list.length") == 0
    assert alice.errors == []  # type: ignore[attr-defined]
    assert bob.errors == []  # type: ignore[attr-defined]


def test_a_refused_move_is_undone_with_a_sentence(
    browser: Browser, server: LiveboardProcess, proxy: ProxyThread
) -> None:
    alice = _open(browser, proxy.url, "alice")
    title = "Set up the status page"
    task_id = _card(alice, title).get_attribute("data-task-id")
    assert task_id
    proxy.pause()  # Alice's move waits on the wire while Bob deletes the card
    seen = alice.evaluate(CLICK_AND_LOOK, [task_id, "right"])
    assert seen["column"] == "in_progress"
    assert seen["pending"] == "true"
    _delete(server, task_id)
    proxy.resume()
    toast = alice.locator(".toast-error")
    expect(toast).to_have_text(
        "This card was deleted by someone else — your move was undone.", timeout=WAIT_MS
    )
    expect(_card(alice, title)).to_have_count(0, timeout=WAIT_MS)
    expect(alice.locator("body")).not_to_contain_text("Failed to fetch")
    expect(alice.locator("[data-testid=queue-status]")).to_be_hidden()
    assert alice.errors == []  # type: ignore[attr-defined]


def _serve_app_shell(page: Page) -> None:
    """Serve the page and its static files from the source tree (as a service worker's cache
    would), so the page reloads while the server cannot be reached; the rest goes to the net."""

    def shell(route: Route) -> None:
        path = route.request.url.split("/", 3)[3].split("?")[0]
        file = STATIC / ("index.html" if path == "" else path.removeprefix("static/"))
        if (path == "" or path.startswith("static/")) and file.is_file():
            route.fulfill(body=file.read_bytes(), content_type=TYPES[file.suffix])
        else:
            route.continue_()

    page.route("**/*", shell)
    # A document that did not come from the network counts as public to Chromium's Local Network
    # Access checks, which then refuse its WebSocket to 127.0.0.1: allow it, as a user would.
    page.context.grant_permissions(["local-network-access"])


def test_changes_made_offline_survive_a_reload_and_land_once_in_order(
    browser: Browser, server: LiveboardProcess, proxy: ProxyThread
) -> None:
    alice = _open(browser, proxy.url, "alice")
    bob = _open(browser, server.url, "bob")
    project_id = alice.evaluate("window.liveboard.board.projectId")
    before = {t["id"] for t in _tasks(server, project_id)}

    proxy.cut()
    expect(alice.locator(STATE)).to_have_attribute(
        "data-state", re.compile(r"^(reconnecting|offline)$"), timeout=WAIT_MS
    )
    titles = [f"Offline idea {n}" for n in range(1, 6)]
    todo = _column(alice, "todo").locator("[data-testid=new-task-input]")
    for title in titles:
        todo.fill(title)
        todo.press("Enter")
        expect(_card(alice, title)).to_have_attribute("data-pending", "true")
    # 20 moves of the new cards, round by round: right, right, left, right. Their final column
    # (done) and Bob's activity list only come out right if the moves land in this order.
    rounds = ["right", "right", "left", "right"]
    columns = ["todo", "in_progress", "done"]
    where = dict.fromkeys(titles, 0)
    expected: list[str] = [f"added “{t}” to To do" for t in titles]
    for action in rounds:
        for title in titles:
            _card(alice, title).locator(f"[data-testid=move-{action}]").click()
            where[title] += 1 if action == "right" else -1
            status = columns[where[title]]
            expect(_card(_column(alice, status), title)).to_have_count(1)
            label = {"in_progress": "In progress", "done": "Done"}[status]
            expected.append(f"moved “{title}” to {label}")
    waiting = alice.locator("[data-testid=queue-status]")
    expect(waiting).to_have_text("25 changes waiting")

    # Reload while the server is still unreachable: the queue comes back from IndexedDB.
    _serve_app_shell(alice)
    alice.reload()
    expect(waiting).to_have_text("25 changes waiting", timeout=WAIT_MS)
    assert alice.evaluate("window.liveboard") is None  # the board could not load without a server

    proxy.resume()
    expect(alice.locator(STATE)).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    expect(waiting).to_be_hidden(timeout=WAIT_MS * 2)
    for page in (alice, bob):
        done = _column(page, "done")
        for title in titles:
            expect(_card(done, title)).to_have_count(1, timeout=WAIT_MS)
            expect(_card(done, title)).to_have_attribute("data-pending", "false", timeout=WAIT_MS)
    # Each applied once: five new tasks, no more.
    tasks = _tasks(server, project_id)
    new = [t for t in tasks if t["id"] not in before]
    assert sorted(t["title"] for t in new) == titles
    assert {t["status"] for t in new} == {"done"}
    # In order, as Bob's activity list shows them (newest first there; under them, the older
    # events of the room's history that the panel opened with).
    items = bob.locator("[data-testid=activity-item]").filter(has_text="Offline idea")
    expect(items).to_have_count(25, timeout=WAIT_MS)
    texts = items.locator(".activity-text p").all_inner_texts()
    shown = [text.removeprefix("Alice Martin ") for text in texts]
    assert list(reversed(shown)) == expected, json.dumps(shown, ensure_ascii=False, indent=1)
    assert alice.errors == []  # type: ignore[attr-defined]
    assert bob.errors == []  # type: ignore[attr-defined]


def test_a_delete_can_be_undone_for_a_few_seconds_and_is_sent_after(
    browser: Browser, server: LiveboardProcess
) -> None:
    alice = _open(browser, server.url, "alice")
    bob = _open(browser, server.url, "bob")
    kept, gone = "Pick the hero image", "Plan the launch-day rota"

    # Deleted, then undone within the window: back on Alice's board, never deleted on the server.
    _card(alice, kept).locator("[data-testid=delete-task]").click()
    expect(_card(alice, kept)).to_have_count(0)
    alice.locator("[data-testid=undo-delete]").click()
    expect(_card(_column(alice, "todo"), kept)).to_have_count(1)
    expect(_card(alice, kept)).to_have_attribute("data-pending", "false")

    # Deleted and left alone: the DELETE goes out when the window ends, and Bob's card goes.
    _card(alice, gone).locator("[data-testid=delete-task]").click()
    expect(_card(alice, gone)).to_have_count(0)
    expect(alice.locator("[data-testid=undo-toast]")).to_have_count(1)
    expect(_card(bob, gone)).to_have_count(0, timeout=WAIT_MS)
    expect(_card(bob, kept)).to_have_count(1)
    project_id = alice.evaluate("window.liveboard.board.projectId")
    titles = {t["title"] for t in _tasks(server, project_id)}
    assert kept in titles
    assert gone not in titles
    assert alice.errors == []  # type: ignore[attr-defined]
    assert bob.errors == []  # type: ignore[attr-defined]


def test_a_move_whose_neighbour_left_the_column_is_undone_in_place(
    browser: Browser, server: LiveboardProcess, proxy: ProxyThread
) -> None:
    """Dropped after a card that Bob moves away meanwhile: the server refuses the placement
    (422, CONTRACT §6.2) and the card goes back where it was, with a sentence."""
    alice = _open(browser, proxy.url, "alice")
    title, neighbour = "Write the launch announcement", "Choose the domain name"
    task_id = _card(alice, title).get_attribute("data-task-id")
    neighbour_id = _card(alice, neighbour).get_attribute("data-task-id")
    index = alice.evaluate(
        """(id) => window.liveboard.board.columns().find((c) => c.status === "done")
             .tasks.findIndex((t) => t.id === id) + 1""",
        neighbour_id,
    )
    proxy.pause()  # Alice's drop waits on the wire while Bob moves the neighbour away
    # Not awaited: the move's promise settles only once the server answers (after the resume).
    alice.evaluate(f"() => {{ void window.liveboard.board.move({task_id!r}, 'done', {index}); }}")
    expect(_card(_column(alice, "done"), title)).to_have_attribute("data-pending", "true")
    _get_json(
        f"{server.url}/api/tasks/{neighbour_id}/move",
        token=_dev_token(server, "bob"),
        body={"toStatus": "todo"},
    )
    proxy.resume()
    expect(alice.locator(".toast-error")).to_have_text(
        "The cards around where you put it moved meanwhile — your move was undone.",
        timeout=WAIT_MS,
    )
    expect(_card(_column(alice, "todo"), title)).to_have_attribute(
        "data-pending", "false", timeout=WAIT_MS
    )
    expect(_card(_column(alice, "todo"), neighbour)).to_have_count(1, timeout=WAIT_MS)
    assert alice.errors == []  # type: ignore[attr-defined]
