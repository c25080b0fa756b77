// The connection: REST + WebSocket, one client per server and user (docs/browser-client.md).
//
// - a token, or an async token provider called again on reconnect and before the token's `exp`
//   (the open socket is kept alive with the `refresh` message);
// - connection states: connecting, connected, reconnecting, offline (navigator.onLine is false,
//   or several attempts in a row failed) and closed (close() was called, or the server refused
//   the client for good: the close codes the protocol's policy calls fatal, CLOSE_ACTIONS);
// - reconnect with exponential backoff and full jitter (capped), a flat short delay after 1012
//   (server restarting), none after a fatal one;
// - an application-level heartbeat: {"type":"ping"} every 15 s; no frame at all within 5 s
//   after it means the link is dead, and the client reconnects at once;
// - per-room {offset, epoch}: resubscribe with `since` after a reconnect; an event is never
//   delivered twice or out of order (offsets at or below the last applied one are dropped);
// - `recovered: false` and `resync` surface as one `resync` event; a room given a `snapshot`
//   loader is refetched and resubscribed by the client itself;
// - `unsubscribed` with a reason (membership revoked) surfaces as `revoked`;
// - presence join/leave, acknowledged, joined again after every reconnect;
// - REST with the Bearer token and `X-Connection-Id`, so a tab recognises the echo of its own
//   changes (`client.isOwn(event)`).
import { Emitter } from "./emitter.js";
import { CLOSE_ACTIONS } from "./protocol.js";
import type {
  ClientMessage,
  CloseAction,
  CloseCode,
  EventMap,
  EventType,
  Position,
  PresenceUser,
  Project,
  ServerMessage,
  Task,
} from "./protocol.js";

export type ConnectionState = "idle" | "connecting" | "connected" | "reconnecting" | "offline" | "closed";

/** A JWT, or a function returning one (called again on reconnect and before expiry). */
export type TokenOption = string | (() => string | Promise<string>);

/** The WebSocket constructor the client uses (the global one by default). */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

export interface ClientOptions {
  token: TokenOption;
  /** REST base URL. Default: this page's origin; required outside a browser (no implicit localhost). */
  baseUrl?: string;
  /** WebSocket URL. Default: baseUrl with ws(s):// + "/ws/connect". */
  wsUrl?: string;
  /** ms between app-level pings (15000). */
  heartbeatInterval?: number;
  /** ms without any frame after a ping: the link is dead (5000). */
  heartbeatTimeout?: number;
  /** ms for an attempt to get `connected` (10000). */
  connectTimeout?: number;
  /** ms; attempt n waits random(0, min(backoffMax, backoffBase * 2^n)) (500). */
  backoffBase?: number;
  /** ms; the cap of that delay (15000). */
  backoffMax?: number;
  /** failed attempts in a row before the state is `offline` (5); the client keeps trying. */
  offlineAfter?: number;
  /** ms range of each attempt's delay after close code 1012/1013 ([0, 1500]). */
  restartDelay?: [number, number];
  /** ms after a 1012 during which that flat pace holds (30000). */
  restartWindow?: number;
  /** ms a connection must last to reset the backoff (5000). */
  stableAfter?: number;
  /** Connect in the constructor. Default: true in a browser, false elsewhere (server code). */
  autoConnect?: boolean;
  /** Where the upgrade carries the token: `Sec-WebSocket-Protocol` (default) or `?token=`. */
  tokenIn?: "protocol" | "query";
  /** The WebSocket class (Node 20: `--experimental-websocket`, or the `ws` package). */
  WebSocket?: WebSocketConstructor;
}

/** The options in effect, defaults filled in. */
export type ClientSettings = Required<Omit<ClientOptions, "baseUrl" | "wsUrl" | "WebSocket" | "token">>;

/** An event of a room, as every subscriber receives it: liveboard's own or another backend's. */
export interface RoomEvent<T extends string = string, D = unknown> {
  type: T;
  room: string;
  offset: number;
  epoch: string;
  /** Commit time, unix ms. */
  ts: number;
  /** Who made the change; null for an event a service published. */
  userId: string | null;
  /** Connection id given in X-Connection-Id by the author. */
  origin?: string;
  data: D;
}

/**
 * The events a room may carry, by type: liveboard's own (`EventMap`, from the protocol's
 * generated declarations) and the custom ones an app declares (`{"comment:added": {...}}`).
 */
export type RoomEventMap<Custom extends object = {}> = EventMap & {
  [K in keyof Custom & string]: RoomEvent<K, Custom[K]>;
};

export interface Workspace {
  id: string;
  name: string;
  createdAt: string;
}

export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  attempt: number;
  retryIn?: number | undefined;
  code?: number | undefined;
  reason?: string | undefined;
  restarting?: boolean | undefined;
}

export interface ErrorInfo {
  code: string;
  message: string;
}

export interface ClientEvents {
  state: StateChange;
  connected: { connectionId: string; userId: string };
  disconnected: { code: number; reason: string };
  error: ErrorInfo;
  /** Every server message, for debugging. */
  message: ServerMessage;
}

