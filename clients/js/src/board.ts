// Board: the live tasks of one project, with optimistic local changes (docs/browser-client.md).
import { backoffDelay, LiveboardError, newIdempotencyKey } from "./client.js";
import type { ErrorInfo, LiveboardClient, PresenceInfo, RequestInit, RoomEvent, Subscription } from "./client.js";
import { Emitter } from "./emitter.js";
import { PendingWrites, refusalMessage } from "./pending.js";
import type { Column, Write } from "./pending.js";
import type { EventDataMap, EventType, Position, PresenceUser, Project, Task } from "./protocol.js";

export interface BoardOptions {
  /** Join the project's presence (true). */
  presence?: boolean;
  /** Whose writes these are; with it (and IndexedDB), unsent writes survive a reload. */
  user?: string;
  /** false keeps unsent writes in memory only (true). */
  storage?: boolean;
}

/** One change of the board: an event applied (`type` its type) or a local one (`"local"`). */
export interface BoardChange {
  type: EventType | "local";
  taskId: string;
  task?: Task | undefined;
  previous?: Task | undefined;
  event?: RoomEvent | undefined;
  own: boolean;
}

export interface Rollback {
  write: Write;
  error: unknown;
  /** A sentence for the user ("Someone else changed this card — your move was undone."). */
  message: string;
}

export interface BoardEvents {
  /** The snapshot was (re)loaded. */
  reset: { tasks: Task[] };
  change: BoardChange;
  /** The server refused a change, which is undone. */
  rollback: Rollback;
  /** Writes not yet accepted by the server. */
  queue: { waiting: number };
  presence: PresenceInfo;
  resync: { room: string; reason: string };
  revoked: { room: string; reason: string };
  error: ErrorInfo;
}

/**
 * What a board shows, at one moment: immutable (frozen), and the same object until something
 * changes, so `useSyncExternalStore(board.subscribe, board.getSnapshot)` renders once per
 * change. `version` grows by one with each change.
 */
export interface BoardSnapshot {
  readonly version: number;
  readonly project: Project | null;
  /** Columns in the project's order, each in display order, local changes applied. */
  readonly columns: readonly Readonly<Column>[];
  readonly presence: readonly PresenceUser[];
  /** Writes not yet accepted by the server. */
  readonly waiting: number;
  /** Ids of the tasks with a local change not yet confirmed by the stream. */
  readonly pending: ReadonlySet<string>;
  /** The position of the events applied to the confirmed tasks. */
  readonly position: Position | null;
}

export interface StartOptions {
  /** Aborting it stops the board (before `start` is done: `start` rejects with its reason). */
  signal?: AbortSignal;
}

/** A delete that can be undone within its `undoFor`. */
export type Removal = Promise<null> & { undo: () => boolean };

type Waiter = { resolve: (value: any) => void; reject: (err: unknown) => void };

/** True for a failure that may pass (network, timeouts, overload, key still in flight). */
function transient(err: unknown): boolean {
  const e = err as { status?: number; details?: { reason?: string } } | null;
  const s = e?.status ?? 0;
  return s === 0 || s === 401 || s === 408 || s === 429 || s >= 500 || e?.details?.reason === "idempotency_key_in_flight";
}

type RecordKey = [string, number, string];
let database: Promise<IDBDatabase> | undefined;

/**
 * Keeps a board's unsent writes in IndexedDB: one record per write, keyed [board, made, key], so
 * that tabs of one user add and remove only their own and a reload reads them in order.
 */
class WriteStore {
  private _mine = new Map<string, RecordKey>(); // the records this page has stored
  private _last: Promise<unknown> = Promise.resolve();

  constructor(readonly board: string) {}

  private async _run<T>(mode: IDBTransactionMode, op: (s: IDBObjectStore) => IDBRequest<T> | void): Promise<T | undefined> {
    const db = await (database ??= new Promise((resolve, reject) => {
      const open = indexedDB.open("liveboard", 1);
      open.onupgradeneeded = () => open.result.createObjectStore("writes");
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    }));
    return new Promise((resolve, reject) => {
      const tx = db.transaction("writes", mode);
      const req = op(tx.objectStore("writes"));
      tx.oncomplete = () => resolve(req?.result);
      tx.onerror = () => reject(tx.error);
    });
  }

  async load(): Promise<Write[]> {
    const range = IDBKeyRange.bound([this.board], [this.board, []]);
    return ((await this._run("readonly", (s) => s.getAll(range))) ?? []) as Write[];
  }

