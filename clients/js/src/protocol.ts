// Generated from liveboard.protocol by `make asyncapi` (tools/protocol_ts.py), from the
// AsyncAPI document docs/asyncapi.json: do not edit. The types of liveboard's WebSocket
// protocol, version 0.1.0 (CONTRACT §4, docs/protocol.md).

/** The assignee before (`from`) and after (`to`); `null` is no assignee. */
export interface AssigneeChange {
  from: string | null;
  to: string | null;
}

/** The first message of every connection: its id (events' `origin`) and its user. */
export interface Connected {
  type: "connected";
  connectionId: string;
  userId: string;
}

/** The codes an `error` may carry: a closed list. */
export type ErrorCode = "bad_json" | "forbidden" | "invalid_message" | "invalid_room" | "not_subscribed" | "rate_limited" | "too_many_subscriptions" | "unauthorized" | "unknown_type";

/** `error`: a message not acted on (`code` in `ERROR_CODES`); the connection stays. */
export interface ErrorReply {
  type: "error";
  code: ErrorCode;
  message: string;
  id?: string | number;
}

/** `member:added` (workspace rooms): the new member and their role. */
export interface MemberAddedData {
  userId: string;
  role: "admin" | "member" | "owner";
}

/**
 * `member:added`: one committed change, as its room's subscribers receive it; `offset` is the
 * room's previous offset + 1 in log lineage `epoch`.
 */
export interface MemberAddedEvent {
  type: "member:added";
  room: string;
  offset: number;
  epoch: string;
  /** Commit time, unix milliseconds. */
  ts: number;
  /**
   * Who made the change; null when a service published the event (an API key or
   * `liveboard_emit`).
   */
  userId: string | null;
  data: MemberAddedData;
  /** The connection whose REST call made the change (`X-Connection-Id`). */
  origin?: string;
}

/**
 * `member:removed` (workspace rooms): the user who is no longer a member; their
 * subscriptions to the workspace's rooms have ended (`unsubscribed` `forbidden`).
 */
export interface MemberRemovedData {
  userId: string;
}

/**
 * `member:removed`: one committed change, as its room's subscribers receive it; `offset` is
 * the room's previous offset + 1 in log lineage `epoch`.
 */
export interface MemberRemovedEvent {
  type: "member:removed";
  room: string;
  offset: number;
  epoch: string;
  /** Commit time, unix milliseconds. */
  ts: number;
  /**
   * Who made the change; null when a service published the event (an API key or
   * `liveboard_emit`).
   */
  userId: string | null;
  data: MemberRemovedData;
  /** The connection whose REST call made the change (`X-Connection-Id`). */
  origin?: string;
}

/** An application-level ping, answered with `pong`. */
export interface Ping {
  type: "ping";
  id?: string | number | null;
}

/** The reply to `ping`. */
export interface Pong {
  type: "pong";
  id?: string | number;
}

/**
 * A position in a room's event log: `offset` in log lineage `epoch`.
 *
 * A subscriber's position is the last offset it has seen (`subscribe`'s `since`); a
 * room's head is its last committed offset (0 for a new room). Offsets grow by one per event
 * with no gap; a new `epoch` means a history that does not continue the old one.
 */
export interface Position {
  offset: number;
  epoch: string;
}

/** Announce (`join`) or withdraw (`leave`) this connection's presence in `room`. */
export interface Presence {
  type: "presence";
  action: "join" | "leave";
  room: string;
  id?: string | number | null;
}

/** `presence:update`: `users` is everyone present (sorted by id); who joined and left. */
export interface PresenceUpdate {
  type: "presence:update";
  room: string;
  users: PresenceUser[];
  joined: string[];
  left: string[];
}

/** One user viewing a room; `name` is their token's `name` claim or their id. */
export interface PresenceUser {
  userId: string;
  name: string;
}

export interface Project {
  id: string;
  workspaceId: string;
  name: string;
  statuses: string[];
  createdAt: string;
}

/** `project:created` (workspace rooms): the new project. */
export interface ProjectCreatedData {
  project: Project;
}

/**
 * `project:created`: one committed change, as its room's subscribers receive it; `offset` is
 * the room's previous offset + 1 in log lineage `epoch`.
 */
export interface ProjectCreatedEvent {
  type: "project:created";
  room: string;
  offset: number;
  epoch: string;
  /** Commit time, unix milliseconds. */
  ts: number;
  /**
   * Who made the change; null when a service published the event (an API key or
   * `liveboard_emit`).
   */
  userId: string | null;
  data: ProjectCreatedData;
  /** The connection whose REST call made the change (`X-Connection-Id`). */
  origin?: string;
}

/** Replace the connection's token before it expires. */
export interface Refresh {
  type: "refresh";
  token: string;
  id?: string | number | null;
}

/** The reply to `refresh`: the new token's expiry, in unix seconds. */
export interface Refreshed {
  type: "refreshed";
  expiresAt: number;
  id?: string | number;
}

/**
 * The server's `resync`: continuity of `room` is lost and its subscription has ended;
 * refetch the snapshot and resubscribe with its offset.
 */
