// Typed use of the generated protocol types: must compile under `tsc --strict`
// (tests/integration/test_protocol_typescript.py). What a client built on them looks like.
import type {
  ClientMessage,
  ErrorCode,
  EventDataMap,
  EventMap,
  EventType,
  LiveboardEvent,
  ServerMessage,
  ServerMessageMap,
  ServerMessageType,
} from "../../src/protocol.js";
import { CLOSE_ACTIONS, CloseCode, EVENT_TYPES } from "../../src/protocol.js";
import type { CloseAction } from "../../src/protocol.js";

// An event emitter keyed by event type: the handler's argument is that event.
declare function on<K extends EventType>(type: K, handler: (event: EventMap[K]) => void): void;

on("task:moved", (e) => {
  const to: string = e.data.toStatus;
  const from: string = e.data.fromStatus;
  const order: number = e.data.order;
  const origin: string | undefined = e.origin;
  void [to, from, order, origin, e.offset, e.epoch, e.ts, e.userId, e.room];
});
on("task:updated", (e) => {
  const title: string | undefined = e.data.changes.title?.to;
  const assignee: string | null | undefined = e.data.changes.assigneeId?.from;
  const version: number = e.data.task.version;
  void [title, assignee, version];
});
on("task:created", (e) => void e.data.task.assigneeId);
on("task:deleted", (e) => void e.data.taskId);
on("project:created", (e) => void e.data.project.statuses.length);
on("member:added", (e) => {
  const role: "owner" | "admin" | "member" = e.data.role;
  void role;
});
on("member:removed", (e) => void e.data.userId);

// The data map alone.
const moved: EventDataMap["task:moved"] = {
  taskId: "t1",
  fromStatus: "todo",
  toStatus: "done",
  order: 2,
  rank: "a1",
  afterId: null,
};
void moved;

// Every server message, narrowed by its `type`; the `never` proves the switch is exhaustive.
function handle(message: ServerMessage): string {
  switch (message.type) {
    case "connected":
      return message.connectionId + message.userId;
    case "subscribed":
      return `${message.room} ${message.offset} ${message.epoch} ${message.recovered ?? true}`;
    case "unsubscribed":
      return message.reason ?? message.room;
    case "pong":
      return String(message.id ?? "");
    case "refreshed":
      return String(message.expiresAt);
    case "error": {
      const code: ErrorCode = message.code;
      return code + message.message;
    }
    case "presence:update":
      return message.users.map((u) => u.userId + u.name).join() + message.joined.join() + message.left.join();
    case "resync":
      return message.reason;
    case "task:created":
    case "task:updated":
    case "task:moved":
    case "task:deleted":
    case "project:created":
    case "member:added":
    case "member:removed":
      return describe(message);
    default: {
      const unreachable: never = message;
      return unreachable;
    }
  }
}

function describe(event: LiveboardEvent): string {
  return `${event.type}@${event.offset}`;
}

const byType: ServerMessageMap["presence:update"] = { type: "presence:update", room: "project:p1", users: [], joined: [], left: [] };
const kinds: ServerMessageType[] = ["connected", "task:moved", "presence:update"];
void [handle(byType), kinds];

// Client messages.
const outgoing: ClientMessage[] = [
  { type: "subscribe", room: "project:p1", since: { offset: 3, epoch: "e1" }, id: 1 },
  { type: "subscribe", room: "workspace:w1" },
  { type: "unsubscribe", room: "project:p1", id: "u1" },
  { type: "presence", action: "join", room: "project:p1" },
  { type: "ping" },
  { type: "refresh", token: "jwt" },
];
void outgoing;

// Close codes and the reconnect policy.
const restarting: CloseAction = CLOSE_ACTIONS[CloseCode.RESTARTING];
const expired: 4001 = CloseCode.TOKEN_EXPIRED;
const everyEvent: readonly EventType[] = EVENT_TYPES;
void [restarting, expired, everyEvent];