  /** Store `writes` in place of what this page stored before (in call order). */
  save(writes: Write[]): Promise<unknown> {
    const records = writes.map((w): [RecordKey, Write] => [[this.board, w.made ?? 0, w.key], { ...w }]);
    const gone = [...this._mine].filter(([key]) => !writes.some((w) => w.key === key));
    this._mine = new Map(records.map(([id, w]) => [w.key, id]));
    this._last = this._last
      .then(() =>
        this._run("readwrite", (s) => {
          for (const [, id] of gone) s.delete(id);
          for (const [id, w] of records) s.put(w, id);
        }),
      )
      .catch((err) => console.warn("liveboard: cannot save the queued writes", err));
    return this._last;
  }
}

let sequence = 0;

/**
 * The live tasks of one project: snapshot, then the stream, applied to a local model, with the
 * user's changes shown at once (docs/browser-client.md, "Optimistic board").
 *
 * Events: `reset`, `change`, `rollback`, `queue`, `presence`, `resync`, `revoked`, `error`.
 * For React: `subscribe(listener)` and `getSnapshot()` (useSyncExternalStore).
 */
export class Board extends Emitter<BoardEvents> {
  readonly client: LiveboardClient;
  readonly projectId: string;
  readonly options: Required<Omit<BoardOptions, "user">> & { user?: string };
  project: Project | null = null;
  /** The tasks as of `position`. */
  tasks = new Map<string, Task>();
  position: Position | null = null;
  presence: PresenceUser[] = [];
  subscription: Subscription | null = null;
  writes = new PendingWrites();
  /** key → {resolve, reject} of the promise a change method returned */
  private _waiters = new Map<string, Waiter>();
  private _sending = false;
  private _retries = 0;
  private _retryTimer: ReturnType<typeof setTimeout> | undefined;
  private _store: WriteStore | null;
  private _restored: Promise<number> | null = null;
  private _off: (() => void)[] = [];
  private _version = 0;
  private _snapshot: BoardSnapshot | null = null;
  private _storeListeners = new Set<() => void>();
  private _stopped = false;
  private _catching = false;
  private _loader = (): Promise<Position> => this._load();

  constructor(client: LiveboardClient, projectId: string, options: BoardOptions = {}) {
    super();
    this.client = client;
    this.projectId = projectId;
    this.options = { presence: true, storage: true, ...options };
    this._store =
      this.options.user && this.options.storage && globalThis.indexedDB
        ? new WriteStore(`${client.baseUrl} ${projectId} ${this.options.user}`)
        : null;
  }

  /** Every emitted event is a change of what the board shows: the snapshot is renewed. */
  override emit<K extends keyof BoardEvents>(type: K, payload: BoardEvents[K]): void {
    this._version += 1;
    this._snapshot = null;
    super.emit(type, payload);
    for (const fn of [...this._storeListeners]) fn();
  }

  /**
   * Call `listener` after every change (the `subscribe` of `useSyncExternalStore`); returns the
   * function that stops it. An arrow function, so it can be passed on unbound.
   */
  subscribe = (listener: () => void): (() => void) => {
    this._storeListeners.add(listener);
    return () => this._storeListeners.delete(listener);
  };

  /** What the board shows now: the same frozen object until the next change. */
  getSnapshot = (): BoardSnapshot => {
    if (this._snapshot) return this._snapshot;
    const columns = this.writes
      .columns(this.tasks.values(), this.statuses)
      .map((c) => Object.freeze({ status: c.status, tasks: Object.freeze(c.tasks) as Task[] }));
    this._snapshot = Object.freeze({
      version: this._version,
      project: this.project,
      columns: Object.freeze(columns),
      presence: Object.freeze([...this.presence]),
      waiting: this.waiting,
      pending: new Set(this.writes.list.map((w) => w.taskId)),
      position: this.position,
    });
    return this._snapshot;
  };

  get statuses(): string[] {
    return this.project?.statuses ?? [];
  }

  /** Writes not yet accepted by the server (shown as "n changes waiting"). */
  get waiting(): number {
    return this.writes.unsent().length;
  }

  /** Load the writes a previous page left unsent (also done by `start`); resolves to their number. */
  restore(): Promise<number> {
    this._restored ??= (async () => {
      if (this._store) {
        try {
          const stored = await this._store.load();
          this.writes = new PendingWrites([...stored, ...this.writes.list]);
        } catch (err) {
          console.warn("liveboard: cannot read the queued writes", err);
        }
      }
      this.writes.list.forEach((w) => (w.held = false)); // a reload ends an undo window
      this._changed();
      return this.writes.list.length;
    })();
    return this._restored;
  }