export interface SubscribedInfo {
  room: string;
  offset: number;
  epoch: string;
  /** Present when the subscription continued from a position: true (always, else `resync`). */
  recovered: boolean | undefined;
}

export interface PresenceInfo {
  users: PresenceUser[];
  joined: string[];
  left: string[];
}

export interface SubscriptionEvents {
  /** Each event once, in offset order (every type, custom ones too). */
  event: RoomEvent;
  subscribed: SubscribedInfo;
  /** The stream could not continue from the position: refetch your snapshot. */
  resync: { room: string; reason: string };
  revoked: { room: string; reason: string };
  presence: PresenceInfo;
  error: ErrorInfo;
}

export interface SubscribeOptions {
  /** The position of a snapshot you already hold. */
  since?: Position | null;
  /** A loader the client calls after a resync; it returns the new snapshot's position. */
  snapshot?: (() => Promise<Position>) | null;
  /** Join the room's presence at once. */
  presence?: boolean;
}

/** A page of a room's history (`GET /api/rooms/{room}/events`). */
export interface HistoryPage {
  events: RoomEvent[];
  offset: number;
  epoch: string;
  truncated?: boolean;
}

export interface RequestInit {
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Receives the event position the answer named (`Liveboard-Offset`/`-Epoch`), or null. */
  answer?: { position?: Position | null };
}

export interface NewTask {
  title: string;
  description?: string;
  status?: string;
  assigneeId?: string | null;
  order?: number;
  afterId?: string | null;
  beforeId?: string | null;
}

export interface TaskPatch {
  title?: string;
  description?: string;
  assigneeId?: string | null;
  version?: number;
}

export interface TaskMove {
  toStatus: string;
  order?: number;
  afterId?: string | null;
  beforeId?: string | null;
  version?: number;
}

export type { Position, PresenceUser, Project, Task };

/** What to do after a close: the protocol's generated policy (a code not listed: reconnect). */
const closeAction = (code: number): CloseAction => CLOSE_ACTIONS[code as CloseCode] ?? "reconnect";
const CLOSE_DEAD_LINK = 4900; // our own: heartbeat or connect timeout (never sent by the server)
const OPEN = 1; // WebSocket.OPEN, without needing the global

