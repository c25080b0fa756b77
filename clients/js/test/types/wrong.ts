// Misuses of the generated protocol types: this file must NOT compile, and each line marked
// `// TSnnnn` must be reported with exactly that error (tests/integration/test_protocol_typescript.py).
// It proves the types bite: a wrong event name or field fails tsc.
import type { ClientMessage, ErrorCode, EventMap, EventType, ServerMessage } from "../../src/protocol.js";
import { CLOSE_ACTIONS, CloseCode } from "../../src/protocol.js";

declare function on<K extends EventType>(type: K, handler: (event: EventMap[K]) => void): void;

on("task:move", () => {}); // TS2345
on("task:moved", (e) => void e.data.status); // TS2551
on("task:deleted", (e) => void e.data.task); // TS2339
on("member:added", (e) => {
  const role: "guest" = e.data.role; // TS2322
  void role;
});
const badCode: ErrorCode = "not_found"; // TS2322
const badSubscribe: ClientMessage = { type: "subscribe", rom: "project:p1" }; // TS2561
const badMessage: ClientMessage = { type: "subscribed", room: "project:p1" }; // TS2820
const badClose = CLOSE_ACTIONS[4002]; // TS7053
const badName = CloseCode.EXPIRED; // TS2339

function handle(message: ServerMessage): string {
  if (message.type === "task:moved") return message.data.taskId;
  return message.data.taskId; // TS2339
}

void [badCode, badSubscribe, badMessage, badClose, badName, handle];
