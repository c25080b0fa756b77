// The hooks against a live liveboard server, rendered under StrictMode (effects mount, unmount
// and mount again) with @testing-library/react: not a mock in sight.
import { Board, LiveboardClient } from "@liveboard/client";
import { act, cleanup, renderHook, waitFor } from "@testing-library/react";
import { createElement, StrictMode } from "react";
import type { ReactNode } from "react";
import { afterAll, afterEach, beforeAll, expect, test } from "vitest";

import { LiveboardProvider, useBoard, useConnectionState, usePresence } from "../src/index.js";

const BASE = location.origin;
const token = (user: string) => async (): Promise<string> => {
  const response = await fetch(`${BASE}/api/dev/token?user=${user}`);
  return ((await response.json()) as { token: string }).token;
};
const wrapper = (client: LiveboardClient) =>
  function Wrapper({ children }: { children: ReactNode }): ReactNode {
    return createElement(StrictMode, null, createElement(LiveboardProvider, { client }, children));
  };
const titles = (columns: readonly { tasks: readonly { title: string }[] }[]): string[] =>
  columns.flatMap((c) => c.tasks.map((t) => t.title));

let alice: LiveboardClient;
let bob: LiveboardClient;
let projectId: string;
let room: string;

beforeAll(async () => {
  // In a page, the client defaults to the page's origin and connects at once.
  alice = new LiveboardClient({ token: token("alice") });
  bob = new LiveboardClient({ token: token("bob") });
  expect(alice.baseUrl).toBe(BASE);
  const [workspace] = await alice.listWorkspaces();
  const [project] = await alice.listProjects(workspace!.id);
  projectId = project!.id;
  room = `project:${projectId}`;
});

afterEach(() => cleanup());
afterAll(() => {
  alice.close();
  bob.close();
});

test("useBoard under StrictMode: one subscription, live changes, optimistic moves", async () => {
  const { result, unmount } = renderHook(
    () => ({ state: useConnectionState(), ...useBoard(projectId, { storage: false }) }),
    { wrapper: wrapper(alice) },
  );
  await waitFor(() => expect(result.current.state).toBe("connected"));
  await waitFor(() => expect(result.current.snapshot.columns.length).toBeGreaterThan(0));
  await result.current.board.subscription!.ready();
  // StrictMode mounted, unmounted and mounted the effect: one reference to the room is left.
  expect(alice.room(room)?._refs).toBe(1);
  const seen = result.current.snapshot;
  expect(Object.isFrozen(seen)).toBe(true);

  const title = `react ${Date.now()}`;
  await bob.createTask(projectId, { title });
  await waitFor(() => expect(titles(result.current.snapshot.columns)).toContain(title));
  expect(result.current.snapshot.version).toBeGreaterThan(seen.version);

  const board: Board = result.current.board;
  const task = board.view().find((t) => t.title === title)!;
  const last = board.statuses[board.statuses.length - 1]!;
  let moved!: Promise<unknown>;
  act(() => {
    moved = board.move(task.id, last, 0);
  });
  // Shown at once, pending, then confirmed by the stream.
  expect(result.current.snapshot.columns.at(-1)!.tasks[0]!.id).toBe(task.id);
  expect(result.current.snapshot.pending.has(task.id)).toBe(true);
  await act(async () => void (await moved));
  await waitFor(() => expect(result.current.snapshot.pending.has(task.id)).toBe(false));
  expect(result.current.snapshot.columns.at(-1)!.tasks[0]!.id).toBe(task.id);

  unmount();
  expect(alice.room(room)).toBeUndefined();
});

test("usePresence shows who is here, and who left when their component unmounts", async () => {
  const mine = renderHook(() => usePresence(room), { wrapper: wrapper(alice) });
  await waitFor(() => expect(mine.result.current.map((u) => u.userId)).toContain("alice"));
  expect(alice.room(room)?._refs).toBe(1);
  const theirs = renderHook(() => usePresence(room), { wrapper: wrapper(bob) });
  await waitFor(() => expect(mine.result.current.map((u) => u.userId)).toContain("bob"));
  await waitFor(() => expect(theirs.result.current.map((u) => u.userId)).toEqual(["alice", "bob"]));
  theirs.unmount();
  await waitFor(() => expect(mine.result.current.map((u) => u.userId)).not.toContain("bob"));
  expect(bob.room(room)).toBeUndefined();
  mine.unmount();
});
