// The pure part of the optimistic board: what to show, when to drop a local change, what to
// send next (docs/browser-client.md, "Optimistic board"). No I/O, no timers.
import type { Position, Task } from "./protocol.js";

/**
 * A local change of a board, from the moment it is made until the stream has applied its event.
 */
export interface Write {
  /** Its Idempotency-Key, reused by every attempt (after reloads too). */
  key: string;
  kind: "create" | "move" | "rename" | "delete";
  /** The task's id; a create's is `local:<key>` until it is answered. */
  taskId: string;
  fields: { title?: string; status?: string; description?: string; afterId?: string | null | undefined; version?: number | undefined };
  /** A delete in its undo window: not sent yet. */
  held?: boolean;
  /** The server accepted it. */
  answered?: boolean;
  /** The position its answer named (its event). */
  at?: Position | null;
  /** A create's answer. */
  task?: Task;
  /** When it was made (ms; orders the stored writes). */
  made?: number;
}

export interface Column {
  status: string;
  tasks: Task[];
}

type SortKey = "order" | "rank" | "createdAt" | "id";
const SORT_KEYS: SortKey[] = ["order", "rank", "createdAt", "id"];

/** A strict order of the cards of a column: `order`, then rank, then creation time, then id. */
export function compareTasks(a: Task, b: Task): number {
  for (const k of SORT_KEYS) {
    if (a[k] < b[k]) return -1;
    if (a[k] > b[k]) return 1;
  }
  return 0;
}

/** Put `task` into `list` after `afterId` (null: first), else at the end. */
function place(list: Task[], task: Task, afterId: string | null | undefined): void {
  const i = afterId ? list.findIndex((t) => t.id === afterId) : -1;
  list.splice(afterId === null ? 0 : i >= 0 ? i + 1 : list.length, 0, task);
}

/**
 * The writes of a board not yet reflected by its stream, in the order they were made. Pure (no
 * I/O, no timers): the Board feeds it what happens and draws `columns()`.
 *
 * - A write is shown on top of the confirmed tasks from the moment it is `add`ed.
 * - It is dropped exactly when the board has applied its event: `settle(position)` with the
 *   position's offset at or past the one its answer named (`answered`), in that epoch; or at
 *   once when the answer named no event; or on `refused` (with the writes that needed it: the
 *   later changes of a card whose create was refused).
 * - `next()` is the write to send: the first one not yet answered, skipping held ones (and the
 *   later writes of their card), so writes go out one at a time, in order.
 */
export class PendingWrites {
  list: Write[];

  /** `writes`: writes restored from storage (not answered, whatever they say). */
  constructor(writes: Write[] = []) {
    this.list = writes.map((w) => ({ ...w, answered: false }));
  }

  add(write: Write): void {
    this.list.push(write);
  }

  get(key: string): Write | undefined {
    return this.list.find((w) => w.key === key);
  }

  /** Writes the server has not accepted yet (what a user would call "waiting"). */
  unsent(): Write[] {
    return this.list.filter((w) => !w.answered);
  }

  /** True while a write of `taskId` is shown but not confirmed. */
  isPending(taskId: string): boolean {
    return this.list.some((w) => w.taskId === taskId);
  }

  next(): Write | undefined {
    const held = new Set<string>();
    for (const w of this.list) {
      if (w.answered) continue;
      if (w.held || held.has(w.taskId)) held.add(w.taskId);
      else return w;
    }
    return undefined;
  }

  /**
   * The server accepted `key`: its event is at `at` (null: it emitted none, nothing to wait for).
   * A create's answer gives the task its real id, in this and every later write.
   */
  answered(key: string, at: Position | null, task?: Task): void {
    const w = this.get(key);
    if (!w) return;
    w.answered = true;
    w.at = at;
    if (w.kind === "create" && task) {
      w.task = task;
      const temp = w.taskId;
      for (const other of this.list) {
        if (other.taskId === temp) other.taskId = task.id;
        if (other.fields.afterId === temp) other.fields.afterId = task.id;
      }
    }
    if (!at) this.remove(key);
  }

