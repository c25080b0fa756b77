// dist/index.js: the hooks as one ESM file (react and @liveboard/client stay imports: they are
// peer dependencies), with the pinned esbuild; declarations come from tsc (tsconfig.build.json).
import { build } from "esbuild";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
await build({
  entryPoints: [resolve(root, "src/index.ts")],
  outfile: resolve(root, "dist/index.js"),
  bundle: true,
  format: "esm",
  target: "es2022",
  platform: "neutral",
  external: ["react", "@liveboard/client"],
  logLevel: "warning",
});
