// The pure part of liveboard.js's optimistic Board: PendingWrites (what to show, when to drop a
// local change, what to send next) and refusalMessage. Run by `node --test` (no browser, no I/O);
// tests/unit/test_board_logic_js.py runs this file in the Python suite.
import assert from "node:assert/strict";
import { test } from "node:test";

import { PendingWrites, compareTasks, refusalMessage } from "../../../../src/liveboard/web/static/liveboard.js";

const STATUSES = ["todo", "done"];
const task = (id, status, order, extra = {}) => ({
  id, projectId: "p", title: id, description: "", status, order, assigneeId: null,
  createdById: "u", version: 1, createdAt: "2026-01-01T00:00:00Z", updatedAt: "", ...extra,
});
const TASKS = [task("a", "todo", 1), task("b", "todo", 2), task("c", "todo", 3), task("d", "done", 1)];
const ids = (writes, tasks = TASKS) =>
  writes.columns(tasks, STATUSES).map((c) => `${c.status}:${c.tasks.map((t) => t.id).join(",")}`);
const at = (offset) => ({ offset, epoch: "e1" });

test("confirmed tasks are shown in a strict order: order, then creation, then id", () => {
  const tied = [task("y", "todo", 1), task("x", "todo", 1), task("w", "todo", 0.5)];
  assert.deepEqual(ids(new PendingWrites(), tied), ["todo:w,x,y", "done:"]);
  assert.equal(compareTasks(task("a", "todo", "a0"), task("b", "todo", "a1")), -1); // string keys too
});

test("each kind of write shows at once, in the order the writes were made", () => {
  const w = new PendingWrites();
  w.add({ key: "k1", kind: "move", taskId: "c", fields: { status: "todo", afterId: null } });
  assert.deepEqual(ids(w), ["todo:c,a,b", "done:d"]);
  w.add({ key: "k2", kind: "move", taskId: "a", fields: { status: "done", afterId: undefined } });
  w.add({ key: "k3", kind: "create", taskId: "local:k3", fields: { title: "New", status: "done", afterId: "d" } });
  w.add({ key: "k4", kind: "rename", taskId: "b", fields: { title: "B!" } });
  w.add({ key: "k5", kind: "delete", taskId: "c", fields: {} });
  assert.deepEqual(ids(w), ["todo:b", "done:d,local:k3,a"]);
  const view = w.columns(TASKS, STATUSES);
  assert.equal(view[0].tasks[0].title, "B!");
  assert.equal(view[1].tasks[1].title, "New");
  assert.ok(w.isPending("a") && w.isPending("local:k3") && !w.isPending("d"));
});

test("a write is dropped exactly when its event's offset has been applied", () => {
  const w = new PendingWrites();
  w.add({ key: "k1", kind: "move", taskId: "a", fields: { status: "done" } });
  assert.equal(w.settle(at(10)), 0, "not answered yet: kept, whatever the stream says");
  w.answered("k1", at(12));
  assert.equal(w.settle(at(11)), 0, "offset 11 does not hold it yet");
  assert.ok(w.isPending("a"));
  assert.equal(w.settle({ offset: 50, epoch: "other" }), 0, "an event of another epoch says nothing");
  assert.equal(w.settle(at(12)), 1);
  assert.ok(!w.isPending("a"));
});

test("an answer that names no event drops the write at once; a snapshot of a new epoch drops all", () => {
  const w = new PendingWrites();
  w.add({ key: "k1", kind: "rename", taskId: "a", fields: { title: "a" } });
  w.answered("k1", null);
  assert.equal(w.list.length, 0);
  w.add({ key: "k2", kind: "move", taskId: "a", fields: { status: "done" } });
  w.answered("k2", at(7));
  assert.equal(w.settle({ offset: 3, epoch: "e2" }, true), 1);
});

test("a create's answer gives its card the real id in it and in every later write", () => {
  const w = new PendingWrites();
  w.add({ key: "k1", kind: "create", taskId: "local:k1", fields: { title: "N", status: "todo", afterId: undefined } });
  w.add({ key: "k2", kind: "move", taskId: "local:k1", fields: { status: "done", afterId: null } });
  w.add({ key: "k3", kind: "move", taskId: "a", fields: { status: "done", afterId: "local:k1" } });
  assert.equal(w.next()?.key, "k1");
  w.answered("k1", at(5), task("t9", "todo", 4, { title: "N" }));
  assert.equal(w.next()?.key, "k2");
  assert.equal(w.next()?.taskId, "t9");
  assert.equal(w.get("k3")?.fields.afterId, "t9");
  assert.deepEqual(ids(w), ["todo:b,c", "done:t9,a,d"]);
  // Its event arrives: the confirmed task is shown (once) where the later writes put it.
  const confirmed = [...TASKS, task("t9", "todo", 4, { title: "N" })];
  w.settle(at(5));
  assert.deepEqual(ids(w, confirmed), ["todo:b,c", "done:t9,a,d"]);
});

