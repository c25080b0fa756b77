# ruff: noqa: E501  (the scenarios are JavaScript, kept readable rather than wrapped)
"""The browser client ``liveboard.js`` in headless Chromium, against a scripted WebSocket.

Each test loads the module from ``src/liveboard/web/static`` (served to the page by a route, no
server), replaces ``WebSocket``, ``setTimeout`` and ``Date.now`` with fakes it controls, and plays
the server's side of the protocol: close codes, backoff delays, heartbeat, resubscribe with
``since``, duplicates and gaps, ``recovered: false``, revocation, presence, token refresh and the
``Board`` model. The real server is exercised end to end in test_board.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

try:
    from playwright.sync_api import Page, Route
except ImportError:  # pragma: no cover - depends on the machine
    if os.environ.get("CI"):
        raise
    pytest.skip("the playwright package is not installed", allow_module_level=True)

if TYPE_CHECKING:
    from playwright.sync_api import Browser

STATIC = Path(__file__).resolve().parents[2] / "src" / "liveboard" / "web" / "static"
HARNESS = Path(__file__).with_name("harness.js")
ORIGIN = "http://liveboard.test"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def serve(route: Route) -> None:
        path = route.request.url.removeprefix(ORIGIN)
        if path.startswith("/static/"):
            file = STATIC / path.removeprefix("/static/")
            route.fulfill(body=file.read_text(), content_type="text/javascript")
        else:
            route.fulfill(
                body="<!doctype html><title>liveboard.js</title>", content_type="text/html"
            )

    page.route(f"{ORIGIN}/**", serve)
    page.goto(f"{ORIGIN}/")
    page.add_script_tag(content=HARNESS.read_text())
    yield page
    assert errors == [], errors
    context.close()


def run(page: Page, body: str) -> Any:
    """Run ``body`` (an async function body that may ``return``) with ``m`` = the module."""
    return page.evaluate(
        f"async () => {{ const m = await import('/static/liveboard.js'); {body} }}"
    )


def test_connects_with_the_token_in_the_subprotocol_and_reports_states(page: Page) -> None:
    result = run(
        page,
        """
        const states = [];
        const c = new m.LiveboardClient({ token: "abc.def", baseUrl: "http://h:1" });
        c.on("state", (s) => states.push(s.state));
        await flush();
        const ws = latest();
        ws.accept("c_1", "alice");
        return {
          url: ws.url, protocols: ws.protocols, states, id: c.connectionId, user: c.userId,
          state: c.state,
        };
        """,
    )
    # CONTRACT §6.5: the token stays out of the URL that proxies and histories log.
    assert result["url"] == "ws://h:1/ws/connect"
    assert result["protocols"] == ["liveboard.v1", "liveboard.token.abc.def"]
    assert result["states"] == ["connected"]  # "connecting" was emitted in the constructor
    assert (result["id"], result["user"], result["state"]) == ("c_1", "alice", "connected")


def test_the_token_can_still_go_in_the_url(page: Page) -> None:
    result = run(
        page,
        """
        const c = new m.LiveboardClient({ token: "abc.def", baseUrl: "http://h:1", tokenIn: "query" });
        await flush();
        return { url: latest().url, protocols: latest().protocols };
        """,
    )
    assert result == {"url": "ws://h:1/ws/connect?token=abc.def", "protocols": []}


def test_backoff_is_exponential_capped_with_full_jitter_then_offline(page: Page) -> None:
    result = run(
        page,
        """
        Math.random = () => 1;  // the top of each jitter range
        const events = [];
        const c = new m.LiveboardClient({
          token: "t", backoffBase: 500, backoffMax: 4000, offlineAfter: 4,
        });
        c.on("state", (s) => events.push([s.state, s.retryIn]));
        await flush();
        latest().accept();
        for (let i = 0; i < 6; i++) {
          const before = sockets.length;
          latest().drop(1006);
          await advance(events[events.length - 1][1] - 1);
          const early = sockets.length;     // no new attempt before the delay
          await advance(1);
          events.push(["attempts", early - before, sockets.length - before]);
        }
        Math.random = () => 0.25;
        const jitter = m.backoffDelay(3, 500, 4000);
        return { events, jitter };
        """,
    )
    delays = [e[1] for e in result["events"] if e[0] in ("reconnecting", "offline")]
    assert delays == [500, 1000, 2000, 4000, 4000, 4000]
    states = [e[0] for e in result["events"] if e[0] != "attempts"]
    assert states == ["connected", *["reconnecting"] * 4, *["offline"] * 2]
    assert all(e[1:] == [0, 1] for e in result["events"] if e[0] == "attempts")
    assert result["jitter"] == 1000  # random(0, min(4000, 500 * 2**3)) with random = 0.25


def test_retry_now_connects_at_once_and_starts_the_backoff_over(page: Page) -> None:
    result = run(
        page,
        """
        Math.random = () => 1;
        const delays = [];
        const c = new m.LiveboardClient({ token: "t", backoffBase: 500, backoffMax: 8000 });
        c.on("state", (s) => s.retryIn !== undefined && delays.push(s.retryIn));
        await flush();
        latest().accept();
        for (let i = 0; i < 4; i++) { latest().drop(1006); await nextSocket(); }
        latest().drop(1006);            // the next attempt is 8 s away
        await advance(100);
        const before = sockets.length;
        c.retryNow();
        await flush();
        const opened = sockets.length - before;
        c.retryNow();                   // an attempt is under way: no second socket
        await flush();
        const again = sockets.length - before;
        latest().drop(1006);            // that attempt failed: the backoff starts over
        (await nextSocket()).accept();
        c.retryNow();                   // connected: nothing to do
        await flush();
        return { delays, opened, again, sockets: sockets.length, state: c.state };
        """,
    )
    assert result["delays"] == [500, 1000, 2000, 4000, 8000, 500]
    assert (result["opened"], result["again"]) == (1, 1)
    assert result["state"] == "connected"
    assert result["sockets"] == 7


# Every code the protocol's policy calls fatal (CLOSE_ACTIONS in the generated protocol.ts, which
# the client imports): RFC 6455's 1002, 1007 and 1010 too since issue 19.
@pytest.mark.parametrize("code", [1002, 1003, 1007, 1008, 1009, 1010])
def test_no_reconnect_after_a_fatal_close(page: Page, code: int) -> None:
    result = run(
        page,
        f"""
        const errors = [];
        const c = new m.LiveboardClient({{ token: "t" }});
        c.on("error", (e) => errors.push(e.code));
        await flush();
        latest().accept();
        latest().drop({code}, "bye");
        await advance(120000);
        return {{ sockets: sockets.length, state: c.state, errors }};
        """,
    )
    assert result == {"sockets": 1, "state": "closed", "errors": [f"closed_{code}"]}


def test_a_restarting_server_1012_is_retried_at_a_flat_short_pace(page: Page) -> None:
    result = run(
        page,
        """
        Math.random = () => 0.5;
        const events = [];
        const c = new m.LiveboardClient({
          token: "t", restartDelay: [200, 1800], restartWindow: 20000, offlineAfter: 3,
        });
        c.on("state", (s) => s.retryIn !== undefined && events.push([s.state, s.retryIn, s.restarting]));
        await flush();
        latest().accept();
        latest().drop(1012, "restarting");
        await advance(999);
        const at999 = sockets.length;
        await advance(1);
        const at1000 = sockets.length;
        // The server is still down: each connect fails before `connected`.
        for (let i = 0; i < 8; i++) { latest().drop(1006); await advance(1000); }
        const refusedInWindow = events.length;
        // The window (20 s) is over: the usual backoff, from its first step.
        await advance(20000);
        latest().drop(1006);
        await flush();
        return { events, at999, at1000, refusedInWindow };
        """,
    )
    # 200 + 0.5 * (1800 - 200) = 1000, never doubled, never "offline" (offlineAfter 3)
    assert (result["at999"], result["at1000"]) == (1, 2)
    in_window = result["events"][: result["refusedInWindow"]]
    assert in_window == [["reconnecting", 1000, True]] * 9
    assert result["events"][-1] == ["reconnecting", 250, False]  # random(0, 500) = 250


def test_a_token_provider_down_with_the_restarting_server_keeps_the_flat_pace(
    page: Page,
) -> None:
    """The demo board's provider fetches its token from the server that is restarting: each
    attempt after the first refused connect asks it and fails. Those failures kept the flat pace
    of the restart window too (they once fell back to the doubling backoff and, after 5, to
    ``offline``: tabs returned 2-8 s after the server did)."""
    result = run(
        page,
        """
        Math.random = () => 0.5;
        const events = [];
        let serverUp = true;
        const c = new m.LiveboardClient({
          token: async () => { if (!serverUp) throw new Error("Failed to fetch"); return "t"; },
          restartDelay: [0, 1000], offlineAfter: 3,
        });
        c.on("state", (s) => s.retryIn !== undefined && events.push([s.state, s.retryIn, s.restarting]));
        await flush();
        latest().accept();
        serverUp = false;
        latest().drop(1012, "restarting");
        await advance(500);
        latest().drop(1006);            // refused: the next attempt asks the provider again
        await advance(8 * 500);         // ... which fails 8 times
        const during = events.length;
        serverUp = true;
        await advance(500);
        latest().accept();
        return { events, during, state: c.state };
        """,
    )
    assert result["events"][: result["during"]] == [["reconnecting", 500, True]] * 10
    assert result["state"] == "connected"


def test_a_restarted_server_that_accepts_ends_the_restart_window(page: Page) -> None:
    result = run(
        page,
        """
        Math.random = () => 0.5;
        const delays = [];
        const c = new m.LiveboardClient({ token: "t", restartDelay: [0, 1000] });
        c.on("state", (s) => s.retryIn !== undefined && delays.push([s.retryIn, s.restarting]));
        await flush();
        latest().accept();
        latest().drop(1012);
        await advance(500);
        latest().accept();              // back; then a dropped link is an ordinary one
        latest().drop(1006);
        return delays;
        """,
    )
    assert result == [[500, True], [250, False]]


def test_heartbeat_detects_a_dead_link_and_reconnects(page: Page) -> None:
    result = run(
        page,
        """
        Math.random = () => 0;
        const states = [];
        const c = new m.LiveboardClient({ token: "t", heartbeatInterval: 15000, heartbeatTimeout: 5000 });
        c.on("state", (s) => states.push(s.state));
        await flush();
        const first = latest();
        first.accept();
        await advance(15000);
        const ping1 = first.types().filter((t) => t === "ping").length;
        first.receive({ type: "pong" });           // alive
        await advance(15000);                       // second ping, then silence
        const ping2 = first.types().filter((t) => t === "ping").length;
        await advance(4999);
        const stillOpen = first.closedWith === null;
        await advance(1);                           // 5 s without a frame: dead
        await advance(10);
        return { ping1, ping2, stillOpen, closed: first.closedWith, sockets: sockets.length, states };
        """,
    )
    assert result["ping1"] == 1
    assert result["ping2"] == 2
    assert result["stillOpen"] is True
    assert result["closed"] == 4900
    assert result["sockets"] == 2
    assert result["states"] == ["connected", "reconnecting"]


def test_resubscribes_with_since_and_never_delivers_twice_or_out_of_order(page: Page) -> None:
    result = run(
        page,
        """
        const got = [];
        const c = new m.LiveboardClient({ token: "t" });
        const sub = c.subscribe("project:p1", { since: { offset: 5, epoch: "e1" } });
        sub.on("event", (e) => got.push(e.offset));
        await flush();
        let ws = latest();
        ws.accept();
        const sub1 = ws.last("subscribe");
        ws.receive({ type: "subscribed", room: "project:p1", offset: 7, epoch: "e1", recovered: true, id: sub1.id });
        const ev = (o) => ({ type: "task:deleted", room: "project:p1", offset: o, epoch: "e1", ts: 0,
                              userId: "bob", data: { taskId: "t" + o } });
        ws.receive(ev(6)); ws.receive(ev(7)); ws.receive(ev(6)); ws.receive(ev(5));
        ws.drop(1006);
        ws = await nextSocket();
        ws.accept();
        const sub2 = ws.last("subscribe");
        ws.receive({ type: "subscribed", room: "project:p1", offset: 9, epoch: "e1", recovered: true, id: sub2.id });
        ws.receive(ev(7)); ws.receive(ev(8)); ws.receive(ev(8)); ws.receive(ev(9));
        ws.receive(ev(11));                         // a gap: ask again from 9
        const sub3 = ws.last("subscribe");
        ws.receive({ type: "subscribed", room: "project:p1", offset: 11, epoch: "e1", recovered: true, id: sub3.id });
        ws.receive(ev(10)); ws.receive(ev(11));
        return { got, sub1, sub2, sub3, position: sub.position };
        """,
    )
    assert result["got"] == [6, 7, 8, 9, 10, 11]
    assert result["sub1"]["since"] == {"offset": 5, "epoch": "e1"}
    assert result["sub2"]["since"] == {"offset": 7, "epoch": "e1"}
    assert result["sub3"]["since"] == {"offset": 9, "epoch": "e1"}
    assert result["position"] == {"offset": 11, "epoch": "e1"}


def test_recovered_false_and_resync_each_surface_once_and_reload_the_snapshot(
    page: Page,
) -> None:
    result = run(
        page,
        """
        const resyncs = [];
        let loads = 0;
        const c = new m.LiveboardClient({ token: "t" });
        const sub = c.subscribe("project:p1", {
          since: { offset: 3, epoch: "old" },
          snapshot: async () => { loads += 1; return { offset: 40 + loads, epoch: "new" }; },
        });
        sub.on("resync", (r) => resyncs.push(r.reason));
        await flush();
        const ws = latest();
        ws.accept();
        let s = ws.last("subscribe");
        ws.receive({ type: "subscribed", room: "project:p1", offset: 50, epoch: "new", recovered: false, id: s.id });
        await flush();
        const after1 = ws.last("subscribe");
        ws.receive({ type: "subscribed", room: "project:p1", offset: 50, epoch: "new", recovered: true, id: after1.id });
        ws.receive({ type: "resync", room: "project:p1", reason: "continuity_lost" });
        await flush();
        const after2 = ws.last("subscribe");
        return { resyncs, loads, since1: after1.since, since2: after2.since };
        """,
    )
    assert result["resyncs"] == ["epoch_changed", "continuity_lost"]
    assert result["loads"] == 2
    assert result["since1"] == {"offset": 41, "epoch": "new"}
    assert result["since2"] == {"offset": 42, "epoch": "new"}


def test_revocation_presence_and_rejoin_after_reconnect(page: Page) -> None:
    result = run(
        page,
        """
        const revoked = [], presence = [];
        const c = new m.LiveboardClient({ token: "t" });
        const a = c.subscribe("project:a");
        const b = c.subscribe("project:b");
        a.join();
        a.on("presence", (p) => presence.push(p.users.map((u) => u.userId)));
        b.on("revoked", (r) => revoked.push(r.reason));
        await flush();
        let ws = latest();
        ws.accept();
        const ack = (room) => ws.receive({ type: "subscribed", room, offset: 1, epoch: "e",
                                           id: ws.sent.find((x) => x.type === "subscribe" && x.room === room).id });
        ack("project:a"); ack("project:b");
        const joins1 = ws.sent.filter((x) => x.type === "presence").map((x) => [x.action, x.room]);
        ws.receive({ type: "presence:update", room: "project:a", users: [{ userId: "alice", name: "A" },
                    { userId: "bob", name: "B" }], joined: ["alice"], left: [] });
        ws.receive({ type: "unsubscribed", room: "project:b", reason: "forbidden" });
        ws.drop(1006);
        ws = await nextSocket();
        ws.accept();
        const rooms = ws.sent.filter((x) => x.type === "subscribe").map((x) => x.room);
        ack("project:a");
        const joins2 = ws.sent.filter((x) => x.type === "presence").map((x) => [x.action, x.room]);
        return { revoked, presence, joins1, rooms, joins2 };
        """,
    )
    assert result["revoked"] == ["forbidden"]
    assert result["presence"] == [["alice", "bob"]]
    assert result["joins1"] == [["join", "project:a"]]
    assert result["rooms"] == ["project:a"]  # the revoked room is not subscribed again
    assert result["joins2"] == [["join", "project:a"]]


def test_token_provider_refreshes_before_expiry_and_after_4001(page: Page) -> None:
    result = run(
        page,
        """
        let calls = 0;
        const c = new m.LiveboardClient({
          token: async () => { calls += 1; return token(300); },
          heartbeatInterval: 1e9,  // this test does not answer pings
        });
        await flush();
        let ws = latest();
        ws.accept();
        const firstProtocols = ws.protocols.join(",");
        await advance(300000 - 30000 - 1);          // margin: 10% of the lifetime, 10..60 s
        const before = ws.types().includes("refresh");
        await advance(1);
        const refresh = ws.last("refresh");
        ws.receive({ type: "refreshed", expiresAt: nowS() + 300, id: refresh.id });
        const callsAfterRefresh = calls;
        ws.drop(4001, "token expired");
        await nextSocket(5);                          // at once, not after a backoff
        const reconnected = sockets.length;
        return { before, refreshed: !!refresh && refresh.token.split(".").length === 3,
                 callsAfterRefresh, calls, reconnected, sameToken: latest().protocols.join(",") === firstProtocols };
        """,
    )
    assert result["before"] is False
    assert result["refreshed"] is True
    assert result["callsAfterRefresh"] == 2
    assert result["calls"] == 3  # a new token for the reconnect after 4001
    assert result["reconnected"] == 2
    assert result["sameToken"] is False  # the reconnect carries the new token


def test_rest_sends_the_token_and_connection_id_and_recognises_its_echo(page: Page) -> None:
    result = run(
        page,
        """
        const seen = [];
        window.fetch = async (url, init) => {
          seen.push({ url, method: init.method, headers: init.headers, body: init.body });
          if (url.endsWith("/missing")) {
            return new Response(JSON.stringify({ error: { code: "not_found", message: "no such task" } }),
                                { status: 404 });
          }
          return new Response(JSON.stringify({ id: "tsk_1", version: 2 }), { status: 200 });
        };
        const c = new m.LiveboardClient({ token: "tok", baseUrl: "http://h:1" });
        await flush();
        latest().accept("c_me");
        const task = await c.moveTask("tsk_1", { toStatus: "done" });
        let error = null;
        try { await c.request("GET", "/missing"); } catch (e) { error = [e.name, e.status, e.code, e.message]; }
        return { seen, task, error, own: c.isOwn({ origin: "c_me" }), other: c.isOwn({ origin: "c_x" }) };
        """,
    )
    first = result["seen"][0]
    assert first["url"] == "http://h:1/api/tasks/tsk_1/move"
    assert first["method"] == "POST"
    assert first["headers"]["Authorization"] == "Bearer tok"
    assert first["headers"]["X-Connection-Id"] == "c_me"
    assert first["body"] == '{"toStatus":"done"}'
    assert result["task"] == {"id": "tsk_1", "version": 2}
    assert result["error"] == ["LiveboardError", 404, "not_found", "no such task"]
    assert (result["own"], result["other"]) == (True, False)


def test_mutations_carry_an_idempotency_key_that_their_retry_reuses(page: Page) -> None:
    result = run(
        page,
        """
        const seen = [];
        window.fetch = async (url, init) => {
          seen.push({ method: init.method, key: init.headers["Idempotency-Key"] ?? null, body: init.body });
          if (seen.length === 1) {
            return new Response(JSON.stringify({ error: { code: "unauthorized", message: "expired" } }),
                                { status: 401 });
          }
          return new Response(JSON.stringify({ id: "tsk_1" }), { status: 200 });
        };
        let issued = 0;
        const c = new m.LiveboardClient({ token: () => `tok${++issued}`, baseUrl: "http://h:1" });
        await c.moveTask("tsk_1", { toStatus: "done" });
        await c.moveTask("tsk_1", { toStatus: "todo" });
        await c.request("GET", "/api/projects/p1");
        await c.request("POST", "/api/tasks/tsk_1/move", { toStatus: "done" },
                        { headers: { "Idempotency-Key": "mine" } });
        return { seen, fresh: m.newIdempotencyKey() };
        """,
    )
    first, retry, second, read, given = result["seen"]
    assert len(first["key"] or "") >= 32
    assert (retry["key"], retry["body"]) == (first["key"], first["body"])  # the 401's retry
    assert second["key"] not in (None, first["key"])  # a new mutation, a new key
    assert read["key"] is None  # reads carry none
    assert given["key"] == "mine"
    assert result["fresh"] not in (first["key"], second["key"])


def test_board_applies_the_stream_to_its_model_with_optimistic_moves(page: Page) -> None:
    result = run(
        page,
        """
        const task = (id, status, order, version = 1) => ({ id, projectId: "p1", title: id, description: "",
          status, order, assigneeId: null, createdById: "alice", version, createdAt: "2026-01-01T00:00:00Z",
          updatedAt: "2026-01-01T00:00:00Z" });
        let moveReply = null;
        window.fetch = async (url, init) => {
          const json = (b) => new Response(JSON.stringify(b), { status: 200 });
          if (url.endsWith("/api/projects/p1")) return json({ id: "p1", workspaceId: "w", name: "P",
            statuses: ["todo", "done"], createdAt: "" });
          if (url.endsWith("/api/projects/p1/tasks")) return json({ tasks: [task("a", "todo", 1),
            task("b", "todo", 2)], offset: 2, epoch: "e" });
          if (url.endsWith("/move")) return new Promise((resolve) => { moveReply = () => resolve(new Response(
            JSON.stringify(task("a", "done", 1, 2)), { status: 200, headers: { "Liveboard-Offset": "4", "Liveboard-Epoch": "e" } })); });
          throw new Error("unexpected " + url);
        };
        const c = new m.LiveboardClient({ token: "t" });
        await flush();
        const ws = latest();
        ws.accept("c_me");
        const board = new m.Board(c, "p1");
        const changes = [];
        board.on("change", (ch) => changes.push([ch.type, ch.taskId, ch.own]));
        await board.start();
        const s = ws.last("subscribe");
        ws.receive({ type: "subscribed", room: "project:p1", offset: 2, epoch: "e", recovered: true, id: s.id });
        const cols = () => board.columns().map((col) => col.status + ":" + col.tasks.map((t) => t.id).join(","));
        const ev = (offset, type, data, origin) => ws.receive({ type, room: "project:p1", offset, epoch: "e",
          ts: 1800000000000, userId: "bob", origin, data });
        ev(3, "task:created", { task: task("c", "todo", 1.5) });
        const afterCreate = cols();
        const moving = board.move("a", "done");    // optimistic: shown at once
        await flush();
        const optimistic = cols();
        moveReply();
        await moving;
        const answeredPending = board.isPending("a");   // answered, its event (offset 4) not yet applied
        ev(4, "task:moved", { taskId: "a", fromStatus: "todo", toStatus: "done", order: 1 }, "c_me");
        const confirmed = cols();
        ev(5, "task:updated", { task: { ...task("b", "todo", 2, 2), title: "B!" }, changes: { title: { from: "b", to: "B!" } } });
        ev(6, "task:deleted", { taskId: "c" });
        return { afterCreate, optimistic, confirmed, final: cols(), title: board.tasks.get("b").title,
                 version: board.tasks.get("a").version, pending: board.writes.list.length, answeredPending, changes,
                 position: board.position };
        """,
    )
    assert result["afterCreate"] == ["todo:a,c,b", "done:"]
    assert result["optimistic"] == ["todo:c,b", "done:a"]
    assert result["confirmed"] == ["todo:c,b", "done:a"]
    assert result["final"] == ["todo:b", "done:a"]
    assert result["title"] == "B!"
    assert result["version"] == 2
    assert result["pending"] == 0
    assert result["answeredPending"] is True
    assert ["task:moved", "a", True] in result["changes"]
    assert ["task:created", "c", False] in result["changes"]
    assert result["position"] == {"offset": 6, "epoch": "e"}
