// The app is plain static files once built (`vite build` → dist/), served from the same origin
// as liveboard's API (liveboard's REST API sends no CORS headers): behind your reverse proxy in
// production. `base: "./"` makes every asset path relative, so the files work under any path.
//
// `npm run dev` serves the source with hot reload and forwards /api and /ws to LIVEBOARD_URL
// (a `liveboard serve --dev`, http://127.0.0.1:8000 unless set), so the page and the API share
// the dev server's origin.
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

const target = process.env.LIVEBOARD_URL ?? "http://127.0.0.1:8000";

export default defineConfig({
  base: "./",
  plugins: [react()],
  server: {
    proxy: {
      "/api": { target, changeOrigin: true },
      // The WebSocket's Origin is the dev server's; liveboard admits an Origin of its own host
      // (or one listed in LIVEBOARD_ALLOWED_ORIGINS), so the proxy presents the target's.
      "/ws": { target, changeOrigin: true, ws: true, headers: { origin: target } },
    },
  },
});