  /**
   * Load the project and its snapshot, then follow its room and send queued writes. With
   * `signal`, aborting stops the board: before `start` is done, it rejects with the signal's
   * reason and leaves nothing subscribed (React StrictMode's double mount).
   */
  async start(options: StartOptions = {}): Promise<this> {
    const { signal } = options;
    // The abort itself stops the board (once); a start it interrupted only gives up, so that it
    // cannot stop a later start of the same board (StrictMode runs an effect twice).
    const check = (): void => {
      if (signal?.aborted) throw signal.reason ?? new LiveboardError(0, "aborted", "aborted");
    };
    check();
    this._stopped = false;
    signal?.addEventListener("abort", () => this.stop(), { once: true });
    await this.restore();
    check();
    this.project = await this.client.getProject(this.projectId);
    check();
    const position = await this._load();
    check();
    this._off.push(this.client.on("state", (s) => s.state === "connected" && void this._send()));
    const sub = (this.subscription = this.client.subscribe(`project:${this.projectId}`, {
      since: position,
      snapshot: this._loader,
      presence: this.options.presence,
    }));
    this.presence = sub.presence;
    this._off.push(
      sub.on("event", (event) => this._apply(event)),
      sub.on("presence", (p) => {
        this.presence = p.users;
        this.emit("presence", p);
      }),
      sub.on("resync", (r) => this.emit("resync", r)),
      sub.on("revoked", (r) => this.emit("revoked", r)),
      sub.on("error", (e) => this.emit("error", e)),
    );
    void this._catchUp();
    void this._send();
    return this;
  }

  /** Stop following the project (queued writes stay stored for the next Board). */
  stop(): void {
    this._stopped = true;
    for (const off of this._off.splice(0)) off();
    if (this.subscription) {
      this.subscription._loaders.delete(this._loader);
      this.subscription.unsubscribe();
    }
    this.subscription = null;
    clearTimeout(this._retryTimer);
  }

  /**
   * A board that joined a subscription already under way may hold a snapshot older than the
   * stream's position (events it missed before it listened): reload the snapshot until it is at
   * or past that position (the events up to it are then skipped).
   */
  private async _catchUp(): Promise<void> {
    if (this._catching) return;
    this._catching = true;
    try {
      // A few rounds at most: the stream may move on while a snapshot loads. A snapshot in
      // another epoch than the stream's is the subscription's resync to settle (it reloads
      // every board's snapshot through their loaders).
      for (let round = 0; round < 3; round++) {
        const ahead = this.subscription?.position;
        const at = this.position;
        if (this._stopped || !ahead || (at && ahead.epoch === at.epoch && ahead.offset <= at.offset)) return;
        if (round > 0 && at && ahead.epoch !== at.epoch) return;
        await this._load();
      }
    } catch (err) {
      this.emit("error", { code: "snapshot_failed", message: String((err as Error | null)?.message ?? err) });
    } finally {
      this._catching = false;
    }
  }

  private async _load(): Promise<Position> {
    const snapshot = await this.client.listTasks(this.projectId);
    this.tasks = new Map(snapshot.tasks.map((t) => [t.id, t]));
    this.position = { offset: snapshot.offset, epoch: snapshot.epoch };
    this.writes.settle(this.position, true);
    this.emit("reset", { tasks: [...this.tasks.values()] });
    return this.position;
  }