/** Decode a JWT's payload (no verification); null when it is not one. */
export function decodeJwt(token: string): Record<string, unknown> | null {
  try {
    const b64 = (token.split(".")[1] ?? "").replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/**
 * A new Idempotency-Key: a random UUID (crypto.randomUUID needs a secure context; outside one,
 * 128 bits from crypto.getRandomValues, in hex).
 */
export function newIdempotencyKey(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Full-jitter exponential backoff for the 0-based `attempt`. */
export function backoffDelay(attempt: number, base = 500, max = 15000, random = Math.random): number {
  const ceiling = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.round(random() * ceiling);
}

/** An error answered by the REST API (or a network failure: status 0, code "network_error"). */
export class LiveboardError extends Error {
  status: number;
  code: string;
  details: unknown;
  constructor(status: number, code: string, message: string, details?: unknown) {
    super(message);
    this.name = "LiveboardError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

const why = (err: unknown): string => String((err as Error | null)?.message ?? err);

/** Holds the current token; calls the provider when needed. */
class TokenSource {
  private _provider: (() => string | Promise<string>) | null = null;
  private _token: string | null = null;
  private _inflight: Promise<string> | null = null;

  constructor(option: TokenOption) {
    this.set(option);
  }

  set(option: TokenOption): void {
    this._provider = typeof option === "function" ? option : null;
    this._token = typeof option === "function" ? null : option;
    this._inflight = null;
  }

  get canRefresh(): boolean {
    return this._provider !== null;
  }

  /** Seconds since the epoch at which the current token expires, or null. */
  get expiresAt(): number | null {
    const exp = this._token ? decodeJwt(this._token)?.["exp"] : null;
    return typeof exp === "number" ? exp : null;
  }

  /** Seconds the current token is valid for in total (exp - iat), or null. */
  get lifetime(): number | null {
    const p = this._token ? decodeJwt(this._token) : null;
    return p && typeof p["exp"] === "number" && typeof p["iat"] === "number" ? p["exp"] - p["iat"] : null;
  }

  /** The token, asking the provider for a new one when `fresh`, missing or about to expire. */
  async get(fresh = false): Promise<string> {
    const exp = this.expiresAt;
    const stale = exp !== null && exp - Date.now() / 1000 < 5;
    if (this._token && !fresh && !stale) return this._token;
    const provider = this._provider;
    if (!provider) {
      if (!this._token) throw new LiveboardError(0, "unauthorized", "no token");
      if (stale) throw new LiveboardError(401, "unauthorized", "the token has expired");
      return this._token;
    }
    this._inflight ??= Promise.resolve()
      .then(provider)
      .then((token) => {
        if (typeof token !== "string" || !token) throw new Error("token provider gave no token");
        this._token = token;
        return token;
      })
      .finally(() => {
        this._inflight = null;
      });
    return this._inflight;
  }
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (err: unknown) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((ok, fail) => ((resolve = ok), (reject = fail)));
  promise.catch(() => {}); // a rejection nobody awaits is not an unhandled one
  return { promise, resolve, reject };
}

/**
 * One room of a client: its stream position, its events and its presence. Shared by everyone
 * who subscribed to the room on this client, reference-counted: the server is told to stop
 * only when the last of them calls `unsubscribe()`.
 *
 * Events: `event` (each once, in offset order), `subscribed`, `resync` (refetch your snapshot),
 * `revoked`, `presence`, `error`. `onEvent(type, fn)` listens to one event type, typed.
 */
export class Subscription<Custom extends object = {}> extends Emitter<SubscriptionEvents> {
  readonly client: LiveboardClient;
  readonly room: string;
  /** The last applied event's position (null: none yet). */
  position: Position | null;
  presence: PresenceUser[] = [];
  wantPresence: boolean;
  /** The first snapshot loader given (kept for compatibility); see `_loaders`. */
  snapshot: (() => Promise<Position>) | null;
  /** true while events of this room are applied (between `subscribed` and a disconnect) */
  active = false;
  closed = false;
  /** @internal how many `subscribe()` calls this subscription answers */
  _refs = 1;
  /** @internal every snapshot loader of the subscribers: all are called after a resync */
  _loaders = new Set<() => Promise<Position>>();
  /** @internal */
  _pendingId: number | null = null;
  /** @internal */
  _loading = false;
  private _pendingSince: Position | null = null;
  private _ready = deferred<SubscribedInfo>();
  private _readyDone = false;
  private _joins: Deferred<PresenceUser[]>[] = [];
  private _acks = new Map<number, Deferred<void>>();

  constructor(client: LiveboardClient, room: string, options: SubscribeOptions) {
    super();
    this.client = client;
    this.room = room;
    this.position = options.since ? { ...options.since } : null;
    this.wantPresence = Boolean(options.presence);
    this.snapshot = options.snapshot ?? null;
    if (options.snapshot) this._loaders.add(options.snapshot);
  }

  /**
   * Resolves when the server has confirmed the subscription (events flow from then on);
   * rejects if it is refused (`revoked`, an error) or unsubscribed first.
   */
  ready(): Promise<SubscribedInfo> {
    return this._ready.promise;
  }

  /** Listen to the events of one type, typed from the protocol (or the declared custom map). */
  onEvent<K extends keyof RoomEventMap<Custom>>(type: K, fn: (event: RoomEventMap<Custom>[K]) => void): () => void {
    return this.on("event", (event) => {
      if (event.type === type) fn(event as unknown as RoomEventMap<Custom>[K]);
    });
  }

  /**
   * Show this user as present in the room (again after every reconnect). Resolves with the
   * room's users once the server has counted this connection in (its `presence:update`).
   */
  join(): Promise<PresenceUser[]> {
    this.wantPresence = true;
    const waiter = deferred<PresenceUser[]>();
    this._joins.push(waiter);
    if (this.active) this._sendPresence("join");
    if (this.closed) waiter.reject(new LiveboardError(0, "not_subscribed", `${this.room} is not subscribed`));
    return waiter.promise;
  }

  /**
   * Stop showing this user as present. Resolves once the server has processed it (a `ping`
   * sent after it is answered: the server handles a connection's messages in order).
   */
  leave(): Promise<void> {
    this.wantPresence = false;
    for (const j of this._joins.splice(0)) j.reject(new LiveboardError(0, "left", "left before joining"));
    if (!this.active) return Promise.resolve(); // not present anywhere: nothing to undo
    const sent = this._sendPresence("leave");
    const ack = deferred<void>();
    const id = this.client._nextId();
    if (!sent || !this.client._send({ type: "ping", id })) return Promise.resolve();
    this._acks.set(id, ack);
    return ack.promise;
  }

  /** Continue from a snapshot's position (after `resync`, when you loaded it yourself). */
  resume(position: Position): void {
    this.position = { ...position };
    this._subscribe();
  }

  /**
   * Release this caller's hold on the subscription; the last one ends it (the server stops
   * sending its events).
   */
  unsubscribe(): void {
    if (this.closed) return;
    if (--this._refs > 0) return;
    this.closed = true;
    this.active = false;
    this.client._rooms.delete(this.room);
    this.client._send({ type: "unsubscribe", room: this.room });
    this._fail(new LiveboardError(0, "unsubscribed", `${this.room} was unsubscribed`));
  }

  private _sendPresence(action: "join" | "leave"): boolean {
    return this.client._send({ type: "presence", action, room: this.room });
  }

  private _fail(err: unknown): void {
    if (!this._readyDone) this._ready.reject(err);
    this._readyDone = true;
    for (const j of this._joins.splice(0)) j.reject(err);
    for (const a of this._acks.values()) a.reject(err);
    this._acks.clear();
  }

  /** @internal */
  _subscribe(): void {
    if (this.closed) return;
    this.active = false;
    const id = this.client._nextId();
    this._pendingId = id;
    this._pendingSince = this.position;
    const message: ClientMessage = { type: "subscribe", room: this.room, id };
    if (this.position) message.since = { offset: this.position.offset, epoch: this.position.epoch };
    this.client._send(message);
  }

  /** @internal */
  _onDisconnect(): void {
    this.active = false;
    this._pendingId = null;
    // A leave in flight: the connection's presence ended with it anyway.
    for (const a of this._acks.values()) a.resolve();
    this._acks.clear();
  }

  /** @internal */
  _onPong(id: unknown): boolean {
    const ack = typeof id === "number" ? this._acks.get(id) : undefined;
    if (!ack) return false;
    this._acks.delete(id as number);
    ack.resolve();
    return true;
  }

  /** @internal */
  _onPresence(p: PresenceInfo): void {
    this.presence = p.users;
    if (this.wantPresence && p.users.some((u) => u.userId === this.client.userId)) {
      for (const j of this._joins.splice(0)) j.resolve(p.users);
    }
    this.emit("presence", p);
  }

  /** @internal */
  _onSubscribed(msg: { id?: string | number; offset: number; epoch: string; recovered?: boolean }): void {
    if (msg.id !== this._pendingId) return; // a reply to an earlier subscribe; a newer one is due
    this._pendingId = null;
    const since = this._pendingSince;
    if (since && msg.recovered === false) {
      this._resync(msg.epoch !== since.epoch ? "epoch_changed" : "history_unavailable");
      return;
    }
    if (!since) this.position = { offset: msg.offset, epoch: msg.epoch };
    this.active = true;
    if (this.wantPresence) this._sendPresence("join");
    const subscribed: SubscribedInfo = {
      room: this.room,
      offset: msg.offset,
      epoch: msg.epoch,
      recovered: since ? msg.recovered !== false : undefined,
    };
    if (!this._readyDone) this._ready.resolve(subscribed);
    this._readyDone = true;
    this.emit("subscribed", subscribed);
  }

  /** @internal */
  _onEvent(event: RoomEvent): void {
    if (!this.active || !this.position) return;
    if (event.epoch !== this.position.epoch) {
      this._resync("epoch_changed");
      return;
    }
    if (event.offset <= this.position.offset) return; // already applied
    if (event.offset !== this.position.offset + 1) {
      // A gap (the server never sends one without resync): ask for what is missing.
      this._subscribe();
      return;
    }
    this.position = { offset: event.offset, epoch: event.epoch };
    this.emit("event", event);
  }

  /** @internal The stream cannot continue from our position: tell the app once, then recover. */
  _resync(reason: string): void {
    this.active = false;
    this._pendingId = null;
    this.emit("resync", { room: this.room, reason });
    if (this._loaders.size) {
      void this._reload();
    } else {
      // No loader: carry on live from the room's head; the app refetches on `resync`.
      this.position = null;
      this._subscribe();
    }
  }

  /** @internal Reload every subscriber's snapshot; continue from the oldest of them. */
  async _reload(): Promise<void> {
    if (this._loading || this.closed) return;
    this._loading = true;
    try {
      const positions = await Promise.all([...this._loaders].map((load) => load()));
      this._loading = false;
      const oldest = positions.reduce((a, b) => (b.epoch === a.epoch && b.offset < a.offset ? b : a));
      if (!this.closed) this.resume(oldest);
    } catch (err) {
      this._loading = false;
      this.emit("error", { code: "snapshot_failed", message: why(err) });
      // Try again after a while (or on the next reconnect, whichever comes first).
      setTimeout(() => {
        if (!this.active && !this.closed && this.client.state === "connected") void this._reload();
      }, 2000);
    }
  }

  /** @internal */
  _onRevoked(reason: string): void {
    this.closed = true;
    this.active = false;
    this.presence = [];
    this.client._rooms.delete(this.room);
    this._fail(new LiveboardError(403, reason, `${this.room}: ${reason}`));
    this.emit("revoked", { room: this.room, reason });
  }

  /** @internal an error answering this subscription's subscribe */
  _onError(code: string, message: string): void {
    this._fail(new LiveboardError(0, code, message));
    this.emit("error", { code, message });
  }
}

const inBrowser = (): boolean => typeof window !== "undefined" && typeof document !== "undefined";

/**
 * A connection to a liveboard server (REST + WebSocket).
 *
 * Events: `state`, `connected`, `disconnected`, `error`, `message` (every server message).
 * Outside a browser it needs `baseUrl` (there is no implicit localhost) and does not connect
 * until `connect()` (or `autoConnect: true`).
 */
export class LiveboardClient extends Emitter<ClientEvents> {
  readonly baseUrl: string;
  readonly wsUrl: string;
  readonly options: ClientSettings;
  state: ConnectionState = "idle";
  /** This connection's id (sent as X-Connection-Id). */
  connectionId: string | null = null;
  userId: string | null = null;
  /** @internal */
  _rooms = new Map<string, Subscription<object>>();
  /** every connection id this client ever had: echoes of its changes carry one of them */
  private _ownIds = new Set<string>();
  private _tokens: TokenSource;
  private _WebSocket: WebSocketConstructor | undefined;
  private _ws: WebSocket | null = null;
  private _attempt = 0;
  private _restartUntil = 0;
  private _freshToken = false;
  private _msgId = 0;
  private _connectedAt = 0;
  private _lastFrameAt = 0;
  private _timers: Record<string, ReturnType<typeof setTimeout>> = {};
  private _pendingRefresh: number | null = null;
  private _opening = false;
  private _stopped = true;
  private _onOnline = (): void => this._wake();
  private _onOffline = (): void => this._wentOffline();
  private _onVisible = (): void => {
    if (globalThis.document?.visibilityState === "visible") this._wake();
  };

  constructor(options: ClientOptions) {
    super();
    const origin = globalThis.location?.origin;
    const base = options.baseUrl ?? (origin && origin !== "null" ? origin : undefined);
    if (!base) {
      throw new LiveboardError(0, "no_base_url", "liveboard: baseUrl is required outside a browser page");
    }
    this.baseUrl = base.replace(/\/$/, "");
    this.wsUrl = options.wsUrl ?? this.baseUrl.replace(/^http/, "ws") + "/ws/connect";
    this._WebSocket = options.WebSocket;
    this.options = {
      heartbeatInterval: 15000,
      heartbeatTimeout: 5000,
      connectTimeout: 10000,
      backoffBase: 500,
      backoffMax: 15000,
      offlineAfter: 5,
      restartDelay: [0, 1500],
      restartWindow: 30000,
      stableAfter: 5000,
      autoConnect: inBrowser(),
      tokenIn: "protocol",
      ...definedOnly(options),
    };
    this._tokens = new TokenSource(options.token);
    if (this.options.autoConnect) this.connect();
  }

  // ---- connection ----------------------------------------------------------------------------

  /** Start (or restart) connecting. */
  connect(): void {
    if (!this._stopped) return;
    this._stopped = false;
    this._attempt = 0;
    globalThis.addEventListener?.("online", this._onOnline);
    globalThis.addEventListener?.("offline", this._onOffline);
    globalThis.document?.addEventListener?.("visibilitychange", this._onVisible);
    this._setState("connecting");
    void this._open();
  }

  /** Close the connection for good (until `connect()`). */
  close(): void {
    this._stopped = true;
    this._clearTimer("retry");
    globalThis.removeEventListener?.("online", this._onOnline);
    globalThis.removeEventListener?.("offline", this._onOffline);
    globalThis.document?.removeEventListener?.("visibilitychange", this._onVisible);
    this._clearTimers();
    const ws = this._ws;
    if (ws) {
      this._detach(ws);
      ws.close(1000, "client closed");
      this._afterClose(1000, "client closed");
    }
    this._setState("closed");
  }

  /**
   * Try to connect now instead of at the scheduled retry (a "Retry now" button), with the
   * backoff started over. Does nothing while connected, closed, or while an attempt is under way.
   */
  retryNow(): void {
    this._wake();
  }

  /** Replace the token (or provider); used from the next connection attempt or refresh on. */
  setToken(token: TokenOption): void {
    this._tokens.set(token);
  }

  /** The current token (calls the provider if needed). */
  token(): Promise<string> {
    return this._tokens.get();
  }

  /** True when an event was caused by a request of this client (its X-Connection-Id). */
  isOwn(event: { origin?: string | undefined }): boolean {
    return Boolean(event.origin && this._ownIds.has(event.origin));
  }

  /**
   * Subscribe to a room (`project:{pid}` or `workspace:{wid}`). Subscribing again to the same
   * room returns the same Subscription with one more reference: each caller calls
   * `unsubscribe()` once, and the last one ends it. `Custom` declares the room's custom event
   * types and their `data`, for `onEvent`.
   */
  subscribe<Custom extends object = {}>(room: string, options: SubscribeOptions = {}): Subscription<Custom> {
    const existing = this._rooms.get(room);
    if (existing) {
      existing._refs += 1;
      if (options.snapshot) existing._loaders.add(options.snapshot);
      if (options.presence && !existing.wantPresence) void existing.join();
      return existing as Subscription<Custom>;
    }
    const sub = new Subscription<Custom>(this, room, options);
    this._rooms.set(room, sub);
    if (this.state === "connected") sub._subscribe();
    return sub;
  }

  /** The subscription of `room` on this client, if any (what `subscribe` would share). */
  room(room: string): Subscription | undefined {
    return this._rooms.get(room);
  }

  private async _open(): Promise<void> {
    if (this._stopped || this._opening || this._ws) return;
    this._clearTimer("retry");
    if (globalThis.navigator?.onLine === false) {
      this._setState("offline");
      return; // the "online" event wakes us
    }
    let token: string;
    this._opening = true;
    try {
      token = await this._tokens.get(this._freshToken);
    } catch (err) {
      this._opening = false;
      if (this._stopped) return;
      if (!this._tokens.canRefresh) {
        // A static token that expired: nothing to retry with until setToken() + connect().
        this.emit("error", { code: "token_expired", message: why(err) });
        this.close();
        return;
      }
      // A provider served by the restarting server fails too: same flat pace as a refused connect.
      const restarting = Date.now() < this._restartUntil;
      const delay = restarting ? this._restartDelay() : this._backoff();
      this._scheduleRetry(delay, `token provider failed: ${why(err)}`, undefined, restarting);
      return;
    }
    this._opening = false;
    if (this._stopped) return;
    const sep = this.wsUrl.includes("?") ? "&" : "?";
    let ws: WebSocket;
    try {
      const Socket = this._WebSocket ?? globalThis.WebSocket;
      ws =
        this.options.tokenIn === "query"
          ? new Socket(`${this.wsUrl}${sep}token=${encodeURIComponent(token)}`)
          : new Socket(this.wsUrl, ["liveboard.v1", `liveboard.token.${token}`]);
    } catch (err) {
      this._scheduleRetry(this._backoff(), String(err));
      return;
    }
    this._ws = ws;
    this._connectedAt = 0;
    ws.onmessage = (e) => this._onFrame(ws, e.data);
    ws.onclose = (e) => {
      if (ws !== this._ws) return;
      this._detach(ws);
      this._afterClose(e.code, e.reason);
    };
    ws.onerror = () => {}; // a close event follows
    this._setTimer("connect", this.options.connectTimeout, () => {
      if (ws === this._ws && !this._connectedAt) this._drop(ws, "connect timeout");
    });
  }

  /** Forget a socket without waiting for its close handshake (a dead link may never answer). */
  private _drop(ws: WebSocket, reason: string): void {
    this._detach(ws);
    try {
      ws.close(CLOSE_DEAD_LINK, reason);
    } catch {
      /* already closed */
    }
    this._afterClose(CLOSE_DEAD_LINK, reason);
  }

  private _detach(ws: WebSocket): void {
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = null;
    if (this._ws === ws) this._ws = null;
  }

  private _afterClose(code: number, reason: string): void {
    const wasConnected = this._connectedAt > 0;
    const uptime = wasConnected ? Date.now() - this._connectedAt : 0;
    this._connectedAt = 0;
    this.connectionId = null;
    this._clearTimers();
    for (const sub of this._rooms.values()) sub._onDisconnect();
    if (wasConnected) this.emit("disconnected", { code, reason });
    if (this._stopped) return;
    const action = closeAction(code);
    if (action === "fatal") {
      this.emit("error", { code: `closed_${code}`, message: reason || `closed with ${code}` });
      this.close();
      return;
    }
    if (uptime >= this.options.stableAfter) this._attempt = 0;
    // A connection refused before `connected` may be an auth failure (browsers hide the 401):
    // ask the provider for a new token next time. So does 4001.
    this._freshToken = !wasConnected || action === "new_token";
    // A restarting server is coming back soon: retry at a short, flat, jittered pace until it
    // does (or the window ends); doubling on each refused connect pushed clients' return far
    // past the moment it listened.
    if (action === "reconnect_later") {
      this._restartUntil = Date.now() + this.options.restartWindow;
      this._attempt = 0;
    }
    const restarting = Date.now() < this._restartUntil;
    let delay = restarting ? this._restartDelay() : this._backoff();
    if (action === "new_token" && this._attempt === 0) delay = 0;
    this._scheduleRetry(delay, reason, code, restarting);
  }

  private _restartDelay(): number {
    const [lo, hi] = this.options.restartDelay;
    return lo + Math.random() * (hi - lo);
  }

  /** The delay before the next attempt: full jitter, exponential, capped. */
  private _backoff(): number {
    return backoffDelay(this._attempt, this.options.backoffBase, this.options.backoffMax);
  }

  /** `restarting`: inside a restart window, not counted as a failed attempt. */
  private _scheduleRetry(delay: number, reason?: string, code?: number, restarting = false): void {
    if (!restarting) this._attempt += 1;
    const netDown = globalThis.navigator?.onLine === false;
    const offline = netDown || this._attempt > this.options.offlineAfter;
    this._setState(offline ? "offline" : "reconnecting", { retryIn: delay, code, reason, restarting });
    if (netDown) return; // wait for "online"
    this._setTimer("retry", delay, () => void this._open());
  }

  /** The network is back or the tab became visible: retry now if we are waiting. */
  private _wake(): void {
    if (this._stopped || this._ws || this._opening || this.state === "connected") return;
    if (!this._timers["retry"] && this.state !== "offline") return; // an attempt is under way
    this._attempt = 0;
    void this._open();
  }

  private _wentOffline(): void {
    if (this._stopped) return;
    if (this.state === "connected") {
      this._sendPing(); // find out quickly whether the link survived
    } else {
      this._clearTimer("retry");
      this._setState("offline");
    }
  }

  private _setState(state: ConnectionState, extra: Partial<StateChange> = {}): void {
    const previous = this.state;
    this.state = state;
    if (previous !== state || state === "reconnecting" || state === "offline") {
      this.emit("state", { state, previous, attempt: this._attempt, ...(extra as object) });
    }
  }

  // ---- frames --------------------------------------------------------------------------------

  /** @internal */
  _nextId(): number {
    this._msgId += 1;
    return this._msgId;
  }

  /** @internal Send a message if connected; returns whether it was sent. */
  _send(message: ClientMessage): boolean {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN || !this._connectedAt) return false;
    ws.send(JSON.stringify(message));
    return true;
  }

  private _onFrame(ws: WebSocket, data: unknown): void {
    if (ws !== this._ws) return;
    this._lastFrameAt = Date.now();
    let msg: ServerMessage;
    try {
      msg = JSON.parse(String(data));
    } catch {
      return;
    }
    this.emit("message", msg);
    const room = "room" in msg && msg.room ? this._rooms.get(msg.room) : undefined;
    switch (msg.type) {
      case "connected":
        this._onConnected(msg.connectionId, msg.userId);
        break;
      case "subscribed":
        room?._onSubscribed(msg);
        break;
      case "unsubscribed":
        if (msg.reason && room) room._onRevoked(msg.reason);
        break;
      case "resync":
        room?._resync(msg.reason ?? "continuity_lost");
        break;
      case "presence:update":
        room?._onPresence({ users: msg.users, joined: msg.joined, left: msg.left });
        break;
      case "pong":
        for (const sub of this._rooms.values()) if (sub._onPong(msg.id)) break;
        break;
      case "refreshed":
        this._pendingRefresh = null;
        this._scheduleRefresh();
        break;
      case "error":
        this._onError(msg);
        break;
      default:
        if (typeof (msg as RoomEvent).offset === "number") room?._onEvent(msg as RoomEvent);
    }
  }

  private _onConnected(connectionId: string, userId: string): void {
    this._clearTimer("connect");
    this._connectedAt = Date.now();
    this._restartUntil = 0;
    this.connectionId = connectionId;
    this.userId = userId;
    this._ownIds.add(connectionId);
    this._freshToken = false;
    if (this._attempt > 0 && this.options.stableAfter <= 0) this._attempt = 0;
    this._setState("connected");
    this.emit("connected", { connectionId, userId });
    this._startHeartbeat();
    this._scheduleRefresh();
    for (const sub of this._rooms.values()) {
      if (sub._loading) continue; // it subscribes when its snapshot is in
      if (sub.position === null && sub._loaders.size) void sub._reload();
      else sub._subscribe();
    }
  }

  private _onError(msg: { code: string; message: string; id?: string | number }): void {
    if (msg.id !== undefined && msg.id === this._pendingRefresh) {
      this._pendingRefresh = null;
      this.emit("error", { code: "refresh_failed", message: msg.message });
      return;
    }
    for (const sub of this._rooms.values()) {
      if (msg.id !== undefined && sub._pendingId === msg.id) {
        sub._pendingId = null;
        if (msg.code === "forbidden" || msg.code === "invalid_room") sub._onRevoked(msg.code);
        else sub._onError(msg.code, msg.message);
        return;
      }
    }
    this.emit("error", { code: msg.code, message: msg.message });
  }

  // ---- heartbeat and token refresh -----------------------------------------------------------

  private _startHeartbeat(): void {
    this._setTimer("heartbeat", this.options.heartbeatInterval, () => {
      this._sendPing();
      this._startHeartbeat();
    });
  }

  private _sendPing(): void {
    const ws = this._ws;
    if (!ws || !this._send({ type: "ping" })) return;
    const sentAt = Date.now();
    this._setTimer("pong", this.options.heartbeatTimeout, () => {
      if (ws === this._ws && this._lastFrameAt < sentAt) this._drop(ws, "heartbeat timeout");
    });
  }

  private _scheduleRefresh(): void {
    this._clearTimer("refresh");
    const exp = this._tokens.expiresAt;
    if (!this._tokens.canRefresh || exp === null) return;
    const lifetime = this._tokens.lifetime ?? 600;
    const margin = Math.max(10, Math.min(60, lifetime * 0.1));
    const delay = Math.max(0, (exp - margin) * 1000 - Date.now());
    this._setTimer("refresh", Math.min(delay, 2 ** 31 - 1), () => void this._refresh());
  }

  private async _refresh(): Promise<void> {
    try {
      const token = await this._tokens.get(true);
      const id = this._nextId();
      if (this._send({ type: "refresh", token, id })) this._pendingRefresh = id;
    } catch (err) {
      this.emit("error", { code: "refresh_failed", message: why(err) });
      this._setTimer("refresh", 5000, () => void this._refresh());
    }
  }

  // ---- timers --------------------------------------------------------------------------------

  private _setTimer(name: string, ms: number, fn: () => void): void {
    this._clearTimer(name);
    this._timers[name] = setTimeout(() => {
      delete this._timers[name];
      fn();
    }, ms);
  }

  private _clearTimer(name: string): void {
    if (this._timers[name] !== undefined) {
      clearTimeout(this._timers[name]);
      delete this._timers[name];
    }
  }

  private _clearTimers(): void {
    for (const name of Object.keys(this._timers)) if (name !== "retry") this._clearTimer(name);
  }

  // ---- REST ----------------------------------------------------------------------------------

  /**
   * A REST call with the Bearer token and X-Connection-Id. Resolves to the parsed JSON (or null
   * for 204); rejects with a LiveboardError. A mutation (any method but GET) carries an
   * `Idempotency-Key` (a fresh one unless `init.headers` has one), and a retry of it here (after
   * a 401) re-sends the same key and the same body bytes, so the server applies it once.
   * `init.answer`, if given, receives the event position the answer named (`Liveboard-Offset`
   * and `Liveboard-Epoch`): `answer.position` is `{offset, epoch}` or null.
   */
  async request<T = unknown>(method: string, path: string, body?: unknown, init: RequestInit = {}): Promise<T> {
    const payloadText = body === undefined ? null : JSON.stringify(body);
    const key = method === "GET" ? null : newIdempotencyKey();
    for (let retry = 0; ; retry++) {
      const token = await this._tokens.get(retry > 0);
      const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
      if (key) headers["Idempotency-Key"] = key;
      Object.assign(headers, init.headers ?? {});
      if (this.connectionId) headers["X-Connection-Id"] = this.connectionId;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      let response: Response;
      try {
        response = await fetch(this.baseUrl + path, {
          method,
          headers,
          body: payloadText,
          signal: init.signal ?? null,
        });
      } catch (err) {
        throw new LiveboardError(0, "network_error", `cannot reach the server (${err})`);
      }
      if (response.status === 401 && retry === 0 && this._tokens.canRefresh) continue;
      if (init.answer) {
        const offset = response.headers.get("Liveboard-Offset");
        const epoch = response.headers.get("Liveboard-Epoch");
        init.answer.position = offset && epoch ? { offset: Number(offset), epoch } : null;
      }
      if (response.status === 204) return null as T;
      let payload: { error?: { code?: string; message?: string; details?: unknown } } | null = null;
      try {
        payload = await response.json();
      } catch {
        /* not JSON */
      }
      if (!response.ok) {
        const error = payload?.error ?? {};
        throw new LiveboardError(
          response.status,
          error.code ?? "http_error",
          error.message ?? `${method} ${path}: HTTP ${response.status}`,
          error.details,
        );
      }
      return payload as T;
    }
  }

  listWorkspaces(): Promise<Workspace[]> {
    return this.request("GET", "/api/workspaces");
  }
  listProjects(wid: string): Promise<Project[]> {
    return this.request("GET", `/api/workspaces/${encodeURIComponent(wid)}/projects`);
  }
  getProject(pid: string): Promise<Project> {
    return this.request("GET", `/api/projects/${encodeURIComponent(pid)}`);
  }
  listTasks(pid: string): Promise<{ tasks: Task[]; offset: number; epoch: string }> {
    return this.request("GET", `/api/projects/${encodeURIComponent(pid)}/tasks`);
  }
  /**
   * Create a task, placed by its neighbours: `afterId` (null: the top of the column) and/or
   * `beforeId` (null: the end); neither: the end. The server picks the rank.
   */
  createTask(pid: string, task: NewTask): Promise<Task> {
    return this.request("POST", `/api/projects/${encodeURIComponent(pid)}/tasks`, task);
  }
  updateTask(tid: string, patch: TaskPatch): Promise<Task> {
    return this.request("PATCH", `/api/tasks/${encodeURIComponent(tid)}`, patch);
  }
  /**
   * Move a task to `toStatus`, after `afterId` (null: the top) and/or before `beforeId` (null:
   * the end); neither: the end.
   */
  moveTask(tid: string, move: TaskMove): Promise<Task> {
    return this.request("POST", `/api/tasks/${encodeURIComponent(tid)}/move`, move);
  }
  deleteTask(tid: string): Promise<null> {
    return this.request("DELETE", `/api/tasks/${encodeURIComponent(tid)}`);
  }
  /**
   * A page of a room's history: its events with an offset above `after`, ascending (at most
   * `limit`, 1 to 1000, default 100), in the envelope subscribers receive, and the room's head.
   * `truncated` is true when events after `after` are no longer kept. Page on with the last
   * event's offset as the next `after`; a page with no events has reached the head.
   */
  history(room: string, after = 0, limit = 100, init: RequestInit = {}): Promise<HistoryPage> {
    const query = `after=${encodeURIComponent(after)}&limit=${encodeURIComponent(limit)}`;
    return this.request("GET", `/api/rooms/${encodeURIComponent(room)}/events?${query}`, undefined, init);
  }
}

/** `options` without its undefined values (so they do not override the defaults). */
function definedOnly<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export type { EventMap, EventType };
