// liveboard.js: the browser client for liveboard (REST + WebSocket), one plain ES module.
//
//   import { LiveboardClient, Board } from "/static/liveboard.js";
//
// No build step and no dependencies: copy this file next to your app or import it from a
// liveboard server. It implements the client side of the protocol (docs/protocol.md):
//
// - a token, or an async token provider called again on reconnect and before the token's `exp`
//   (the open socket is kept alive with the `refresh` message);
// - connection states: connecting, connected, reconnecting, offline (navigator.onLine is false,
//   or several attempts in a row failed) and closed (close() was called, or the server refused
//   the client for good: close codes 1003, 1008, 1009);
// - reconnect with exponential backoff and full jitter (capped), an extra random delay after
//   1012 (server restarting), none after 1003/1008/1009;
// - an application-level heartbeat: {"type":"ping"} every 15 s; no frame at all within 5 s
//   after it means the link is dead, and the client reconnects at once;
// - per-room {offset, epoch}: resubscribe with `since` after a reconnect; an event is never
//   delivered twice or out of order (offsets at or below the last applied one are dropped);
// - `recovered: false` and `resync` surface as one `resync` event; a room given a `snapshot`
//   loader is refetched and resubscribed by the client itself;
// - `unsubscribed` with a reason (membership revoked) surfaces as `revoked`;
// - presence join/leave, joined again after every reconnect;
// - REST with the Bearer token and `X-Connection-Id`, so a tab recognises the echo of its own
//   changes (`client.isOwn(event)`).
//
// `Board` builds on it: snapshot (`GET /api/projects/{pid}/tasks`), then the stream, applied to
// a local model of the project's tasks, with optimistic local changes.

/**
 * @typedef {"idle"|"connecting"|"connected"|"reconnecting"|"offline"|"closed"} ConnectionState
 *
 * @typedef {string | (() => string | Promise<string>)} TokenOption
 *   A JWT, or a function returning one (called again on reconnect and before expiry).
 *
 * @typedef {object} ClientOptions
 * @property {TokenOption} token
 * @property {string} [baseUrl]        REST base URL; default: this page's origin.
 * @property {string} [wsUrl]          WebSocket URL; default: baseUrl's host + "/ws/connect".
 * @property {number} [heartbeatInterval=15000]  ms between app-level pings.
 * @property {number} [heartbeatTimeout=5000]    ms without any frame after a ping: link dead.
 * @property {number} [connectTimeout=10000]     ms for an attempt to get `connected`.
 * @property {number} [backoffBase=500]   ms; attempt n waits random(0, min(max, base * 2^n)).
 * @property {number} [backoffMax=15000]  ms; the cap of that delay.
 * @property {number} [offlineAfter=5]    failed attempts in a row before the state is `offline`
 *                                        (the client keeps trying, at the capped delay).
 * @property {[number, number]} [restartDelay=[0, 1500]]  ms range of the delay of each attempt
 *                                        after close code 1012/1013 (server restarting): flat,
 *                                        not doubled by connects refused while it is down.
 * @property {number} [restartWindow=30000]  ms after a 1012 during which that holds; then the
 *                                        usual backoff.
 * @property {number} [stableAfter=5000]  ms a connection must last to reset the backoff.
 * @property {boolean} [autoConnect=true] connect in the constructor.
 * @property {"protocol"|"query"} [tokenIn="protocol"]  where the upgrade carries the token: the
 *   `Sec-WebSocket-Protocol` header (`liveboard.v1, liveboard.token.<jwt>`, kept out of URLs that
 *   proxies and histories log), or `?token=` for a server older than that.
 *
 * @typedef {{offset: number, epoch: string}} Position  A room's stream position.
 *
 * @typedef {object} ServerEvent  An event of a room: liveboard's own (task:*, project:created,
 *   member:*) and any `namespace:name` another backend published (e.g. `comment:added`), all in
 *   this one envelope and delivered the same way (a subscription's `event`).
 * @property {string} type
 * @property {string} room
 * @property {number} offset
 * @property {string} epoch
 * @property {number} ts       Commit time, unix ms.
 * @property {string|null} userId  Who made the change; null for an event a service published.
 * @property {string} [origin] Connection id given in X-Connection-Id by the author.
 * @property {any} data
 *
 * @typedef {{userId: string, name: string}} PresentUser
 *
 * @typedef {object} Task
 * @property {string} id
 * @property {string} projectId
 * @property {string} title
 * @property {string} description
 * @property {string} status
 * @property {number} order
 * @property {string} rank  the display order in its column (CONTRACT §6.2), compared as strings
 * @property {string|null} assigneeId
 * @property {string} createdById
 * @property {number} version
 * @property {string} createdAt
 * @property {string} updatedAt
 *
 * @typedef {{id: string, workspaceId: string, name: string, statuses: string[], createdAt: string}} Project
 * @typedef {{id: string, name: string, createdAt: string}} Workspace
 */

const FATAL_CLOSE_CODES = new Set([1003, 1008, 1009]);
const RESTART_CLOSE_CODES = new Set([1012, 1013]);
const CLOSE_TOKEN_EXPIRED = 4001;
const CLOSE_DEAD_LINK = 4900; // our own: heartbeat or connect timeout (never sent by the server)

/** Decode a JWT's payload (no verification). @param {string} token @returns {any|null} */
export function decodeJwt(token) {
  try {
    const part = token.split(".")[1];
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
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
 * @returns {string}
 */
export function newIdempotencyKey() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Full-jitter exponential backoff. @param {number} attempt 0-based */
export function backoffDelay(attempt, base = 500, max = 15000, random = Math.random) {
  const ceiling = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.round(random() * ceiling);
}

/** A tiny event emitter: `on` returns a function that removes the listener. */
export class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  /** @param {string} type @param {(payload: any) => void} fn @returns {() => void} */
  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  /** @param {string} type @param {(payload: any) => void} fn */
  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }

  /** @param {string} type @param {any} [payload] */
  emit(type, payload) {
    for (const fn of [...(this._listeners.get(type) ?? [])]) {
      try {
        fn(payload);
      } catch (err) {
        console.error(`liveboard: a "${type}" listener threw`, err);
      }
    }
  }
}

