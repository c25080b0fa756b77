// Misuses of the client's API: this file must NOT compile, and each line marked `// TSnnnn`
// must be reported with exactly that error (tests/integration/test_protocol_typescript.py;
// tsconfig.wrong.json checks it with wrong.ts): a wrong event name or field fails tsc.
import { Board, LiveboardClient } from "../../src/index.js";

const client = new LiveboardClient({ token: "jwt", baseUrl: "https://lb.example" });
client.on("conected", () => {}); // TS2345
client.on("state", (s) => void s.status); // TS2339
const sub = client.subscribe<{ "comment:added": { body: string } }>("project:p1");
sub.onEvent("task:move", () => {}); // TS2345
sub.onEvent("task:moved", (e) => void e.data.status); // TS2551
sub.onEvent("task:deleted", (e) => void e.data.task); // TS2339
sub.onEvent("comment:added", (e) => void e.data.text); // TS2339
sub.onEvent("comment:removed", () => {}); // TS2345
sub.on("presence", (p) => void p.members); // TS2339
const board = new Board(client, "p1");
board.on("rollback", (r) => void r.reason); // TS2339
board.getSnapshot().columns.push({ status: "x", tasks: [] }); // TS2339
const snapshot = board.getSnapshot();
snapshot.version = 2; // TS2540
void board.start({ signal: "stop" }); // TS2322
new LiveboardClient({ baseUrl: "https://lb.example" }); // TS2345
