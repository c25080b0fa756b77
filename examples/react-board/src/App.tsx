// A kanban board on @liveboard/react: columns of cards with move buttons, who is here, and the
// connection's state. Every change goes through `board` (optimistic: shown at once, marked
// "saving" until the server's event confirms it); everything shown comes from the hooks.
import type { Task } from "@liveboard/client";
import { useBoard, useConnectionState, useLiveboard, usePresence } from "@liveboard/react";
import { useEffect, useState } from "react";

const LABELS: Record<string, string> = { todo: "To do", in_progress: "In progress", done: "Done" };

/** The project named by `?project=`, or the first project of the user's first workspace. */
function useProjectId(): string | null {
  const client = useLiveboard();
  const [projectId, setProjectId] = useState(() => new URLSearchParams(location.search).get("project"));
  useEffect(() => {
    if (projectId) return;
    let cancelled = false;
    (async () => {
      for (const workspace of await client.listWorkspaces()) {
        const [project] = await client.listProjects(workspace.id);
        if (project) return project.id;
      }
      return null;
    })().then((id) => { if (!cancelled) setProjectId(id); }, () => undefined);
    return () => { cancelled = true; };
  }, [client, projectId]);
  return projectId;
}

export function App({ user }: { user: string }) {
  const projectId = useProjectId();
  return (
    <main>
      <header>
        <h1>React board</h1>
        <ConnectionBadge />
      </header>
      {projectId ? <Kanban projectId={projectId} user={user} /> : <p>Loading…</p>}
    </main>
  );
}

function ConnectionBadge() {
  const state = useConnectionState();
  return <span className={`badge badge-${state}`} data-testid="connection" data-state={state}>{state}</span>;
}

function Kanban({ projectId, user }: { projectId: string; user: string }) {
  const { snapshot, board } = useBoard(projectId, { user });
  const present = usePresence(`project:${projectId}`);
  const [problem, setProblem] = useState<string | null>(null);
  useEffect(() => board.on("rollback", ({ message }) => setProblem(message)), [board]);
  const statuses = snapshot.columns.map((column) => column.status);
  const move = (task: Task, step: number) => {
    const to = statuses[statuses.indexOf(task.status) + step];
    if (to) board.move(task.id, to).catch(() => undefined); // a refusal is the rollback event's
  };
  return (
    <>
      <p className="presence" data-testid="presence">
        Here now:{" "}
        {present.map((u) => <span key={u.userId} className="avatar" data-user-id={u.userId} title={u.name}>{u.name}</span>)}
        {snapshot.waiting > 0 && <span className="waiting"> · {snapshot.waiting} changes waiting</span>}
      </p>
      {problem && <p className="problem" role="alert" onClick={() => setProblem(null)}>{problem}</p>}
      <div className="columns">
        {snapshot.columns.map(({ status, tasks }) => (
          <section key={status} className="column" data-testid="column" data-status={status}>
            <h2>{LABELS[status] ?? status} <small>{tasks.length}</small></h2>
            {tasks.map((task) => {
              const saving = snapshot.pending.has(task.id);
              return (
                <article key={task.id} className={saving ? "card saving" : "card"} data-testid="card"
                         data-task-id={task.id} data-pending={String(saving)}>
                  <span>{task.title}</span>
                  <span className="moves">
                    <button aria-label="Move left" data-action="left" disabled={status === statuses[0]} onClick={() => move(task, -1)}>←</button>
                    <button aria-label="Move right" data-action="right" disabled={status === statuses.at(-1)} onClick={() => move(task, 1)}>→</button>
                  </span>
                </article>
              );
            })}
          </section>
        ))}
      </div>
    </>
  );
}