/** An error answered by the REST API (or a network failure: status 0, code "network_error"). */
export class LiveboardError extends Error {
  /** @param {number} status @param {string} code @param {string} message @param {any} [details] */
  constructor(status, code, message, details) {
    super(message);
    this.name = "LiveboardError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** Holds the current token; calls the provider when needed. */
class TokenSource {
  /** @param {TokenOption} option */
  constructor(option) {
    this.set(option);
  }

  /** @param {TokenOption} option */
  set(option) {
    this._provider = typeof option === "function" ? option : null;
    /** @type {string|null} */
    this._token = typeof option === "function" ? null : option;
    /** @type {Promise<string>|null} */
    this._inflight = null;
  }

  get canRefresh() {
    return this._provider !== null;
  }

  /** Seconds since the epoch at which the current token expires, or null. */
  get expiresAt() {
    const exp = this._token ? decodeJwt(this._token)?.exp : null;
    return typeof exp === "number" ? exp : null;
  }

  /** Seconds the current token is valid for in total (exp - iat), or null. */
  get lifetime() {
    const payload = this._token ? decodeJwt(this._token) : null;
    return payload && typeof payload.exp === "number" && typeof payload.iat === "number"
      ? payload.exp - payload.iat
      : null;
  }

  /** The token, asking the provider for a new one when `fresh`, missing or about to expire. */
  async get(fresh = false) {
    const exp = this.expiresAt;
    const stale = exp !== null && exp - Date.now() / 1000 < 5;
    if (this._token && !fresh && !stale) return this._token;
    if (!this._provider) {
      if (!this._token) throw new LiveboardError(0, "unauthorized", "no token");
      if (stale) throw new LiveboardError(401, "unauthorized", "the token has expired");
      return this._token;
    }
    if (!this._inflight) {
      this._inflight = Promise.resolve()
        .then(() => /** @type {Function} */ (this._provider)())
        .then((token) => {
          if (typeof token !== "string" || !token) throw new Error("token provider gave no token");
          this._token = token;
          return token;
        })
        .finally(() => {
          this._inflight = null;
        });
    }
    return this._inflight;
  }
}

/**
 * One room of a client: its stream position, its events and its presence.
 *
 * Events: `event` (ServerEvent, each once, in offset order), `subscribed` ({offset, epoch,
 * recovered}), `resync` ({room, reason}: refetch your snapshot), `revoked` ({room, reason}),
 * `presence` ({users, joined, left}), `error` ({code, message}).
 */
export class Subscription extends Emitter {
  /**
   * @param {LiveboardClient} client
   * @param {string} room
   * @param {{since?: Position|null, snapshot?: (() => Promise<Position>)|null, presence?: boolean}} options
   */
  constructor(client, room, options) {
    super();
    this.client = client;
    this.room = room;
    /** @type {Position|null} the last applied event's position (null: none yet) */
    this.position = options.since ? { ...options.since } : null;
    /** @type {PresentUser[]} */
    this.presence = [];
    this.wantPresence = Boolean(options.presence);
    this.snapshot = options.snapshot ?? null;
    /** true while events of this room are applied (between `subscribed` and a disconnect) */
    this.active = false;
    this.closed = false;
    this._pendingId = null;
    this._pendingSince = null;
    this._loading = false;
  }

  /** Show this user as present in the room (again after every reconnect). */
  join() {
    this.wantPresence = true;
    if (this.active) this.client._send({ type: "presence", action: "join", room: this.room });
  }

  /** Stop showing this user as present. */
  leave() {
    this.wantPresence = false;
    if (this.active) this.client._send({ type: "presence", action: "leave", room: this.room });
  }

  /** Continue from a snapshot's position (after `resync`, when you loaded it yourself). */
  resume(/** @type {Position} */ position) {
    this.position = { ...position };
    this._subscribe();
  }

  /** End the subscription. */
  unsubscribe() {
    if (this.closed) return;
    this.closed = true;
    this.active = false;
    this.client._rooms.delete(this.room);
    this.client._send({ type: "unsubscribe", room: this.room });
  }

  _subscribe() {
    if (this.closed) return;
    this.active = false;
    const id = this.client._nextId();
    this._pendingId = id;
    this._pendingSince = this.position;
    /** @type {any} */
    const message = { type: "subscribe", room: this.room, id };
    if (this.position) message.since = { offset: this.position.offset, epoch: this.position.epoch };
    this.client._send(message);
  }

  _onDisconnect() {
    this.active = false;
    this._pendingId = null;
  }

  /** @param {any} msg */
  _onSubscribed(msg) {
    if (msg.id !== this._pendingId) return; // a reply to an earlier subscribe; a newer one is due
    this._pendingId = null;
    const since = this._pendingSince;
    if (since && msg.recovered === false) {
      this._resync(msg.epoch !== since.epoch ? "epoch_changed" : "history_unavailable");
      return;
    }
    if (!since) this.position = { offset: msg.offset, epoch: msg.epoch };
    this.active = true;
    if (this.wantPresence) this.client._send({ type: "presence", action: "join", room: this.room });
    this.emit("subscribed", {
      room: this.room,
      offset: msg.offset,
      epoch: msg.epoch,
      recovered: since ? msg.recovered !== false : undefined,
    });
  }

  /** @param {ServerEvent} event */
  _onEvent(event) {
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

  /** The stream cannot continue from our position: tell the app once, then recover. */
  _resync(/** @type {string} */ reason) {
    this.active = false;
    this._pendingId = null;
    this.emit("resync", { room: this.room, reason });
    if (this.snapshot) {
      this._reload();
    } else {
      // No loader: carry on live from the room's head; the app refetches on `resync`.
      this.position = null;
      this._subscribe();
    }
  }

  async _reload() {
    if (this._loading || this.closed) return;
    this._loading = true;
    try {
      const position = await /** @type {() => Promise<Position>} */ (this.snapshot)();
      this._loading = false;
      if (!this.closed) this.resume(position);
    } catch (err) {
      this._loading = false;
      this.emit("error", { code: "snapshot_failed", message: String(err?.message ?? err) });
      // Try again after a while (or on the next reconnect, whichever comes first).
      setTimeout(() => {
        if (!this.active && !this.closed && this.client.state === "connected") this._reload();
      }, 2000);
    }
  }

  /** @param {string} reason */
  _onRevoked(reason) {
    this.closed = true;
    this.active = false;
    this.presence = [];
    this.client._rooms.delete(this.room);
    this.emit("revoked", { room: this.room, reason });
  }
}

/**
 * A connection to a liveboard server (REST + WebSocket).
 *
 * Events: `state` ({state, previous, attempt, retryIn, code}), `connected` ({connectionId,
 * userId}), `disconnected` ({code, reason}), `error` ({code, message}), `message` (every server
 * message, for debugging).
 */
export class LiveboardClient extends Emitter {
  /** @param {ClientOptions} options */
  constructor(options) {
    super();
    const origin = globalThis.location ? globalThis.location.origin : "http://localhost:8000";
    this.baseUrl = (options.baseUrl ?? origin).replace(/\/$/, "");
    this.wsUrl = options.wsUrl ?? this.baseUrl.replace(/^http/, "ws") + "/ws/connect";
    this.options = {
      heartbeatInterval: 15000,
      heartbeatTimeout: 5000,
      connectTimeout: 10000,
      backoffBase: 500,
      backoffMax: 15000,
      offlineAfter: 5,
      restartDelay: /** @type {[number, number]} */ ([0, 1500]),
      restartWindow: 30000,
      stableAfter: 5000,
      ...options,
    };
    this._tokens = new TokenSource(options.token);
    /** @type {ConnectionState} */
    this.state = "idle";
    /** @type {string|null} this connection's id (sent as X-Connection-Id) */
    this.connectionId = null;
    /** @type {string|null} */
    this.userId = null;
    /** @type {Map<string, Subscription>} */
    this._rooms = new Map();
    /** every connection id this client ever had: echoes of its changes carry one of them */
    this._ownIds = new Set();
    /** @type {WebSocket|null} */
    this._ws = null;
    this._attempt = 0;
    this._restartUntil = 0;
    this._freshToken = false;
    this._msgId = 0;
    this._connectedAt = 0;
    this._lastFrameAt = 0;
    this._timers = /** @type {Record<string, any>} */ ({});
    this._pendingRefresh = null;
    this._opening = false;
    this._stopped = true;
    this._onOnline = () => this._wake();
    this._onOffline = () => this._wentOffline();
    this._onVisible = () => {
      if (globalThis.document?.visibilityState === "visible") this._wake();
    };
    if (this.options.autoConnect !== false) this.connect();
  }

  // ---- connection ----------------------------------------------------------------------------

  /** Start (or restart) connecting. */
  connect() {
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
  close() {
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
  retryNow() {
    this._wake();
  }

  /** Replace the token (or provider); used from the next connection attempt or refresh on. */
  setToken(/** @type {TokenOption} */ token) {
    this._tokens.set(token);
  }

  /** The current token (calls the provider if needed). */
  token() {
    return this._tokens.get();
  }

  /** True when an event was caused by a request of this client (its X-Connection-Id). */
  isOwn(/** @type {{origin?: string}} */ event) {
    return Boolean(event.origin && this._ownIds.has(event.origin));
  }

  /**
   * Subscribe to a room. Subscribing again to the same room returns the same Subscription.
   * @param {string} room  `project:{pid}` or `workspace:{wid}`
   * @param {{since?: Position|null, snapshot?: () => Promise<Position>, presence?: boolean}} [options]
   *   since: the position of a snapshot you already hold; snapshot: a loader the client calls
   *   after a resync (it must return the new snapshot's position); presence: join at once.
   */
  subscribe(room, options = {}) {
    const existing = this._rooms.get(room);
    if (existing) return existing;
    const sub = new Subscription(this, room, options);
    this._rooms.set(room, sub);
    if (this.state === "connected") sub._subscribe();
    return sub;
  }

  async _open() {
    if (this._stopped || this._opening || this._ws) return;
    this._clearTimer("retry");
    if (globalThis.navigator && globalThis.navigator.onLine === false) {
      this._setState("offline");
      return; // the "online" event wakes us
    }
    let token;
    this._opening = true;
    try {
      token = await this._tokens.get(this._freshToken);
    } catch (err) {
      this._opening = false;
      if (this._stopped) return;
      if (!this._tokens.canRefresh) {
        // A static token that expired: nothing to retry with until setToken() + connect().
        this.emit("error", { code: "token_expired", message: String(err?.message ?? err) });
        this.close();
        return;
      }
      // A provider served by the restarting server fails too: same flat pace as a refused connect.
      const restarting = Date.now() < this._restartUntil;
      const delay = restarting ? this._restartDelay() : this._backoff();
      this._scheduleRetry(delay, `token provider failed: ${err?.message ?? err}`, undefined, restarting);
      return;
    }
    this._opening = false;
    if (this._stopped) return;
    const sep = this.wsUrl.includes("?") ? "&" : "?";
    let ws;
    try {
      ws =
        this.options.tokenIn === "query"
          ? new WebSocket(`${this.wsUrl}${sep}token=${encodeURIComponent(token)}`)
          : new WebSocket(this.wsUrl, ["liveboard.v1", `liveboard.token.${token}`]);
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
  _drop(/** @type {WebSocket} */ ws, /** @type {string} */ reason) {
    this._detach(ws);
    try {
      ws.close(CLOSE_DEAD_LINK, reason);
    } catch {
      /* already closed */
    }
    this._afterClose(CLOSE_DEAD_LINK, reason);
  }

  _detach(/** @type {WebSocket} */ ws) {
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = null;
    if (this._ws === ws) this._ws = null;
  }

  /** @param {number} code @param {string} reason */
  _afterClose(code, reason) {
    const wasConnected = this._connectedAt > 0;
    const uptime = wasConnected ? Date.now() - this._connectedAt : 0;
    this._connectedAt = 0;
    this.connectionId = null;
    this._clearTimers();
    for (const sub of this._rooms.values()) sub._onDisconnect();
    if (wasConnected) this.emit("disconnected", { code, reason });
    if (this._stopped) return;
    if (FATAL_CLOSE_CODES.has(code)) {
      this.emit("error", { code: `closed_${code}`, message: reason || `closed with ${code}` });
      this.close();
      return;
    }
    if (uptime >= this.options.stableAfter) this._attempt = 0;
    // A connection refused before `connected` may be an auth failure (browsers hide the 401):
    // ask the provider for a new token next time. So does 4001.
    this._freshToken = !wasConnected || code === CLOSE_TOKEN_EXPIRED;
    // A restarting server is coming back soon: retry at a short, flat, jittered pace until it
    // does (or the window ends); doubling on each refused connect pushed clients' return far
    // past the moment it listened.
    if (RESTART_CLOSE_CODES.has(code)) {
      this._restartUntil = Date.now() + this.options.restartWindow;
      this._attempt = 0;
    }
    const restarting = Date.now() < this._restartUntil;
    let delay = restarting ? this._restartDelay() : this._backoff();
    if (code === CLOSE_TOKEN_EXPIRED && this._attempt === 0) delay = 0;
    this._scheduleRetry(delay, reason, code, restarting);
  }

  _restartDelay() {
    const [lo, hi] = this.options.restartDelay;
    return lo + Math.random() * (hi - lo);
  }

  /** The delay before the next attempt: full jitter, exponential, capped. */
  _backoff() {
    return backoffDelay(this._attempt, this.options.backoffBase, this.options.backoffMax);
  }

  /**
   * @param {number} delay @param {string} [reason] @param {number} [code]
   * @param {boolean} [restarting] inside a restart window: not counted as a failed attempt
   */
  _scheduleRetry(delay, reason, code, restarting = false) {
    if (!restarting) this._attempt += 1;
    const offline =
      (globalThis.navigator && globalThis.navigator.onLine === false) ||
      this._attempt > this.options.offlineAfter;
    this._setState(offline ? "offline" : "reconnecting", {
      retryIn: delay,
      code,
      reason,
      restarting,
    });
    if (globalThis.navigator && globalThis.navigator.onLine === false) return; // wait for "online"
    this._setTimer("retry", delay, () => void this._open());
  }

  /** The network is back or the tab became visible: retry now if we are waiting. */
  _wake() {
    if (this._stopped || this._ws || this._opening || this.state === "connected") return;
    if (!this._timers.retry && this.state !== "offline") return; // an attempt is under way
    this._attempt = 0;
    void this._open();
  }

  _wentOffline() {
    if (this._stopped) return;
    if (this.state === "connected") {
      this._sendPing(); // find out quickly whether the link survived
    } else {
      this._clearTimer("retry");
      this._setState("offline");
    }
  }

  /** @param {ConnectionState} state @param {object} [extra] */
  _setState(state, extra = {}) {
    const previous = this.state;
    this.state = state;
    if (previous !== state || state === "reconnecting" || state === "offline") {
      this.emit("state", { state, previous, attempt: this._attempt, ...extra });
    }
  }

  // ---- frames --------------------------------------------------------------------------------

  _nextId() {
    this._msgId += 1;
    return this._msgId;
  }

  /** @param {any} message @returns {boolean} whether it was sent */
  _send(message) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !this._connectedAt) return false;
    ws.send(JSON.stringify(message));
    return true;
  }

  /** @param {WebSocket} ws @param {any} data */
  _onFrame(ws, data) {
    if (ws !== this._ws) return;
    this._lastFrameAt = Date.now();
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    this.emit("message", msg);
    const room = msg.room ? this._rooms.get(msg.room) : undefined;
    switch (msg.type) {
      case "connected":
        this._onConnected(msg);
        break;
      case "subscribed":
        room?._onSubscribed(msg);
        break;
      case "unsubscribed":
        if (msg.reason && room) room._onRevoked(msg.reason);
        break;
      case "resync":
        if (room) room._resync(msg.reason ?? "continuity_lost");
        break;
      case "presence:update":
        if (room) {
          room.presence = msg.users;
          room.emit("presence", { users: msg.users, joined: msg.joined, left: msg.left });
        }
        break;
      case "pong":
        break;
      case "refreshed":
        this._pendingRefresh = null;
        this._scheduleRefresh();
        break;
      case "error":
        this._onError(msg);
        break;
      default:
        if (typeof msg.offset === "number" && room) room._onEvent(msg);
    }
  }

  /** @param {any} msg */
  _onConnected(msg) {
    this._clearTimer("connect");
    this._connectedAt = Date.now();
    this._restartUntil = 0;
    this.connectionId = msg.connectionId;
    this.userId = msg.userId;
    this._ownIds.add(msg.connectionId);
    this._freshToken = false;
    if (this._attempt > 0 && this.options.stableAfter <= 0) this._attempt = 0;
    this._setState("connected");
    this.emit("connected", { connectionId: msg.connectionId, userId: msg.userId });
    this._startHeartbeat();
    this._scheduleRefresh();
    for (const sub of this._rooms.values()) {
      if (sub._loading) continue; // it subscribes when its snapshot is in
      if (sub.position === null && sub.snapshot) void sub._reload();
      else sub._subscribe();
    }
  }

  /** @param {any} msg */
  _onError(msg) {
    if (msg.id !== undefined && msg.id === this._pendingRefresh) {
      this._pendingRefresh = null;
      this.emit("error", { code: "refresh_failed", message: msg.message });
      return;
    }
    for (const sub of this._rooms.values()) {
      if (msg.id !== undefined && sub._pendingId === msg.id) {
        sub._pendingId = null;
        if (msg.code === "forbidden" || msg.code === "invalid_room") sub._onRevoked(msg.code);
        else sub.emit("error", { code: msg.code, message: msg.message });
        return;
      }
    }
    this.emit("error", { code: msg.code, message: msg.message });
  }

  // ---- heartbeat and token refresh -----------------------------------------------------------

  _startHeartbeat() {
    this._setTimer("heartbeat", this.options.heartbeatInterval, () => {
      this._sendPing();
      this._startHeartbeat();
    });
  }

  _sendPing() {
    const ws = this._ws;
    if (!ws || !this._send({ type: "ping" })) return;
    const sentAt = Date.now();
    this._setTimer("pong", this.options.heartbeatTimeout, () => {
      if (ws === this._ws && this._lastFrameAt < sentAt) this._drop(ws, "heartbeat timeout");
    });
  }

  _scheduleRefresh() {
    this._clearTimer("refresh");
    const exp = this._tokens.expiresAt;
    if (!this._tokens.canRefresh || exp === null) return;
    const lifetime = this._tokens.lifetime ?? 600;
    const margin = Math.max(10, Math.min(60, lifetime * 0.1));
    const delay = Math.max(0, (exp - margin) * 1000 - Date.now());
    this._setTimer("refresh", Math.min(delay, 2 ** 31 - 1), () => void this._refresh());
  }

  async _refresh() {
    try {
      const token = await this._tokens.get(true);
      const id = this._nextId();
      if (this._send({ type: "refresh", token, id })) this._pendingRefresh = id;
    } catch (err) {
      this.emit("error", { code: "refresh_failed", message: String(err?.message ?? err) });
      this._setTimer("refresh", 5000, () => void this._refresh());
    }
  }

  // ---- timers --------------------------------------------------------------------------------

  /** @param {string} name @param {number} ms @param {() => void} fn */
  _setTimer(name, ms, fn) {
    this._clearTimer(name);
    this._timers[name] = setTimeout(() => {
      delete this._timers[name];
      fn();
    }, ms);
  }

  /** @param {string} name */
  _clearTimer(name) {
    if (this._timers[name] !== undefined) {
      clearTimeout(this._timers[name]);
      delete this._timers[name];
    }
  }

  _clearTimers() {
    for (const name of Object.keys(this._timers)) if (name !== "retry") this._clearTimer(name);
  }

  // ---- REST ----------------------------------------------------------------------------------

  /**
   * A REST call with the Bearer token and X-Connection-Id. Resolves to the parsed JSON (or null
   * for 204); rejects with a LiveboardError. A mutation (any method but GET) carries an
   * `Idempotency-Key` (a fresh one unless `init.headers` has one), and a retry of it here (after
   * a 401) re-sends the same key and the same body bytes, so the server applies it once.
   * `init.answer`, if given, receives the event position the answer named (`Liveboard-Offset`
   * and `Liveboard-Epoch`, CONTRACT §6.1): `answer.position` is `{offset, epoch}` or null.
   * @param {string} method @param {string} path @param {any} [body]
   * @param {{headers?: Record<string, string>, signal?: AbortSignal, answer?: {position?: Position|null}}} [init]
   */
  async request(method, path, body, init = {}) {
    const payloadText = body === undefined ? undefined : JSON.stringify(body);
    const key = method === "GET" ? null : newIdempotencyKey();
    for (let retry = 0; ; retry++) {
      const token = await this._tokens.get(retry > 0);
      /** @type {Record<string, string>} */
      const headers = { Authorization: `Bearer ${token}` };
      if (key) headers["Idempotency-Key"] = key;
      Object.assign(headers, init.headers ?? {});
      if (this.connectionId) headers["X-Connection-Id"] = this.connectionId;
      if (body !== undefined) headers["Content-Type"] = "application/json";
      let response;
      try {
        response = await fetch(this.baseUrl + path, {
          method,
          headers,
          body: payloadText,
          signal: init.signal,
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
      if (response.status === 204) return null;
      let payload = null;
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
      return payload;
    }
  }

  /** @returns {Promise<Workspace[]>} */
  listWorkspaces() {
    return this.request("GET", "/api/workspaces");
  }
  /** @param {string} wid @returns {Promise<Project[]>} */
  listProjects(wid) {
    return this.request("GET", `/api/workspaces/${encodeURIComponent(wid)}/projects`);
  }
  /** @param {string} pid @returns {Promise<Project>} */
  getProject(pid) {
    return this.request("GET", `/api/projects/${encodeURIComponent(pid)}`);
  }
  /** @param {string} pid @returns {Promise<{tasks: Task[], offset: number, epoch: string}>} */
  listTasks(pid) {
    return this.request("GET", `/api/projects/${encodeURIComponent(pid)}/tasks`);
  }
  /**
   * Create a task, placed by its neighbours: `afterId` (null: the top of the column) and/or
   * `beforeId` (null: the end); neither: the end. The server picks the rank. The numeric `order`
   * of CONTRACT §3 still works, but not together with afterId/beforeId.
   * @param {string} pid
   * @param {{title: string, description?: string, status?: string, assigneeId?: string|null, order?: number, afterId?: string|null, beforeId?: string|null}} task
   * @returns {Promise<Task>}
   */
  createTask(pid, task) {
    return this.request("POST", `/api/projects/${encodeURIComponent(pid)}/tasks`, task);
  }
  /**
   * @param {string} tid
   * @param {{title?: string, description?: string, assigneeId?: string|null, version?: number}} patch
   * @returns {Promise<Task>}
   */
  updateTask(tid, patch) {
    return this.request("PATCH", `/api/tasks/${encodeURIComponent(tid)}`, patch);
  }
  /**
   * Move a task to `toStatus`, after `afterId` (null: the top) and/or before `beforeId` (null:
   * the end); neither: the end. Two moves into one slot at once end in one order everywhere.
   * The numeric `order` of CONTRACT §3 still works, but not together with afterId/beforeId.
   * @param {string} tid
   * @param {{toStatus: string, order?: number, afterId?: string|null, beforeId?: string|null, version?: number}} move
   * @returns {Promise<Task>}
   */
  moveTask(tid, move) {
    return this.request("POST", `/api/tasks/${encodeURIComponent(tid)}/move`, move);
  }
  /** @param {string} tid @returns {Promise<null>} */
  deleteTask(tid) {
    return this.request("DELETE", `/api/tasks/${encodeURIComponent(tid)}`);
  }
  /**
   * A page of a room's history: its events with an offset above `after`, ascending (at most
   * `limit`, 1 to 1000, default 100), in the envelope subscribers receive, and the room's head.
   * `truncated` is true when events after `after` are no longer kept. Page on with the last
   * event's offset as the next `after`; a page with no events has reached the head.
   * @param {string} room @param {number} [after=0] @param {number} [limit=100]
   * @returns {Promise<{events: ServerEvent[], offset: number, epoch: string, truncated?: boolean}>}
   */
  history(room, after = 0, limit = 100) {
    const query = `after=${encodeURIComponent(after)}&limit=${encodeURIComponent(limit)}`;
    return this.request("GET", `/api/rooms/${encodeURIComponent(room)}/events?${query}`);
  }
}


// ---- the optimistic board ----------------------------------------------------------------------

/**
 * @typedef {object} Write  A local change of a board, from the moment it is made until the
 *   stream has applied its event (docs/browser-client.md, "Optimistic board").
 * @property {string} key        its Idempotency-Key, reused by every attempt (after reloads too)
 * @property {"create"|"move"|"rename"|"delete"} kind
 * @property {string} taskId     the task's id; a create's is `local:<key>` until it is answered
 * @property {{title?: string, status?: string, afterId?: string|null, version?: number}} fields
 * @property {boolean} [held]    a delete in its undo window: not sent yet
 * @property {boolean} [answered] the server accepted it
 * @property {Position|null} [at] the position its answer named (its event)
 * @property {Task} [task]       a create's answer
 * @property {number} [made]     when it was made (ms; orders the stored writes)
 */

/** A strict order of the cards of a column: `order`, then creation time, then id. */
export function compareTasks(/** @type {Task} */ a, /** @type {Task} */ b) {
  for (const k of /** @type {const} */ (["order", "rank", "createdAt", "id"])) {
    if (a[k] < b[k]) return -1;
    if (a[k] > b[k]) return 1;
  }
  return 0;
}

/** Put `task` into `list` after `afterId` (null: first), else at the end. */
function place(/** @type {Task[]} */ list, /** @type {Task} */ task, /** @type {any} */ afterId) {
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
  /** @param {Write[]} [writes] writes restored from storage */
  constructor(writes = []) {
    /** @type {Write[]} */
    this.list = writes.map((w) => ({ ...w, answered: false }));
  }

  /** @param {Write} write */
  add(write) {
    this.list.push(write);
  }

  /** @param {string} key */
  get(key) {
    return this.list.find((w) => w.key === key);
  }

  /** Writes the server has not accepted yet (what a user would call "waiting"). */
  unsent() {
    return this.list.filter((w) => !w.answered);
  }

  /** True while a write of `taskId` is shown but not confirmed. @param {string} taskId */
  isPending(taskId) {
    return this.list.some((w) => w.taskId === taskId);
  }

  /** @returns {Write|undefined} */
  next() {
    const held = new Set();
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
   * @param {string} key @param {Position|null} at @param {Task} [task]
   */
  answered(key, at, task) {
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
   * @param {ServerEvent} event @param {Task} task
   */
  echoed(event, task) {
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
  refused(/** @type {string} */ key) {
    const w = this.get(key);
    if (!w) return [];
    const gone = this.list.filter(
      (o) => o === w || (w.kind === "create" && (o.taskId === w.taskId || o.fields.afterId === w.taskId)),
    );
    this.list = this.list.filter((o) => !gone.includes(o));
    return gone;
  }

  /** Forget `key` (an undone delete). @param {string} key */
  remove(key) {
    this.list = this.list.filter((w) => w.key !== key);
  }

  /**
   * The board now reflects every event up to `position`: drop the answered writes whose event is
   * in it. A snapshot (`snapshot`) in another epoch replaces everything: those go too.
   * @param {Position} position @param {boolean} [snapshot]
   */
  settle(position, snapshot = false) {
    const before = this.list.length;
    this.list = this.list.filter(
      (w) =>
        !w.answered ||
        !w.at ||
        (w.at.epoch === position.epoch ? w.at.offset > position.offset : !snapshot),
    );
    return before - this.list.length;
  }

  /**
   * What to draw: `tasks` (the confirmed model) in columns, with every write applied on top,
   * in order. @param {Iterable<Task>} tasks @param {string[]} statuses
   */
  columns(tasks, statuses) {
    /** @type {Map<string, Task[]>} */
    const cols = new Map(statuses.map((s) => [s, []]));
    for (const t of tasks) cols.get(t.status)?.push(t);
    for (const list of cols.values()) list.sort(compareTasks);
    const find = (/** @type {string} */ id) => {
      for (const list of cols.values()) {
        const i = list.findIndex((t) => t.id === id);
        if (i >= 0) return { list, i, task: list[i] };
      }
      return null;
    };
    for (const w of this.list) {
      const found = find(w.taskId);
      if (w.kind === "create") {
        if (found) found.list.splice(found.i, 1);
        const base = w.task ?? found?.task;
        const task = /** @type {Task} */ ({
          ...{ description: "", assigneeId: null, version: 0, createdAt: "", updatedAt: "" },
          ...base,
          id: w.taskId,
          title: w.fields.title,
          status: w.fields.status,
        });
        const list = cols.get(task.status);
        if (list) place(list, task, w.fields.afterId);
      } else if (!found) {
        continue; // deleted meanwhile (by someone else): nothing to show
      } else if (w.kind === "delete") {
        found.list.splice(found.i, 1);
      } else if (w.kind === "rename") {
        found.list[found.i] = { ...found.task, title: /** @type {string} */ (w.fields.title) };
      } else {
        const list = cols.get(/** @type {string} */ (w.fields.status));
        if (!list) continue;
        found.list.splice(found.i, 1);
        place(list, { ...found.task, status: /** @type {string} */ (w.fields.status) }, w.fields.afterId);
      }
    }
    return statuses.map((status) => ({ status, tasks: /** @type {Task[]} */ (cols.get(status)) }));
  }
}

/** A human sentence for a refused write (shown by apps; `err` is the LiveboardError). */
export function refusalMessage(/** @type {Write} */ write, /** @type {any} */ err) {
  const what = { create: "new card", move: "move", rename: "edit", delete: "delete" }[write.kind];
  switch (err?.status) {
    case 409:
      return `Someone else changed this card — your ${what} was undone.`;
    case 404:
      return `This card was deleted by someone else — your ${what} was undone.`;
    case 403:
      return `You may not change this board any more — your ${what} was undone.`;
    case 422:
      // A neighbour the card was placed by left its column meanwhile (CONTRACT §6.2).
      if (/\b(afterId|beforeId)\b/.test(err?.message ?? ""))
        return `The cards around where you put it moved meanwhile — your ${what} was undone.`;
    // falls through
    default:
      return `The server refused your ${what} (${err?.message ?? "error"}) — it was undone.`;
  }
}

/** True for a failure that may pass (network, timeouts, overload, key still in flight). */
function transient(/** @type {any} */ err) {
  const s = err?.status ?? 0;
  return s === 0 || s === 401 || s === 408 || s === 429 || s >= 500 || err?.details?.reason === "idempotency_key_in_flight";
}

/**
 * Keeps a board's unsent writes in IndexedDB: one record per write, keyed [board, made, key], so
 * that tabs of one user add and remove only their own and a reload reads them in order.
 */
class WriteStore {
  /** @param {string} board */
  constructor(board) {
    this.board = board;
    /** @type {Map<string, any[]>} the records this page has stored: write key → record key */
    this._mine = new Map();
    /** @type {Promise<any>} */
    this._last = Promise.resolve();
  }

  /** @param {IDBTransactionMode} mode @param {(s: IDBObjectStore) => any} op */
  async _run(mode, op) {
    const db = await (WriteStore._db ??= new Promise((resolve, reject) => {
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

  /** @returns {Promise<Write[]>} */
  async load() {
    const range = IDBKeyRange.bound([this.board], [this.board, []]);
    return (await this._run("readonly", (s) => s.getAll(range))) ?? [];
  }

  /** Store `writes` in place of what this page stored before (in call order). @param {Write[]} writes */
  save(writes) {
    const records = writes.map((w) => /** @type {[any[], Write]} */ ([[this.board, w.made ?? 0, w.key], { ...w }]));
    const gone = [...this._mine].filter(([key]) => !writes.some((w) => w.key === key));
    this._mine = new Map(records.map(([id, w]) => [w.key, id]));
    this._last = this._last
      .then(() => this._run("readwrite", (s) => {
        for (const [, id] of gone) s.delete(id);
        for (const [id, w] of records) s.put(w, id);
      }))
      .catch((err) => console.warn("liveboard: cannot save the queued writes", err));
    return this._last;
  }
}
/** @type {Promise<IDBDatabase>|undefined} */
WriteStore._db = undefined;

/**
 * The live tasks of one project: snapshot, then the stream, applied to a local model, with the
 * user's changes shown at once (docs/browser-client.md, "Optimistic board").
 *
 * Events: `reset` (the snapshot was (re)loaded), `change` ({type, taskId, task, previous, event,
 * own}; type "local" for a local change or its confirmation), `rollback` ({write, error,
 * message}: the server refused a change, which is undone), `queue` ({waiting}: writes not yet
 * accepted by the server), `presence`, `resync`, `revoked`, `error` ({code, message}).
 */
export class Board extends Emitter {
  /**
   * @param {LiveboardClient} client @param {string} projectId
   * @param {{presence?: boolean, user?: string, storage?: boolean}} [options]
   *   user: whose writes these are; with it (and IndexedDB), unsent writes survive a reload and
   *   are sent by the next Board of that user and project. storage: false keeps them in memory.
   */
  constructor(client, projectId, options = {}) {
    super();
    this.client = client;
    this.projectId = projectId;
    this.options = { presence: true, storage: true, ...options };
    /** @type {Project|null} */
    this.project = null;
    /** @type {Map<string, Task>} the tasks as of `position` */
    this.tasks = new Map();
    /** @type {Position|null} */
    this.position = null;
    /** @type {PresentUser[]} */
    this.presence = [];
    /** @type {Subscription|null} */
    this.subscription = null;
    this.writes = new PendingWrites();
    /** key → {resolve, reject} of the promise a change method returned */
    this._waiters = new Map();
    this._sending = false;
    this._retries = 0;
    this._store =
      this.options.user && this.options.storage && globalThis.indexedDB
        ? new WriteStore(`${client.baseUrl} ${projectId} ${this.options.user}`)
        : null;
    this._restored = null;
    this._offState = client.on("state", (s) => s.state === "connected" && this._send());
  }

  get statuses() {
    return this.project?.statuses ?? [];
  }

  /** Writes not yet accepted by the server (shown as "n changes waiting"). */
  get waiting() {
    return this.writes.unsent().length;
  }

  /** Load the writes a previous page left unsent (also done by `start`); resolves to their number. */
  restore() {
    this._restored ??= (async () => {
      if (!this._store) return 0;
      try {
        const stored = await this._store.load();
        this.writes = new PendingWrites([...stored, ...this.writes.list]);
      } catch (err) {
        console.warn("liveboard: cannot read the queued writes", err);
      }
      this.writes.list.forEach((w) => (w.held = false)); // a reload ends an undo window
      this._changed();
      return this.writes.list.length;
    })();
    return this._restored;
  }

  /** Load the project and its snapshot, then follow its room and send queued writes. */
  async start() {
    await this.restore();
    this.project = await this.client.getProject(this.projectId);
    const position = await this._load();
    this.subscription = this.client.subscribe(`project:${this.projectId}`, {
      since: position,
      snapshot: () => this._load(),
      presence: this.options.presence,
    });
    const sub = this.subscription;
    sub.on("event", (event) => this._apply(event));
    sub.on("presence", (p) => {
      this.presence = p.users;
      this.emit("presence", p);
    });
    sub.on("resync", (r) => this.emit("resync", r));
    sub.on("revoked", (r) => this.emit("revoked", r));
    sub.on("error", (e) => this.emit("error", e));
    this._send();
    return this;
  }

  /** Stop following the project (queued writes stay stored for the next Board). */
  stop() {
    this.subscription?.unsubscribe();
    this.subscription = null;
    this._offState();
    clearTimeout(this._retryTimer);
  }

  /** @returns {Promise<Position>} */
  async _load() {
    const snapshot = await this.client.listTasks(this.projectId);
    this.tasks = new Map(snapshot.tasks.map((t) => [t.id, t]));
    this.position = { offset: snapshot.offset, epoch: snapshot.epoch };
    this.writes.settle(this.position, true);
    this.emit("reset", { tasks: [...this.tasks.values()] });
    return this.position;
  }

  /** @param {ServerEvent} event */
  _apply(event) {
    const data = event.data ?? {};
    const own = this.client.isOwn(event);
    let taskId = data.task?.id ?? data.taskId;
    const previous = taskId ? this.tasks.get(taskId) : undefined;
    let task;
    switch (event.type) {
      case "task:created":
        task = data.task;
        this.tasks.set(task.id, task);
        // The echo of this tab's create can come before the create's answer: writes go one at a
        // time, so it is the unanswered create in flight. Bind them now, or the card would show
        // twice (the pending copy and the confirmed one) until the answer arrives.
        if (own) this.writes.echoed(event, task);
        break;
      case "task:updated":
        task = data.task;
        this.tasks.set(task.id, task);
        break;
      case "task:moved":
        if (previous) {
          task = {
            ...previous,
            ...(data.task ?? {}),
            status: data.toStatus,
            order: data.task?.order ?? data.order,
            rank: data.rank ?? previous.rank,
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
        return;
    }
    this.position = { offset: event.offset, epoch: event.epoch };
    this.writes.settle(this.position);
    this.emit("change", { type: event.type, taskId, task, previous, event, own });
  }

  // ---- what to draw --------------------------------------------------------------------------

  /** Columns in the project's order, each in display order, local changes applied. */
  columns() {
    return this.writes.columns(this.tasks.values(), this.statuses);
  }

  /** The tasks as the user should see them (model + local changes). @returns {Task[]} */
  view() {
    return this.columns().flatMap((c) => c.tasks);
  }

  /** @param {string} id @returns {Task|undefined} */
  task(id) {
    return this.view().find((t) => t.id === id);
  }

  /** True while a local change of the task is not yet confirmed by the stream. */
  isPending(/** @type {string} */ id) {
    return this.writes.isPending(id);
  }

  /**
   * The `order` that puts a task at `index` of column `status` (not counting `exceptId`):
   * halfway between its neighbours, or one past the end (for servers without §6.2).
   * @param {string} status @param {number} [index] @param {string} [exceptId]
   */
  orderAt(status, index, exceptId) {
    const tasks = this._column(status, exceptId);
    const at = index === undefined ? tasks.length : Math.max(0, Math.min(index, tasks.length));
    const [before, after] = [tasks[at - 1], tasks[at]];
    if (before && after) return (before.order + after.order) / 2;
    if (before) return Math.floor(before.order) + 1;
    return after ? after.order - 1 : 1;
  }

  /** @param {string} status @param {string} [exceptId] */
  _column(status, exceptId) {
    return (this.columns().find((c) => c.status === status)?.tasks ?? []).filter((t) => t.id !== exceptId);
  }

  /** `afterId` for `index` of a column (null: the top; undefined: the end). */
  _after(/** @type {string} */ status, /** @type {number|undefined} */ index, /** @type {string} */ exceptId) {
    if (index === undefined) return undefined;
    const tasks = this._column(status, exceptId);
    if (index >= tasks.length) return undefined;
    return index <= 0 ? null : tasks[index - 1].id;
  }

  // ---- changes (optimistic) ------------------------------------------------------------------

  /**
   * Add a card (at `index` of its column; default: the end). Shown at once with the id
   * `local:<key>`, which becomes the server's when it answers. Resolves to the created task.
   * @param {{title: string, status?: string, description?: string}} fields @param {number} [index]
   */
  createTask(fields, index) {
    const status = fields.status ?? this.statuses[0];
    const key = newIdempotencyKey();
    return this._write({ key, kind: "create", taskId: `local:${key}`,
      fields: { ...fields, status, afterId: this._after(status, index, "") } });
  }

  /** @param {string} taskId @param {string} title */
  rename(taskId, title) {
    // The version the user saw (when confirmed): a title someone changed since is a 409.
    const version = this.isPending(taskId) ? undefined : this.tasks.get(taskId)?.version;
    return this._write({ key: newIdempotencyKey(), kind: "rename", taskId, fields: { title, version } });
  }

  /**
   * Move a task to `toStatus` at `index` among that column's other tasks (default: the end).
   * @param {string} taskId @param {string} toStatus @param {number} [index]
   */
  move(taskId, toStatus, index) {
    const afterId = this._after(toStatus, index, taskId);
    return this._write({ key: newIdempotencyKey(), kind: "move", taskId, fields: { status: toStatus, afterId } });
  }

  /**
   * Delete a task: it disappears at once. With `undoFor` (ms) the request waits that long, and
   * `undo()` within it brings the card back without asking the server.
   * @param {string} taskId @param {{undoFor?: number}} [options]
   */
  remove(taskId, options = {}) {
    const key = newIdempotencyKey();
    const held = (options.undoFor ?? 0) > 0;
    const done = this._write({ key, kind: "delete", taskId, fields: {}, held });
    if (!held) return Object.assign(done, { undo: () => false });
    const timer = setTimeout(() => {
      const w = this.writes.get(key);
      if (w) w.held = false;
      this._changed();
      this._send();
    }, options.undoFor);
    const undo = () => {
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

  /** @param {Write} write @returns {Promise<any>} */
  _write(write) {
    write.made = Date.now() + (Board._seq = ((Board._seq ?? 0) + 1) % 1000) / 1000; // order across reloads
    this.writes.add(write);
    const done = new Promise((resolve, reject) => this._waiters.set(write.key, { resolve, reject }));
    done.catch(() => {}); // the app hears of a refusal through `rollback`
    this._changed(write.taskId);
    this._send();
    return done;
  }

  /** Tell the app the local state changed, and store what is unsent. */
  _changed(/** @type {string} */ taskId = "") {
    void this._store?.save(this.writes.unsent());
    this.emit("queue", { waiting: this.waiting });
    this.emit("change", { type: "local", taskId, own: true });
  }

  /** Send queued writes one at a time, in order, until none is left or the network fails. */
  async _send() {
    if (this._sending || !this.position) return;
    this._sending = true;
    try {
      for (let w; (w = this.writes.next()); ) {
        /** @type {{position?: Position|null}} */
        const answer = {};
        let result;
        try {
          result = await this.client.request(...this._call(w), { headers: { "Idempotency-Key": w.key }, answer });
        } catch (err) {
          if (transient(err)) {
            this._retry();
            return;
          }
          this._refused(w, err);
          continue;
        }
        this._retries = 0;
        this.writes.answered(w.key, answer.position ?? null, w.kind === "create" ? result : undefined);
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
  _retry() {
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._send(), backoffDelay(this._retries++, 1000, 30000));
  }

  /** @param {Write} w @returns {[string, string, any]} */
  _call(w) {
    const tid = `/api/tasks/${encodeURIComponent(w.taskId)}`;
    // Placed by its neighbour (CONTRACT §6.2: the server picks the rank; none = the end). A server
    // without §6.2 (its tasks have no `rank`) ignores afterId: it gets the numeric `order` too,
    // which a §6.2 server would refuse next to afterId (422). An empty column needs neither.
    const place = (/** @type {string} */ status) => {
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

  /** @param {Write} w @param {any} err */
  _refused(w, err) {
    for (const gone of this.writes.refused(w.key)) {
      this._waiters.get(gone.key)?.reject(err);
      this._waiters.delete(gone.key);
    }
    const message = refusalMessage(w, err);
    this._changed(w.taskId);
    this.emit("rollback", { write: w, error: err, message });
  }
}
