#!/usr/bin/env node
// The comments service from the command line (what the tests and docs/own-backend.md run):
//
//   DATABASE_URL=postgresql://… node cli.js migrate
//   DATABASE_URL=… node cli.js add --project P --task T --author A --body "text"
//   DATABASE_URL=… LIVEBOARD_URL=http://… LIVEBOARD_API_KEY=… node cli.js add --http …
//   DATABASE_URL=… node cli.js add --roll-back …     (emits, then fails before COMMIT)
//   DATABASE_URL=… node cli.js list --project P
//
// Prints one JSON line; exits 1 with the error on stderr.

import { parseArgs } from "node:util";
import { addComment, addCommentOverHttp, connect, listComments, migrate } from "./comments.js";

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    project: { type: "string" },
    task: { type: "string" },
    author: { type: "string", default: "comments-service" },
    body: { type: "string" },
    http: { type: "boolean", default: false },
    "roll-back": { type: "boolean", default: false },
  },
});

function required(name) {
  if (!values[name]) throw new Error(`--${name} is required`);
  return values[name];
}

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} must be set`);
  return value;
}

async function main(pool) {
  switch (positionals[0]) {
    case "migrate":
      await migrate(pool);
      return { migrated: true };
    case "add": {
      const comment = {
        projectId: required("project"),
        taskId: required("task"),
        author: values.author,
        body: required("body"),
      };
      if (values.http) {
        const liveboard = { url: env("LIVEBOARD_URL"), apiKey: env("LIVEBOARD_API_KEY") };
        return await addCommentOverHttp(pool, liveboard, comment);
      }
      const beforeCommit = values["roll-back"]
        ? () => {
            throw new Error("rolled back on purpose (--roll-back)");
          }
        : undefined;
      return await addComment(pool, comment, { beforeCommit });
    }
    case "list":
      return await listComments(pool, required("project"));
    default:
      throw new Error("usage: cli.js migrate | add --project P --task T --body B [--http] | list --project P");
  }
}

const pool = connect(process.env.DATABASE_URL ?? "");
try {
  console.log(JSON.stringify(await main(pool)));
} catch (error) {
  console.error(`comments: ${error.message}`);
  process.exitCode = 1;
} finally {
  await pool.end();
}