test("a refusal rolls back the write and the later writes that needed it", () => {
  const w = new PendingWrites();
  w.add({ key: "k1", kind: "create", taskId: "local:k1", fields: { title: "N", status: "todo" } });
  w.add({ key: "k2", kind: "rename", taskId: "local:k1", fields: { title: "N2" } });
  w.add({ key: "k3", kind: "move", taskId: "b", fields: { status: "done", afterId: null } });
  const gone = w.refused("k1").map((x) => x.key);
  assert.deepEqual(gone, ["k1", "k2"]);
  assert.deepEqual(ids(w), ["todo:a,c", "done:b,d"]);
  assert.deepEqual(w.refused("k3").map((x) => x.key), ["k3"]);
  assert.deepEqual(ids(w), ["todo:a,b,c", "done:d"]);
});

test("writes go out one at a time, in order; a held delete waits and its card's later writes too", () => {
  const w = new PendingWrites();
  w.add({ key: "k1", kind: "delete", taskId: "a", fields: {}, held: true });
  w.add({ key: "k2", kind: "rename", taskId: "a", fields: { title: "x" } });
  w.add({ key: "k3", kind: "move", taskId: "b", fields: { status: "done" } });
  assert.equal(w.next()?.key, "k3");
  w.get("k1").held = false;
  assert.equal(w.next()?.key, "k1");
  w.answered("k1", at(3));
  assert.equal(w.next()?.key, "k2");
  assert.equal(w.unsent().length, 2);
});

test("a write whose card was deleted by someone else shows nothing; restored writes start unanswered", () => {
  const w = new PendingWrites([{ key: "k1", kind: "move", taskId: "gone", fields: { status: "done" }, answered: true }]);
  assert.ok(!w.list[0].answered);
  assert.deepEqual(ids(w), ["todo:a,b,c", "done:d"]);
});

test("refusals read as sentences about the card, never as a fetch error", () => {
  const move = { key: "k", kind: "move", taskId: "a", fields: {} };
  assert.equal(refusalMessage(move, { status: 409 }), "Someone else changed this card — your move was undone.");
  assert.match(refusalMessage({ ...move, kind: "rename" }, { status: 404 }), /deleted by someone else — your edit/);
  assert.match(refusalMessage(move, { status: 403 }), /may not change this board/);
  assert.match(refusalMessage(move, { status: 422, message: "bad title" }), /refused your move \(bad title\)/);
  assert.equal(
    refusalMessage(move, { status: 422, message: "afterId: must be a task in the column 'done'" }),
    "The cards around where you put it moved meanwhile — your move was undone.",
  );
});

test("the echo of a create that comes before its answer binds the two: one card, not two", () => {
  const w = new PendingWrites();
  w.add({ key: "k1", kind: "create", taskId: "local:k1", fields: { title: "New", status: "todo", afterId: "c" } });
  w.add({ key: "k2", kind: "move", taskId: "local:k1", fields: { status: "done", afterId: null } });
  const created = task("t9", "todo", 4, { title: "New" });
  w.echoed({ type: "task:created", offset: 7, epoch: "e1" }, created);
  // The stream's copy is the pending create's task: shown once, with the later move on top.
  assert.deepEqual(ids(w, [...TASKS, created]), ["todo:a,b,c", "done:t9,d"]);
  assert.equal(w.list[1].taskId, "t9");
  assert.equal(w.settle(at(7)), 1); // the create is in the board now; the move still waits
  w.answered("k1", at(7), created); // the HTTP answer, later, changes nothing
  assert.deepEqual(ids(w, [...TASKS, created]), ["todo:a,b,c", "done:t9,d"]);
});

test("the late echo of an answered create does not bind the next create", () => {
  // Creates queued offline go out one at a time: create 1's answer comes, then its echo, while
  // create 2 is next. The echo is create 1's.
  const w = new PendingWrites();
  w.add({ key: "k1", kind: "create", taskId: "local:k1", fields: { title: "Idea", status: "todo" } });
  w.add({ key: "k2", kind: "create", taskId: "local:k2", fields: { title: "Idea", status: "todo" } });
  const first = task("t1", "todo", 4, { title: "Idea" });
  w.answered("k1", at(7), first);
  w.echoed({ type: "task:created", offset: 7, epoch: "e1" }, first);
  assert.equal(w.list[1].taskId, "local:k2");
  assert.ok(!w.list[1].answered);
});

test("an echo binds only the create that made its card (same title and column)", () => {
  const w = new PendingWrites();
  w.add({ key: "k1", kind: "create", taskId: "local:k1", fields: { title: "Mine", status: "todo" } });
  w.echoed({ type: "task:created", offset: 3, epoch: "e1" }, task("t5", "todo", 1, { title: "Other" }));
  w.echoed({ type: "task:created", offset: 4, epoch: "e1" }, task("t6", "done", 1, { title: "Mine" }));
  assert.equal(w.list[0].taskId, "local:k1");
  assert.ok(!w.list[0].answered);
});

test("an echo binds only a create in flight", () => {
  const w = new PendingWrites();
  w.add({ key: "k1", kind: "move", taskId: "a", fields: { status: "done", afterId: null } });
  w.echoed({ type: "task:created", offset: 3, epoch: "e1" }, task("t1", "todo", 9));
  assert.ok(!w.list[0].answered);
});
