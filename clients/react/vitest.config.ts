// The hooks' tests run in happy-dom against a live `liveboard serve --dev` at LIVEBOARD_URL:
// the page's origin is the server's (as for an app it serves), so the client's defaults apply.
// @liveboard/client resolves to its source (../js/src), so no build is needed first.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const url = process.env.LIVEBOARD_URL;
if (!url) throw new Error("set LIVEBOARD_URL to a `liveboard serve --dev` server (make test does)");

export default defineConfig({
  resolve: {
    alias: { "@liveboard/client": fileURLToPath(new URL("../js/src/index.ts", import.meta.url)) },
  },
  test: {
    environment: "happy-dom",
    environmentOptions: { happyDOM: { url } },
    include: ["test/**/*.test.ts"],
    testTimeout: 30000,
    pool: "threads",
    poolOptions: { threads: { singleThread: true } },
  },
});
