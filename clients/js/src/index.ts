// @liveboard/client: liveboard's browser client (REST + WebSocket) and its optimistic Board.
// The same build is served by liveboard at /static/liveboard.js (one source: clients/js/src).
export * from "./client.js";
export * from "./board.js";
export * from "./pending.js";
export { Emitter } from "./emitter.js";
export type * from "./protocol.js";
