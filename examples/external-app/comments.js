// A comments service that owns its table and puts its events into liveboard's rooms.
//
// Two ways to tell liveboard, pick one per deployment (docs/own-backend.md):
//
// * addComment: the comment row and its event in ONE transaction of this app, through the SQL
//   function liveboard_emit (this app and liveboard share the PostgreSQL database). The event
//   exists if and only if the comment does; nothing to retry, nothing to reconcile.
// * addCommentOverHttp: the row in this app's own database, then the event over HTTP
//   (POST /api/rooms/{room}/events with an API key). For a service that does not share
//   liveboard's database. The Idempotency-Key is derived from the comment's id, so a retry after
//   a lost answer publishes the event once.
//
// listComments reads the comments of a project and the project room's position in one snapshot:
// a client that loads them and then subscribes with `since` = that position misses nothing and
// sees nothing twice.
//
// No liveboard code runs here: only SQL and HTTP.

import pg from "pg";

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS comments (
  id         bigserial PRIMARY KEY,
  project_id text NOT NULL,
  task_id    text NOT NULL,
  author     text NOT NULL,
  body       text NOT NULL CHECK (length(body) BETWEEN 1 AND 2000),
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS comments_project ON comments (project_id, id);
`;

export function connect(databaseUrl) {
  return new pg.Pool({ connectionString: databaseUrl, max: 10 });
}

export async function migrate(pool) {
  await pool.query(SCHEMA);
}

const INSERT = `
INSERT INTO comments (project_id, task_id, author, body) VALUES ($1, $2, $3, $4)
RETURNING id, created_at`;

function eventData(comment, { taskId, author, body }) {
  return {
    taskId,
    commentId: String(comment.id),
    author,
    body,
    createdAt: comment.created_at.toISOString(),
  };
}

/** The comment and its `comment:added` event, committed together. `beforeCommit` (tests, demos)
 * runs after both were written and before COMMIT: if it throws, neither exists. */
export async function addComment(pool, comment, { beforeCommit } = {}) {
  const { projectId, taskId, author, body } = comment;
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    const { rows: [row] } = await client.query(INSERT, [projectId, taskId, author, body]);
    const { rows: [emitted] } = await client.query(
      "SELECT liveboard_emit($1, 'comment:added', $2::jsonb) AS offset",
      [`project:${projectId}`, JSON.stringify(eventData(row, comment))],
    );
    if (beforeCommit) await beforeCommit(row);
    await client.query("COMMIT");
    // bigint arrives as a string (it may exceed 2^53); offsets of one room stay far below.
    return { commentId: String(row.id), offset: Number(emitted.offset) };
  } catch (error) {
    await client.query("ROLLBACK").catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}

/** The comment committed here, then its event published over HTTP (see the top). */
export async function addCommentOverHttp(pool, liveboard, comment) {
  const { projectId, taskId, author, body } = comment;
  const { rows: [row] } = await pool.query(INSERT, [projectId, taskId, author, body]);
  const published = await publish(
    liveboard,
    `project:${projectId}`,
    "comment:added",
    eventData(row, comment),
    `comment-${row.id}`,
  );
  return { commentId: String(row.id), offset: published.offset };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** POST one event, retried on network errors, 409 (the same key still in flight), 429 and 5xx
 * with the same Idempotency-Key: liveboard answers a repeat with the first answer. */
export async function publish({ url, apiKey, attempts = 5 }, room, type, data, idempotencyKey) {
  for (let attempt = 1; ; attempt++) {
    let retryable;
    try {
      const response = await fetch(`${url}/api/rooms/${room}/events`, {
        method: "POST",
        headers: {
          Authorization: `apikey ${apiKey}`,
          "Content-Type": "application/json",
          "Idempotency-Key": idempotencyKey,
        },
        body: JSON.stringify({ type, data }),
      });
      if (response.status === 201) return await response.json();
      retryable = response.status === 409 || response.status === 429 || response.status >= 500;
      const error = new Error(`liveboard answered ${response.status}: ${await response.text()}`);
      if (!retryable || attempt >= attempts) throw error;
    } catch (error) {
      if (retryable === false || attempt >= attempts) throw error;
    }
    await sleep(100 * 2 ** attempt);
  }
}

/** A project's comments and its room's position, read in one snapshot. */
export async function listComments(pool, projectId) {
  const client = await pool.connect();
  try {
    await client.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    const { rows } = await client.query(
      "SELECT id, task_id, author, body FROM comments WHERE project_id = $1 ORDER BY id",
      [projectId],
    );
    const { rows: [{ position }] } = await client.query(
      "SELECT liveboard_position($1) AS position",
      [`project:${projectId}`],
    );
    await client.query("COMMIT");
    return {
      comments: rows.map((r) => ({ id: String(r.id), taskId: r.task_id, author: r.author, body: r.body })),
      offset: position.offset,
      epoch: position.epoch,
    };
  } catch (error) {
    await client.query("ROLLBACK").catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}