export interface ResyncNotice {
  type: "resync";
  room: string;
  reason: string;
}

/** Join `room`; with `since`, also receive every event after that position. */
export interface Subscribe {
  type: "subscribe";
  room: string;
  since?: Position | null;
  id?: string | number | null;
}

/** The reply to `subscribe`: the room's head (or `since`), `recovered` when asked. */
export interface Subscribed {
  type: "subscribed";
  room: string;
  offset: number;
  epoch: string;
  recovered?: boolean;
  id?: string | number;
}

/**
 * A task. Its column's display order is by `rank` (CONTRACT §6.2: strict, the same for
 * every reader; ranks compare as byte strings, `liveboard.protocol.ranks`). `order` is the
 * number of CONTRACT §3, ascending (never descending) along the ranks; tasks placed by
 * neighbours may share one.
 */
export interface Task {
  id: string;
  projectId: string;
  title: string;
  description: string;
  status: string;
  order: number;
  rank: string;
  assigneeId: string | null;
  createdById: string;
  version: number;
  createdAt: string;
  updatedAt: string;
}

/**
 * The fields a `task:updated` changed, each with its value before and after; a field
 * that did not change is absent (at least one is present).
 */
export interface TaskChanges {
  title?: TextChange;
  description?: TextChange;
  assigneeId?: AssigneeChange;
}

/**
 * `task:created`: the new task, and the task it follows in its column (`afterId`;
 * `null`: the top). Its `task.rank` places it as well.
 */
export interface TaskCreatedData {
  task: Task;
  afterId: string | null;
}

/**
 * `task:created`: one committed change, as its room's subscribers receive it; `offset` is the
 * room's previous offset + 1 in log lineage `epoch`.
 */
export interface TaskCreatedEvent {
  type: "task:created";
  room: string;
  offset: number;
  epoch: string;
  /** Commit time, unix milliseconds. */
  ts: number;
  /**
   * Who made the change; null when a service published the event (an API key or
   * `liveboard_emit`).
   */
  userId: string | null;
  data: TaskCreatedData;
  /** The connection whose REST call made the change (`X-Connection-Id`). */
  origin?: string;
}

/** `task:deleted`: the id of the task that is gone. */
export interface TaskDeletedData {
  taskId: string;
}

/**
 * `task:deleted`: one committed change, as its room's subscribers receive it; `offset` is the
 * room's previous offset + 1 in log lineage `epoch`.
 */
export interface TaskDeletedEvent {
  type: "task:deleted";
  room: string;
  offset: number;
  epoch: string;
  /** Commit time, unix milliseconds. */
  ts: number;
  /**
   * Who made the change; null when a service published the event (an API key or
   * `liveboard_emit`).
   */
  userId: string | null;
  data: TaskDeletedData;
  /** The connection whose REST call made the change (`X-Connection-Id`). */
  origin?: string;
}

/**
 * `task:moved`: the task's column before and after, its new `order` and `rank` in
 * it, and the task it now follows (`afterId`; `null`: the top). The task's `version`
 * grew by one and its `updatedAt` is the event's `ts`. A column's rebalance (new ranks,
 * same order) is a `task:moved` per task, with `fromStatus` = `toStatus`.
 */
export interface TaskMovedData {
  taskId: string;
  fromStatus: string;
  toStatus: string;
  order: number;
  rank: string;
  afterId: string | null;
}

/**
 * `task:moved`: one committed change, as its room's subscribers receive it; `offset` is the
 * room's previous offset + 1 in log lineage `epoch`.
 */
export interface TaskMovedEvent {
  type: "task:moved";
  room: string;
  offset: number;
  epoch: string;
  /** Commit time, unix milliseconds. */
  ts: number;
  /**
   * Who made the change; null when a service published the event (an API key or
   * `liveboard_emit`).
   */
  userId: string | null;
  data: TaskMovedData;
  /** The connection whose REST call made the change (`X-Connection-Id`). */
  origin?: string;
}

/** `task:updated`: the task after the change, and what changed. */
export interface TaskUpdatedData {
  task: Task;
  changes: TaskChanges;
}

/**
 * `task:updated`: one committed change, as its room's subscribers receive it; `offset` is the
 * room's previous offset + 1 in log lineage `epoch`.
 */
export interface TaskUpdatedEvent {
  type: "task:updated";
  room: string;
  offset: number;
  epoch: string;
  /** Commit time, unix milliseconds. */
  ts: number;
  /**
   * Who made the change; null when a service published the event (an API key or
   * `liveboard_emit`).
   */
  userId: string | null;
  data: TaskUpdatedData;
  /** The connection whose REST call made the change (`X-Connection-Id`). */
  origin?: string;
}

/** A text field's value before (`from`) and after (`to`) the change. */
export interface TextChange {
  from: string;
  to: string;
}

/** Leave `room`. */
export interface Unsubscribe {
  type: "unsubscribe";
  room: string;
  id?: string | number | null;
}

