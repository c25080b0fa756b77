// Typed use of the client's API: must compile under `tsc --strict` (npm run typecheck, and
// tests/integration/test_protocol_typescript.py). Event names and payloads come from the
// protocol's generated declarations; custom events are declared by the app.
import { Board, LiveboardClient, LiveboardError } from "../../src/index.js";
import type { BoardSnapshot, ConnectionState, RoomEvent, Task } from "../../src/index.js";

const client = new LiveboardClient({ token: async () => "jwt", baseUrl: "https://lb.example", autoConnect: false });
client.on("state", ({ state, retryIn }) => {
  const s: ConnectionState = state;
  void [s, retryIn];
});
client.on("connected", ({ connectionId, userId }) => void (connectionId + userId));
client.on("disconnected", ({ code, reason }) => void [code, reason]);

// Custom events another backend publishes, declared once for the room.
type Comments = { "comment:added": { commentId: string; body: string } };
const sub = client.subscribe<Comments>("project:p1", { presence: true });
sub.onEvent("task:moved", (e) => {
  const to: string = e.data.toStatus;
  const rank: string = e.data.rank;
  void [to, rank, e.offset, e.origin];
});
sub.onEvent("task:updated", (e) => void e.data.changes.title?.to);
sub.onEvent("comment:added", (e) => {
  const body: string = e.data.body;
  void [body, e.userId];
});
sub.on("event", (e: RoomEvent) => void [e.type, e.offset]);
sub.on("presence", ({ users, joined, left }) => void [users[0]?.name, joined, left]);

async function flow(signal: AbortSignal): Promise<void> {
  const { offset, epoch, recovered } = await sub.ready();
  const users = await sub.join();
  await sub.leave();
  const page = await client.history("project:p1", offset, 50);
  void [epoch, recovered, users.map((u) => u.userId), page.events.map((e) => e.type), page.truncated];

  const board = new Board(client, "p1", { user: "alice" });
  await board.start({ signal });
  const snapshot: BoardSnapshot = board.getSnapshot();
  const first: Task | undefined = snapshot.columns[0]?.tasks[0];
  const unsubscribe: () => void = board.subscribe(() => void board.getSnapshot().version);
  board.on("change", ({ type, taskId, own }) => void [type, taskId, own]);
  board.on("rollback", ({ message, error }) => void [message, error instanceof LiveboardError]);
  const created: Task = await board.createTask({ title: "x", status: "todo" });
  await board.move(created.id, "done", 0);
  const removal = board.remove(created.id, { undoFor: 5000 });
  const undone: boolean = removal.undo();
  void [first, snapshot.waiting, snapshot.pending.has("t"), unsubscribe, undone];
  board.stop();
  sub.unsubscribe();
}
void flow;