  /**
   * This client's own `task:created` arrived from the stream. If it came before the create's
   * answer, it is the write in flight (the first unanswered one: writes are sent one at a time):
   * answer that write from the event; the HTTP answer, when it comes, says the same.
   * The echo of a create that was answered already (the stream slower than HTTP) must not bind
   * the next create: a write that already names `task.id` was answered, and the create in flight
   * must have made this card (same title and column).
   */
  echoed(event: Position, task: Task): void {
    if (this.list.some((o) => o.taskId === task.id)) return;
    const w = this.next();
    if (
      w?.kind === "create" &&
      !w.answered &&
      w.taskId.startsWith("local:") &&
      w.fields.title === task.title &&
      w.fields.status === task.status
    ) {
      this.answered(w.key, { offset: event.offset, epoch: event.epoch }, task);
    }
  }

  /** The server refused `key`: drop it and the writes that depend on it; returns them. */
  refused(key: string): Write[] {
    const w = this.get(key);
    if (!w) return [];
    const gone = this.list.filter(
      (o) => o === w || (w.kind === "create" && (o.taskId === w.taskId || o.fields.afterId === w.taskId)),
    );
    this.list = this.list.filter((o) => !gone.includes(o));
    return gone;
  }

  /** Forget `key` (an undone delete). */
  remove(key: string): void {
    this.list = this.list.filter((w) => w.key !== key);
  }

  /**
   * The board now reflects every event up to `position`: drop the answered writes whose event is
   * in it. A snapshot (`snapshot`) in another epoch replaces everything: those go too. Returns
   * how many were dropped.
   */
  settle(position: Position, snapshot = false): number {
    const before = this.list.length;
    this.list = this.list.filter(
      (w) => !w.answered || !w.at || (w.at.epoch === position.epoch ? w.at.offset > position.offset : !snapshot),
    );
    return before - this.list.length;
  }

  /**
   * What to draw: `tasks` (the confirmed model) in columns, with every write applied on top,
   * in order.
   */
  columns(tasks: Iterable<Task>, statuses: readonly string[]): Column[] {
    const cols = new Map<string, Task[]>(statuses.map((s) => [s, []]));
    for (const t of tasks) cols.get(t.status)?.push(t);
    for (const list of cols.values()) list.sort(compareTasks);
    const find = (id: string): { list: Task[]; i: number; task: Task } | null => {
      for (const list of cols.values()) {
        const i = list.findIndex((t) => t.id === id);
        if (i >= 0) return { list, i, task: list[i] as Task };
      }
      return null;
    };
    for (const w of this.list) {
      const found = find(w.taskId);
      if (w.kind === "create") {
        if (found) found.list.splice(found.i, 1);
        const base = w.task ?? found?.task;
        const task = {
          ...{ description: "", assigneeId: null, version: 0, createdAt: "", updatedAt: "" },
          ...base,
          id: w.taskId,
          title: w.fields.title,
          status: w.fields.status,
        } as Task;
        const list = cols.get(task.status);
        if (list) place(list, task, w.fields.afterId);
      } else if (!found) {
        continue; // deleted meanwhile (by someone else): nothing to show
      } else if (w.kind === "delete") {
        found.list.splice(found.i, 1);
      } else if (w.kind === "rename") {
        found.list[found.i] = { ...found.task, title: w.fields.title as string };
      } else {
        const list = cols.get(w.fields.status as string);
        if (!list) continue;
        found.list.splice(found.i, 1);
        place(list, { ...found.task, status: w.fields.status as string }, w.fields.afterId);
      }
    }
    return statuses.map((status) => ({ status, tasks: cols.get(status) as Task[] }));
  }
}

/** A human sentence for a refused write (shown by apps; `err` is the LiveboardError). */
export function refusalMessage(write: Pick<Write, "kind">, err: unknown): string {
  const what = { create: "new card", move: "move", rename: "edit", delete: "delete" }[write.kind];
  const e = err as { status?: number; message?: string } | null;
  switch (e?.status) {
    case 409:
      return `Someone else changed this card — your ${what} was undone.`;
    case 404:
      return `This card was deleted by someone else — your ${what} was undone.`;
    case 403:
      return `You may not change this board any more — your ${what} was undone.`;
    case 422:
      // A neighbour the card was placed by left its column meanwhile (CONTRACT §6.2).
      if (/\b(afterId|beforeId)\b/.test(e?.message ?? ""))
        return `The cards around where you put it moved meanwhile — your ${what} was undone.`;
    // falls through
    default:
      return `The server refused your ${what} (${e?.message ?? "error"}) — it was undone.`;
  }
}
