// @liveboard/react: React bindings for @liveboard/client (docs: ../js/README.md, "React").
//
// Every hook reads an external store through useSyncExternalStore, so a render never sees a
// torn state under concurrent rendering; every side effect (starting a board, subscribing to a
// room) happens in an effect or a store subscription whose cleanup undoes it, and the client's
// subscriptions are reference-counted, so StrictMode's double mount leaves nothing behind.
import { Board } from "@liveboard/client";
import type { BoardOptions, BoardSnapshot, ConnectionState, LiveboardClient, PresenceUser } from "@liveboard/client";
import { createContext, createElement, useCallback, useContext, useEffect, useMemo, useSyncExternalStore } from "react";
import type { ReactNode } from "react";

const ClientContext = createContext<LiveboardClient | null>(null);
const NO_ONE: readonly PresenceUser[] = Object.freeze([]);

/** Makes `client` the one the hooks below use. Create it once (outside render, or in a ref). */
export function LiveboardProvider(props: { client: LiveboardClient; children?: ReactNode }): ReactNode {
  return createElement(ClientContext.Provider, { value: props.client }, props.children);
}

/** The client of the nearest `LiveboardProvider` (throws without one). */
export function useLiveboard(): LiveboardClient {
  const client = useContext(ClientContext);
  if (!client) throw new Error("useLiveboard: no <LiveboardProvider client={…}> above this component");
  return client;
}

/** The client's connection state; re-renders when it changes. */
export function useConnectionState(): ConnectionState {
  const client = useLiveboard();
  const subscribe = useCallback((changed: () => void) => client.on("state", changed), [client]);
  const read = (): ConnectionState => client.state;
  return useSyncExternalStore(subscribe, read, read);
}

export interface UseBoard {
  /** What the board shows: immutable, the same object until something changes. */
  snapshot: BoardSnapshot;
  /** The board, for its changes: `createTask`, `move`, `rename`, `remove`, and its events. */
  board: Board;
}

/**
 * The live board of a project: its snapshot (columns with local changes applied, presence,
 * waiting writes) and the `Board` to change it through. Started in an effect with an abort
 * signal, stopped by its cleanup; a new board when the client, project or options change.
 */
export function useBoard(projectId: string, options: BoardOptions = {}): UseBoard {
  const client = useLiveboard();
  const { presence, user, storage } = options;
  const board = useMemo(
    () => new Board(client, projectId, { ...(presence === undefined ? {} : { presence }), ...(user === undefined ? {} : { user }), ...(storage === undefined ? {} : { storage }) }),
    [client, projectId, presence, user, storage],
  );
  useEffect(() => {
    const controller = new AbortController();
    board.start({ signal: controller.signal }).catch((err: unknown) => {
      if (controller.signal.aborted) return; // unmounted meanwhile: nothing to report
      board.emit("error", { code: "start_failed", message: String((err as Error | null)?.message ?? err) });
    });
    return () => controller.abort();
  }, [board]);
  const snapshot = useSyncExternalStore(board.subscribe, board.getSnapshot, board.getSnapshot);
  return { snapshot, board };
}

/**
 * Who is present in `room` (`project:{pid}` or `workspace:{wid}`), this user included: joins
 * the room's presence while a component uses it (the subscription is shared and
 * reference-counted with every other user of the room on this client).
 */
export function usePresence(room: string): readonly PresenceUser[] {
  const client = useLiveboard();
  const subscribe = useCallback(
    (changed: () => void) => {
      const sub = client.subscribe(room, { presence: true });
      const off = sub.on("presence", changed);
      return () => {
        off();
        sub.unsubscribe();
      };
    },
    [client, room],
  );
  const read = (): readonly PresenceUser[] => client.room(room)?.presence ?? NO_ONE;
  return useSyncExternalStore(subscribe, read, () => NO_ONE);
}