/** The reply to `unsubscribe` (with its `id`), or a server-side end (with `reason`). */
export interface Unsubscribed {
  type: "unsubscribed";
  room: string;
  reason?: string;
  id?: string | number;
}

/** Every message a client sends. */
export type ClientMessage = Subscribe | Unsubscribe | Presence | Ping | Refresh;

/** Every message a server sends. */
export type ServerMessage = Connected | Subscribed | Unsubscribed | Pong | Refreshed | ErrorReply | PresenceUpdate | ResyncNotice | TaskCreatedEvent | TaskUpdatedEvent | TaskMovedEvent | TaskDeletedEvent | ProjectCreatedEvent | MemberAddedEvent | MemberRemovedEvent;

export type ClientMessageType = ClientMessage["type"];
export type ServerMessageType = ServerMessage["type"];

/** Each server message by its `type`. */
export interface ServerMessageMap {
  "connected": Connected;
  "subscribed": Subscribed;
  "unsubscribed": Unsubscribed;
  "pong": Pong;
  "refreshed": Refreshed;
  "error": ErrorReply;
  "presence:update": PresenceUpdate;
  "resync": ResyncNotice;
  "task:created": TaskCreatedEvent;
  "task:updated": TaskUpdatedEvent;
  "task:moved": TaskMovedEvent;
  "task:deleted": TaskDeletedEvent;
  "project:created": ProjectCreatedEvent;
  "member:added": MemberAddedEvent;
  "member:removed": MemberRemovedEvent;
}

/** Each event by its `type`. */
export interface EventMap {
  "task:created": TaskCreatedEvent;
  "task:updated": TaskUpdatedEvent;
  "task:moved": TaskMovedEvent;
  "task:deleted": TaskDeletedEvent;
  "project:created": ProjectCreatedEvent;
  "member:added": MemberAddedEvent;
  "member:removed": MemberRemovedEvent;
}

/** Each event type's `data`: `EventDataMap["task:moved"]` is a move's. */
export type EventDataMap = { [K in EventType]: EventMap[K]["data"] };
export type EventType = keyof EventMap;
/** Every event a subscriber may receive. */
export type LiveboardEvent = EventMap[EventType];
/** The event types, in the contract's order. */
export const EVENT_TYPES = ["task:created", "task:updated", "task:moved", "task:deleted", "project:created", "member:added", "member:removed"] as const satisfies readonly EventType[];

/** The close codes a client may see (RFC 6455's and liveboard's). */
export const CloseCode = {
  /** The connection did its job (a client closing, a server shutting a socket down cleanly). */
  NORMAL: 1000,
  /** RFC 6455: going away. */
  GOING_AWAY: 1001,
  /** A frame broke RFC 6455 (e.g. an unmasked client frame). */
  PROTOCOL_ERROR: 1002,
  /** A binary frame: the protocol is text only. */
  UNSUPPORTED_DATA: 1003,
  /** RFC 6455: invalid payload. */
  INVALID_PAYLOAD: 1007,
  /** Persistent abuse: too many messages, or too many invalid ones. */
  POLICY_VIOLATION: 1008,
  /** A message larger than `LIVEBOARD_MAX_MESSAGE_BYTES`. */
  MESSAGE_TOO_BIG: 1009,
  /** RFC 6455: mandatory extension. */
  MANDATORY_EXTENSION: 1010,
  /** RFC 6455: internal error. */
  INTERNAL_ERROR: 1011,
  /** The server is restarting: reconnect after a random delay. */
  RESTARTING: 1012,
  /** RFC 6455: try again later. */
  TRY_AGAIN_LATER: 1013,
  /** The token's `exp` passed without a `refresh`. */
  TOKEN_EXPIRED: 4001,
  /** The connection's unsent data passed the server's bound. */
  SLOW_CONSUMER: 4008,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/**
 * What a client does after a close:
 * - `reconnect`: Reconnect with backoff (dropped link, 1000/1001, 1011, 4008, anything
 *   unknown).
 * - `reconnect_later`: The server is restarting (1012) or overloaded (1013): backoff plus a
 *   random delay.
 * - `new_token`: The token expired (4001): get a new one from the provider and reconnect; a
 *   fixed token cannot be renewed, so the client stops.
 * - `fatal`: A client bug the server will refuse again (1002, 1003, 1007, 1008, 1009, 1010):
 *   stop.
 */
export type CloseAction = "reconnect" | "reconnect_later" | "new_token" | "fatal";

/**
 * The reconnect policy: the action for each close code (a code not listed, or a link dropped
 * without a close frame, is `reconnect`).
 */
export const CLOSE_ACTIONS: { readonly [C in CloseCode]: CloseAction } = {
  1000: "reconnect",
  1001: "reconnect",
  1002: "fatal",
  1003: "fatal",
  1007: "fatal",
  1008: "fatal",
  1009: "fatal",
  1010: "fatal",
  1011: "reconnect",
  1012: "reconnect_later",
  1013: "reconnect_later",
  4001: "new_token",
  4008: "reconnect",
};
