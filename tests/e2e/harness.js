// Fakes for test_liveboard_js.py, installed in the page before liveboard.js is imported.

window.flush = async () => { for (let i = 0; i < 20; i++) await null; };

// A clock that only moves when the test says so.
const clock = { now: 1_800_000_000_000, seq: 0, timers: new Map() };
window.clock = clock;
window.setTimeout = (fn, ms = 0) => {
  const id = ++clock.seq;
  clock.timers.set(id, { id, fn, at: clock.now + Math.max(0, Number(ms) || 0) });
  return id;
};
window.clearTimeout = (id) => clock.timers.delete(id);
Date.now = () => clock.now;
window.advance = async (ms) => {
  const end = clock.now + ms;
  for (;;) {
    await flush();
    let next = null;
    for (const t of clock.timers.values()) {
      const sooner = !next || t.at < next.at || (t.at === next.at && t.id < next.id);
      if (t.at <= end && sooner) next = t;
    }
    if (!next) break;
    clock.timers.delete(next.id);
    clock.now = Math.max(clock.now, next.at);
    next.fn();
  }
  clock.now = end;
  await flush();
};

// A WebSocket whose server side is played by the test.
window.sockets = [];
class FakeSocket {
  static CONNECTING = 0; static OPEN = 1; static CLOSING = 2; static CLOSED = 3;
  constructor(url, protocols = []) {
    this.url = url; this.protocols = protocols; this.readyState = 0; this.sent = []; this.closedWith = null;
    this.onmessage = this.onclose = this.onerror = null;
    sockets.push(this);
  }
  send(data) {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(JSON.parse(data));
  }
  close(code = 1005, reason = "") {
    if (this.readyState >= 2) return;
    this.readyState = 3; this.closedWith = code;
    const onclose = this.onclose;
    Promise.resolve().then(() => onclose && onclose({ code, reason }));
  }
  // the server's side
  accept(connectionId = "c_" + sockets.length, userId = "alice") {
    this.readyState = 1;
    this.receive({ type: "connected", connectionId, userId });
  }
  receive(msg) { this.onmessage && this.onmessage({ data: JSON.stringify(msg) }); }
  drop(code = 1006, reason = "") {
    this.readyState = 3;
    this.onclose && this.onclose({ code, reason });
  }
  types() { return this.sent.map((m) => m.type); }
  last(type) { return [...this.sent].reverse().find((m) => m.type === type); }
}
window.WebSocket = FakeSocket;
window.latest = () => sockets[sockets.length - 1];
// Let time pass until the client opens a new socket; return it.
window.nextSocket = async (maxMs = 120000) => {
  const before = sockets.length;
  for (let waited = 0; sockets.length === before && waited < maxMs; waited += 10) await advance(10);
  if (sockets.length === before) throw new Error("the client did not reconnect");
  return latest();
};

// A JWT the client can decode (the signature is never checked on this side).
window.jwt = (claims) => {
  const b64 = (o) =>
    btoa(JSON.stringify(o)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  return `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}.sig`;
};
window.nowS = () => Math.floor(clock.now / 1000);
window.token = (ttl = 3600) => jwt({ sub: "alice", iat: nowS(), exp: nowS() + ttl });