  private _apply(event: RoomEvent): void {
    // A subscription shared with another board may bring events this board's snapshot holds.
    const at = this.position;
    if (at && event.epoch === at.epoch && event.offset <= at.offset) return;
    if (!at || event.epoch !== at.epoch || event.offset > at.offset + 1) {
      void this._catchUp(); // this board's snapshot is older than the shared stream
      return;
    }
    const own = this.client.isOwn(event);
    const data = (event.data ?? {}) as Partial<EventDataMap["task:created"] & EventDataMap["task:moved"]>;
    const taskId = (data.task?.id ?? data.taskId) as string;
    const previous = taskId ? this.tasks.get(taskId) : undefined;
    let task: Task | undefined;
    switch (event.type) {
      case "task:created":
        task = data.task as Task;
        this.tasks.set(task.id, task);
        // The echo of this tab's create can come before the create's answer: writes go one at a
        // time, so it is the unanswered create in flight. Bind them now, or the card would show
        // twice (the pending copy and the confirmed one) until the answer arrives.
        if (own) this.writes.echoed(event, task);
        break;
      case "task:updated":
        task = data.task as Task;
        this.tasks.set(task.id, task);
        break;
      case "task:moved":
        if (previous) {
          const moved = data as EventDataMap["task:moved"] & { task?: Partial<Task> };
          task = {
            ...previous,
            ...(moved.task ?? {}),
            status: moved.toStatus,
            order: moved.task?.order ?? moved.order,
            rank: moved.rank ?? previous.rank,
            version: previous.version + 1,
            updatedAt: new Date(event.ts).toISOString(),
          };
          this.tasks.set(taskId, task);
        }
        break;
      case "task:deleted":
        this.tasks.delete(taskId);
        break;
      default:
        break;
    }
    this.position = { offset: event.offset, epoch: event.epoch };
    this.writes.settle(this.position);
    // Events of other types (another backend's) move the position only.
    if (event.type.startsWith("task:")) {
      this.emit("change", { type: event.type as EventType, taskId, task, previous, event, own });
    }
  }

  // ---- what to draw --------------------------------------------------------------------------

  /** Columns in the project's order, each in display order, local changes applied (frozen). */
  columns(): readonly Readonly<Column>[] {
    return this.getSnapshot().columns;
  }

  /** The tasks as the user should see them (model + local changes). */
  view(): Task[] {
    return this.columns().flatMap((c) => c.tasks);
  }

  task(id: string): Task | undefined {
    return this.view().find((t) => t.id === id);
  }

  /** True while a local change of the task is not yet confirmed by the stream. */
  isPending(id: string): boolean {
    return this.writes.isPending(id);
  }

  /**
   * The `order` that puts a task at `index` of column `status` (not counting `exceptId`):
   * halfway between its neighbours, or one past the end (for servers without §6.2).
   */
  orderAt(status: string, index?: number, exceptId?: string): number {
    const tasks = this._column(status, exceptId);
    const at = index === undefined ? tasks.length : Math.max(0, Math.min(index, tasks.length));
    const [before, after] = [tasks[at - 1], tasks[at]];
    if (before && after) return (before.order + after.order) / 2;
    if (before) return Math.floor(before.order) + 1;
    return after ? after.order - 1 : 1;
  }

  private _column(status: string, exceptId?: string): Task[] {
    return (this.columns().find((c) => c.status === status)?.tasks ?? []).filter((t) => t.id !== exceptId);
  }

  /** `afterId` for `index` of a column (null: the top; undefined: the end). */
  private _after(status: string, index: number | undefined, exceptId: string): string | null | undefined {
    if (index === undefined) return undefined;
    const tasks = this._column(status, exceptId);
    if (index >= tasks.length) return undefined;
    return index <= 0 ? null : (tasks[index - 1] as Task).id;
  }

  // ---- changes (optimistic) ------------------------------------------------------------------

  /**
   * Add a card (at `index` of its column; default: the end). Shown at once with the id
   * `local:<key>`, which becomes the server's when it answers. Resolves to the created task.
   */
  createTask(fields: { title: string; status?: string; description?: string }, index?: number): Promise<Task> {
    const status = fields.status ?? this.statuses[0] ?? "";
    const key = newIdempotencyKey();
    return this._write({
      key,
      kind: "create",
      taskId: `local:${key}`,
      fields: { ...fields, status, afterId: this._after(status, index, "") },
    });
  }

  /** Rename a task; resolves to the updated task. */
  rename(taskId: string, title: string): Promise<Task> {
    // The version the user saw (when confirmed): a title someone changed since is a 409.
    const version = this.isPending(taskId) ? undefined : this.tasks.get(taskId)?.version;
    return this._write({ key: newIdempotencyKey(), kind: "rename", taskId, fields: { title, version } });
  }

  /** Move a task to `toStatus` at `index` among that column's other tasks (default: the end). */
  move(taskId: string, toStatus: string, index?: number): Promise<Task> {
    const afterId = this._after(toStatus, index, taskId);
    return this._write({ key: newIdempotencyKey(), kind: "move", taskId, fields: { status: toStatus, afterId } });
  }

