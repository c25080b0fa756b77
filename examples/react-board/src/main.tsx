// The app's one LiveboardClient, made once, outside React (the hooks share it through the
// provider). Against `liveboard serve --dev` the token comes from /api/dev/token for the user
// named in the page's URL (`?user=bob`); against a real server, from your own backend.
import { LiveboardClient } from "@liveboard/client";
import { LiveboardProvider } from "@liveboard/react";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import "./styles.css";

const user = new URLSearchParams(location.search).get("user") ?? "alice";

async function devToken(): Promise<string> {
  const response = await fetch(`/api/dev/token?user=${encodeURIComponent(user)}`);
  if (!response.ok) throw new Error(`token: HTTP ${response.status}`);
  return ((await response.json()) as { token: string }).token;
}

// baseUrl defaults to the page's origin; the token travels in Sec-WebSocket-Protocol.
const client = new LiveboardClient({ token: devToken });

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <LiveboardProvider client={client}>
      <App user={user} />
    </LiveboardProvider>
  </StrictMode>,
);
