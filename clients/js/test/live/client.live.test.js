// The package against a live liveboard server (`liveboard serve --dev` at LIVEBOARD_URL; its
// /api/dev/token gives alice's and bob's tokens). Run by `npm run test:live`, which
// tests/integration/test_js_client_package.py runs against a server it starts; the same file
// runs from an empty project that installed the packed tarball (LIVEBOARD_CLIENT_MODULE set to
// "@liveboard/client"), so what users install is what is tested.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

const BASE = process.env.LIVEBOARD_URL;
assert.ok(BASE, "set LIVEBOARD_URL to a `liveboard serve --dev` server (make test does)");
const lb = await import(process.env.LIVEBOARD_CLIENT_MODULE ?? "../../dist/index.js");
const { Board, LiveboardClient, LiveboardError } = lb;

const token = (user) => async () => {
  const response = await fetch(`${BASE}/api/dev/token?user=${user}`);
  return (await response.json()).token;
};
/** Resolves with the first value of `probe()` that is truthy, polling until `ms` passes. */
async function until(probe, what, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    const value = probe();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
const titles = (board) => board.getSnapshot().columns.flatMap((c) => c.tasks.map((t) => t.title));

let alice;
let bob;
let projectId;
const started = [];

before(async () => {
  alice = new LiveboardClient({ token: token("alice"), baseUrl: BASE });
  bob = new LiveboardClient({ token: token("bob"), baseUrl: BASE });
  const [workspace] = await alice.listWorkspaces();
  const [project] = await alice.listProjects(workspace.id);
  projectId = project.id;
});

after(() => {
  for (const board of started) board.stop();
  alice?.close();
  bob?.close();
});

test("outside a browser: no implicit localhost, and no connection until asked", async () => {
  assert.throws(() => new LiveboardClient({ token: "t" }), (err) => err instanceof LiveboardError && err.code === "no_base_url");
  assert.equal(alice.state, "idle");
  alice.connect();
  bob.connect();
  await until(() => alice.state === "connected" && bob.state === "connected", "connected");
  assert.equal(alice.userId, "alice");
});

test("two boards stay in step; the snapshot is frozen, the same until a change, version-stamped", async () => {
  const a = await new Board(alice, projectId, { storage: false }).start();
  const b = await new Board(bob, projectId, { storage: false }).start();
  started.push(a, b);
  await a.subscription.ready();
  await b.subscription.ready();
  const first = b.getSnapshot();
  assert.equal(b.getSnapshot(), first, "no change: the very same object");
  assert.ok(Object.isFrozen(first) && Object.isFrozen(first.columns) && Object.isFrozen(first.columns[0].tasks));
  let notified = 0;
  const stop = b.subscribe(() => (notified += 1));
  const title = `live ${Date.now()}`;
  const created = await a.createTask({ title, status: a.statuses[0] });
  assert.ok(!created.id.startsWith("local:"));
  await until(() => titles(b).includes(title), "bob's board shows alice's card");
  const later = b.getSnapshot();
  assert.notEqual(later, first);
  assert.ok(later.version > first.version && notified > 0);
  stop();
  await a.move(created.id, a.statuses[1], 0);
  await until(() => b.getSnapshot().columns[1].tasks[0]?.id === created.id, "the move on bob's board");
  await until(() => !a.getSnapshot().pending.has(created.id), "alice's move confirmed by the stream");
});

test("subscriptions are reference-counted: the first to leave does not end the other's stream", async () => {
  const room = `project:${projectId}`;
  const one = alice.subscribe(room);
  const two = alice.subscribe(room);
  assert.equal(one, two);
  await one.ready();
  const seen = [];
  const off = two.onEvent("task:created", (e) => seen.push(e.data.task.title));
  one.unsubscribe(); // one caller leaves ...
  one.unsubscribe(); // ... and the board that also holds the room is still there: refs 3 → 1
  assert.equal(alice._rooms.get(room), two);
  const title = `refs ${Date.now()}`;
  await bob.createTask(projectId, { title });
  await until(() => seen.includes(title), "the event on the shared subscription");
  off();
});

test("presence join and leave are acknowledged by the server", async () => {
  const sub = bob.subscribe(`project:${projectId}`);
  await sub.ready();
  const seenByAlice = [];
  const off = alice._rooms.get(`project:${projectId}`).on("presence", (p) => seenByAlice.push(p));
  const users = await sub.join();
  assert.ok(users.some((u) => u.userId === "bob"));
  await sub.leave();
  await until(() => seenByAlice.some((p) => p.left.includes("bob")), "alice sees bob leave");
  off();
  sub.unsubscribe();
});

test("history pages through a room's events in the envelope subscribers get", async () => {
  const room = `project:${projectId}`;
  const head = await alice.history(room, 0, 1);
  const title = `history ${Date.now()}`;
  await alice.createTask(projectId, { title });
  const page = await alice.history(room, Math.max(0, head.offset), 100);
  const created = page.events.find((e) => e.type === "task:created" && e.data.task.title === title);
  assert.ok(created, JSON.stringify(page));
  assert.equal(created.room, room);
  assert.equal(created.epoch, page.epoch);
  await assert.rejects(alice.history("project:nope"), (err) => err.status === 404);
});

test("an aborted start leaves nothing subscribed", async () => {
  const carol = new LiveboardClient({ token: token("carol"), baseUrl: BASE, autoConnect: true });
  try {
    const controller = new AbortController();
    const starting = new Board(carol, projectId, { storage: false }).start({ signal: controller.signal });
    controller.abort(new Error("unmounted"));
    await assert.rejects(starting, /unmounted/);
    await until(() => carol.state === "connected", "carol connected");
    assert.equal(carol._rooms.size, 0);
    // Aborted after it started: it stops (StrictMode's unmount), releasing the room.
    const later = new AbortController();
    const board = await new Board(carol, projectId, { storage: false }).start({ signal: later.signal });
    await board.subscription.ready();
    assert.equal(carol._rooms.size, 1);
    later.abort();
    assert.equal(carol._rooms.size, 0);
    // StrictMode: one board, started, aborted at once, started again: the first start gives up
    // without stopping the second, which follows the room alone.
    const twice = new Board(carol, projectId, { storage: false });
    const first = new AbortController();
    const abandoned = twice.start({ signal: first.signal }).then(() => "started", (err) => err.message);
    first.abort(new Error("first mount"));
    const second = new AbortController();
    await twice.start({ signal: second.signal });
    assert.equal(await abandoned, "first mount");
    await twice.subscription.ready();
    assert.equal(carol._rooms.get(`project:${projectId}`)._refs, 1);
    second.abort();
    assert.equal(carol._rooms.size, 0);
  } finally {
    carol.close();
  }
});

test("two boards of one project on one client share its room; each applies each event once", async () => {
  const first = await new Board(alice, projectId, { storage: false }).start();
  const title = `shared ${Date.now()}`;
  const created = first.createTask({ title, status: first.statuses[0] });
  // The second board loads its snapshot while the first one's write is in flight.
  const second = await new Board(alice, projectId, { storage: false }).start();
  started.push(first, second);
  await created;
  const ids = (board) => board.getSnapshot().columns.map((c) => c.tasks.map((t) => t.id).join());
  await until(() => titles(second).filter((t) => t === title).length === 1, "the card on the second board");
  await until(() => !first.getSnapshot().pending.size, "the first board's write confirmed");
  assert.deepEqual(ids(second), ids(first));
  const room = alice.room(`project:${projectId}`);
  assert.equal(first.subscription, second.subscription);
  const refs = room._refs;
  first.stop(); // the second board's stream goes on
  assert.equal(room._refs, refs - 1);
  const later = `shared later ${Date.now()}`;
  await bob.createTask(projectId, { title: later });
  await until(() => titles(second).includes(later), "an event after the first board stopped");
  assert.ok(!titles(first).includes(later));
});