  /**
   * Delete a task: it disappears at once. With `undoFor` (ms) the request waits that long, and
   * `undo()` within it brings the card back without asking the server.
   */
  remove(taskId: string, options: { undoFor?: number } = {}): Removal {
    const key = newIdempotencyKey();
    const held = (options.undoFor ?? 0) > 0;
    const done = this._write<null>({ key, kind: "delete", taskId, fields: {}, held });
    if (!held) return Object.assign(done, { undo: () => false });
    const timer = setTimeout(() => {
      const w = this.writes.get(key);
      if (w) w.held = false;
      this._changed();
      void this._send();
    }, options.undoFor);
    const undo = (): boolean => {
      const w = this.writes.get(key);
      if (!w?.held) return false;
      clearTimeout(timer);
      this.writes.remove(key);
      this._waiters.get(key)?.resolve(null);
      this._waiters.delete(key);
      this._changed();
      return true;
    };
    return Object.assign(done, { undo });
  }

  private _write<T = Task>(write: Write): Promise<T> {
    sequence = (sequence + 1) % 1000;
    write.made = Date.now() + sequence / 1000; // order across reloads
    this.writes.add(write);
    const done = new Promise<T>((resolve, reject) => this._waiters.set(write.key, { resolve, reject }));
    done.catch(() => {}); // the app hears of a refusal through `rollback`
    this._changed(write.taskId);
    void this._send();
    return done;
  }

  /** Tell the app the local state changed, and store what is unsent. */
  private _changed(taskId = ""): void {
    void this._store?.save(this.writes.unsent());
    this.emit("queue", { waiting: this.waiting });
    this.emit("change", { type: "local", taskId, own: true });
  }

  /** Send queued writes one at a time, in order, until none is left or the network fails. */
  private async _send(): Promise<void> {
    if (this._sending || !this.position || this._stopped) return;
    this._sending = true;
    try {
      for (let w; (w = this.writes.next()); ) {
        const answer: NonNullable<RequestInit["answer"]> = {};
        let result: unknown;
        try {
          const [method, path, body] = this._call(w);
          result = await this.client.request(method, path, body, { headers: { "Idempotency-Key": w.key }, answer });
        } catch (err) {
          if (transient(err)) {
            this._retry();
            return;
          }
          this._refused(w, err);
          continue;
        }
        this._retries = 0;
        this.writes.answered(w.key, answer.position ?? null, w.kind === "create" ? (result as Task) : undefined);
        if (this.position) this.writes.settle(this.position);
        this._waiters.get(w.key)?.resolve(result);
        this._waiters.delete(w.key);
        this._changed(w.taskId);
      }
    } finally {
      this._sending = false;
    }
  }

  /** Try again after a backoff, or as soon as the client connects again. */
  private _retry(): void {
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => void this._send(), backoffDelay(this._retries++, 1000, 30000));
  }

  private _call(w: Write): [string, string, unknown] {
    const tid = `/api/tasks/${encodeURIComponent(w.taskId)}`;
    // Placed by its neighbour (CONTRACT §6.2: the server picks the rank; none = the end). A server
    // without §6.2 (its tasks have no `rank`) ignores afterId: it gets the numeric `order` too,
    // which a §6.2 server would refuse next to afterId (422). An empty column needs neither.
    const place = (status: string): { afterId?: string | null; order?: number } => {
      const after = w.fields.afterId;
      const column = this._column(status, w.taskId);
      if (after === undefined || !column.length) return {};
      if ([...this.tasks.values()].some((t) => typeof t.rank === "string")) return { afterId: after };
      const i = after === null ? 0 : column.findIndex((t) => t.id === after) + 1;
      return { afterId: after, order: this.orderAt(status, i > 0 || after === null ? i : undefined, w.taskId) };
    };
    switch (w.kind) {
      case "create": {
        const { afterId, ...task } = w.fields;
        return ["POST", `/api/projects/${encodeURIComponent(this.projectId)}/tasks`, { ...task, ...place(task.status ?? "") }];
      }
      case "move":
        return ["POST", `${tid}/move`, { toStatus: w.fields.status, ...place(w.fields.status ?? "") }];
      case "rename":
        return ["PATCH", tid, { title: w.fields.title, version: w.fields.version }];
      default:
        return ["DELETE", tid, undefined];
    }
  }

  private _refused(w: Write, err: unknown): void {
    for (const gone of this.writes.refused(w.key)) {
      this._waiters.get(gone.key)?.reject(err);
      this._waiters.delete(gone.key);
    }
    const message = refusalMessage(w, err);
    this._changed(w.taskId);
    this.emit("rollback", { write: w, error: err, message });
  }
}
