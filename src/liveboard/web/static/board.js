// The demo board served at / by `liveboard serve --dev`: a small app built on liveboard.js.
//
// URL parameters: ?user=alice (who you are; the picker sets it), &project=ID (default: the first
// project of the first workspace), &maxDelay=MS (cap of the reconnect backoff, default 10000).

import { Board, LiveboardClient } from "/static/liveboard.js";

/** @typedef {import("/static/liveboard.js").Task} Task */

const DEMO_USERS = [
  { id: "alice", name: "Alice Martin", role: "Owner" },
  { id: "bob", name: "Bob Okafor", role: "Admin" },
  { id: "carol", name: "Carol Chen", role: "Member" },
];
const STATUS_LABELS = { todo: "To do", in_progress: "In progress", done: "Done" };
const STATE_LABELS = {
  idle: "Not connected",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  closed: "Disconnected",
};

const ICONS = {
  left: '<svg viewBox="0 0 20 20" aria-hidden="true"><path d="M12.5 4.5 7 10l5.5 5.5" /></svg>',
  right: '<svg viewBox="0 0 20 20" aria-hidden="true"><path d="M7.5 4.5 13 10l-5.5 5.5" /></svg>',
  edit: '<svg viewBox="0 0 20 20" aria-hidden="true"><path d="M4 16h3L15.5 7.5a2.1 2.1 0 0 0-3-3L4 13v3Z" /><path d="m11.5 5.5 3 3" /></svg>',
  delete:
    '<svg viewBox="0 0 20 20" aria-hidden="true"><path d="M4.5 6h11M8 6V4.5h4V6M6 6l.7 9.5h6.6L14 6" /></svg>',
  plus: '<svg viewBox="0 0 20 20" aria-hidden="true"><path d="M10 4.5v11M4.5 10h11" /></svg>',
};

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const params = new URLSearchParams(location.search);

/** @type {LiveboardClient|null} */
let client = null;
/** @type {Board|null} */
let board = null;
let me = "";
/** Names we know, from the demo list and from presence. */
const names = new Map(DEMO_USERS.map((u) => [u.id, u.name]));

// ---- small helpers ------------------------------------------------------------------------------

/** @param {string} tag @param {Record<string, any>} [attrs] @param {(Node|string)[]} [children] */
function h(tag, attrs = {}, children = []) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
    else if (key === "style") el.style.cssText = value;
    else if (key === "html") el.innerHTML = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) el.append(child);
  return el;
}

/** A task title's length as the server counts it (CONTRACT §3: 1-200 characters, i.e. code
 * points). An input's ``maxlength`` counts UTF-16 units instead, which would admit only 100
 * emoji: it is set to twice the limit (a code point is at most two units) and this trims. */
const TITLE_MAX = 200;

/** Keep ``field`` at ``max`` code points at most, as ``maxlength`` would (typing, pasting). */
function limitCodePoints(/** @type {HTMLInputElement|HTMLTextAreaElement} */ field, max) {
  const trim = () => {
    const chars = Array.from(field.value);
    if (chars.length > max) field.value = chars.slice(0, max).join("");
  };
  // Not while an input method composes: the text is not final until compositionend.
  field.addEventListener("input", (e) => /** @type {InputEvent} */ (e).isComposing || trim());
  field.addEventListener("compositionend", trim);
}

const nameOf = (/** @type {string|null|undefined} */ id) => (id ? (names.get(id) ?? id) : "");
const statusLabel = (/** @type {string} */ s) =>
  STATUS_LABELS[s] ?? s.replace(/[_-]+/g, " ").replace(/^./, (c) => c.toUpperCase());

/** Avatar colours (white text reads well on each); a user id always gets the same one. */
const PALETTE = [
  "hsl(235 60% 52%)", "hsl(199 80% 38%)", "hsl(24 80% 48%)", "hsl(346 65% 48%)",
  "hsl(262 55% 52%)", "hsl(152 55% 34%)", "hsl(292 45% 45%)", "hsl(42 85% 38%)",
  "hsl(214 65% 48%)", "hsl(172 70% 30%)",
];

function colourOf(/** @type {string} */ id) {
  let hash = 2166136261; // FNV-1a
  for (const ch of id) hash = Math.imul(hash ^ /** @type {number} */ (ch.codePointAt(0)), 16777619);
  return PALETTE[(hash >>> 0) % PALETTE.length];
}

function initials(/** @type {string} */ name) {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  if (parts.length === 0) return "?";
  const first = [...parts[0]][0] ?? "";
  const last = parts.length > 1 ? ([...parts[parts.length - 1]][0] ?? "") : ([...parts[0]][1] ?? "");
  return (first + last).toUpperCase();
}

/** @param {string} userId @param {string} [name] @param {string} [extraClass] */
function avatar(userId, name = nameOf(userId), extraClass = "") {
  const el = h("span", {
    class: `avatar ${extraClass}`.trim(),
    title: name,
    "data-user-id": userId,
  });
  el.textContent = initials(name);
  el.style.setProperty("--avatar-bg", colourOf(userId));
  return el;
}

/** @param {string} text @param {"info"|"error"} [kind] */
function toast(text, kind = "info") {
  const el = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" });
  el.textContent = text;
  $("toasts").append(el);
  setTimeout(() => el.classList.add("toast-out"), 4000);
  setTimeout(() => el.remove(), 4400);
}

/** A toast with an Undo button (for `ms`); `undo` returns whether it was in time. */
function undoToast(/** @type {string} */ text, /** @type {() => boolean} */ undo, ms = 5000) {
  const button = h("button", { type: "button", "data-testid": "undo-delete" }, ["Undo"]);
  const el = h("div", { class: "toast toast-undo", role: "status", "data-testid": "undo-toast" }, [
    h("span", {}, [text]),
    button,
  ]);
  button.addEventListener("click", () => {
    el.remove();
    if (!undo()) toast("Too late to undo: the card is deleted.", "error");
  });
  $("toasts").append(el);
  setTimeout(() => el.classList.add("toast-out"), ms - 400);
  setTimeout(() => el.remove(), ms);
}

/** "2 changes waiting": writes the server has not accepted yet (offline, or on their way). */
function renderQueue(/** @type {number} */ waiting) {
  const el = $("queue");
  el.hidden = waiting === 0;
  el.dataset.waiting = String(waiting);
  el.textContent = waiting === 1 ? "1 change waiting" : `${waiting} changes waiting`;
  el.title = "Made here, not yet accepted by the server; sent in order when the connection is back";
}

function showMessage(/** @type {string} */ text) {
  $("message-text").textContent = text;
  $("message").hidden = false;
}

// ---- user picker ----------------------------------------------------------------------------------

function showPicker() {
  document.body.classList.add("is-picking");
  $("picker").hidden = false;
  const list = $("picker-users");
  list.replaceChildren(
    ...DEMO_USERS.map((u) =>
      h(
        "button",
        {
          type: "button",
          class: "picker-user",
          "data-testid": `pick-user-${u.id}`,
          onclick: () => {
            const next = new URLSearchParams(location.search);
            next.set("user", u.id);
            location.search = next.toString();
          },
        },
        [
          avatar(u.id, u.name, "avatar-lg"),
          h("span", { class: "picker-user-text" }, [
            h("strong", {}, [u.name]),
            h("span", {}, [`${u.id} · ${u.role}`]),
          ]),
        ],
      ),
    ),
  );
  list.querySelector("button")?.focus();
}

// ---- connection indicator and presence ------------------------------------------------------------

/** How long the connection may be down before the banner says so: a restart usually takes less. */
const BANNER_AFTER_MS = 2000;

/**
 * What the top bar and the banner say about the connection (pure: the caller reads the clock
 * and the browser's network flag).
 * @param {{state: string, networkDown: boolean, downForMs: number, retryInMs: number|null}} c
 *   retryInMs: time left until the next scheduled attempt (null: none scheduled).
 * @returns {{label: string, cause: "" | "server" | "network", banner: string|null, retry: boolean}}
 */
function connectionView({ state, networkDown, downForMs, retryInMs }) {
  if (state !== "reconnecting" && state !== "offline") {
    return { label: STATE_LABELS[state] ?? state, cause: "", banner: null, retry: false };
  }
  // The client says `offline` after 5 failed attempts as well as when the browser has no
  // network: only the second is "Offline". The first is a server that does not answer.
  if (networkDown) {
    return {
      label: "Offline",
      cause: "network",
      banner: "You're offline — your changes are kept and sent when the network is back.",
      retry: false,
    };
  }
  const seconds = retryInMs === null ? 0 : Math.ceil(retryInMs / 1000);
  return {
    label: "Reconnecting…",
    cause: "server",
    banner:
      downForMs < BANNER_AFTER_MS
        ? null
        : seconds > 0
          ? `Can't reach the server — retrying in ${seconds} s`
          : "Can't reach the server — retrying now…",
    retry: true,
  };
}

/** The connection as the client last reported it, and since when it is down. */
const link = {
  state: "idle",
  /** ms timestamp of the end of the last connection (or of the page's first attempt) */
  downSince: 0,
  /** ms timestamp of the next scheduled attempt, or null */
  retryAt: /** @type {number|null} */ (null),
  ticker: /** @type {ReturnType<typeof setInterval>|null} */ (null),
};

function onConnectionState(/** @type {any} */ info) {
  const wasDown = link.state === "reconnecting" || link.state === "offline";
  const down = info.state === "reconnecting" || info.state === "offline";
  if (down && !wasDown) link.downSince = Date.now();
  link.state = info.state;
  link.retryAt = down && typeof info.retryIn === "number" ? Date.now() + info.retryIn : null;
  renderConnection();
  // Count the seconds down while down; stop once connected (or closed).
  if (down && !link.ticker) link.ticker = setInterval(renderConnection, 250);
  if (!down && link.ticker) {
    clearInterval(link.ticker);
    link.ticker = null;
  }
}

function renderConnection() {
  const now = Date.now();
  const view = connectionView({
    state: link.state,
    networkDown: navigator.onLine === false,
    downForMs: now - link.downSince,
    retryInMs: link.retryAt === null ? null : Math.max(0, link.retryAt - now),
  });
  const el = $("connection");
  el.dataset.state = link.state;
  el.dataset.cause = view.cause;
  $("connection-label").textContent = view.label;
  el.title =
    link.state === "connected" ? "Changes by others appear live" : (view.banner ?? view.label);
  document.body.classList.toggle("is-live", link.state === "connected");
  const banner = $("conn-banner");
  banner.hidden = view.banner === null;
  banner.dataset.cause = view.cause;
  const text = $("conn-banner-text");
  if (view.banner !== null && text.textContent !== view.banner) text.textContent = view.banner;
  $("retry-now").hidden = !view.retry;
}

/** "Retry now": the client's next attempt at once, and the page's own REST retries too. */
function retryNow() {
  client?.retryNow();
  wakePatience();
}

/** At most this many avatars in the top bar; the others are counted in a "+N". */
const MAX_AVATARS = 5;

function renderPresence(/** @type {{userId: string, name: string}[]} */ users) {
  for (const u of users) names.set(u.userId, u.name);
  const stack = $("presence-avatars");
  // You first, then the others in the server's order: a crowd never pushes you out of view.
  const ordered = [...users.filter((u) => u.userId === me), ...users.filter((u) => u.userId !== me)];
  const shown = ordered.length > MAX_AVATARS ? ordered.slice(0, MAX_AVATARS - 1) : ordered;
  const hidden = ordered.slice(shown.length);
  stack.replaceChildren(
    ...shown.map((u) => {
      const el = avatar(u.userId, u.name, u.userId === me ? "is-me" : "");
      el.dataset.testid = "presence-avatar";
      el.title = u.userId === me ? `${u.name} (you)` : u.name;
      return el;
    }),
  );
  if (hidden.length > 0) {
    const more = h("span", {
      class: "avatar avatar-more",
      "data-testid": "presence-more",
      title: hidden.map((u) => u.name).join(", "),
    });
    more.textContent = `+${hidden.length}`;
    stack.append(more);
  }
  const others = users.filter((u) => u.userId !== me).length;
  $("presence-label").textContent =
    others === 0 ? "Only you" : `${users.length} viewing`;
  $("presence").hidden = false;
  $("presence").setAttribute(
    "aria-label",
    `Viewing now: ${users.map((u) => (u.userId === me ? `${u.name} (you)` : u.name)).join(", ")}`,
  );
}

// ---- the board ------------------------------------------------------------------------------------

/** status → {section, list, count} */
const columns = new Map();
/** task id → card element */
const cards = new Map();
/** id of the card whose title is being edited */
let editing = null;
/** true while render moves elements (a focused input would blur and save) */
let rendering = false;
/** the dragged card's id */
let dragId = null;

function buildColumns() {
  const root = $("board");
  root.replaceChildren();
  columns.clear();
  cards.clear();
  board.statuses.forEach((status, i) => {
    const count = h("span", { class: "column-count", "data-testid": "column-count" });
    const list = h("div", {
      class: "card-list",
      "data-testid": "card-list",
      role: "list",
      "aria-label": statusLabel(status),
    });
    const input = h("input", {
      class: "new-task-input",
      "data-testid": "new-task-input",
      name: "title",
      placeholder: "Add a task…",
      maxlength: 2 * TITLE_MAX,
      autocomplete: "off",
      "aria-label": `New task in ${statusLabel(status)}`,
    });
    limitCodePoints(/** @type {HTMLInputElement} */ (input), TITLE_MAX);
    const form = h(
      "form",
      { class: "new-task", "data-testid": "new-task-form", "data-status": status },
      [
        input,
        h("button", {
          type: "submit",
          class: "icon-btn add-btn",
          "data-testid": "new-task-submit",
          "aria-label": `Add to ${statusLabel(status)}`,
          title: "Add",
          html: ICONS.plus,
        }),
      ],
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const title = /** @type {HTMLInputElement} */ (input).value.trim();
      if (!title) return;
      /** @type {HTMLInputElement} */ (input).value = "";
      board.createTask({ title, status }).catch(() => {
        /** @type {HTMLInputElement} */ (input).value ||= title;
      });
    });
    const section = h(
      "section",
      {
        class: "column",
        "data-testid": "column",
        "data-status": status,
        style: `--accent-hue: ${[220, 35, 150, 275, 195, 340][i % 6]}`,
      },
      [
        h("header", { class: "column-header" }, [
          h("span", { class: "column-dot", "aria-hidden": "true" }),
          h("h2", { class: "column-title" }, [statusLabel(status)]),
          count,
        ]),
        list,
        form,
      ],
    );
    section.addEventListener("dragover", (e) => onDragOver(e, status));
    section.addEventListener("dragleave", (e) => {
      if (!section.contains(/** @type {Node} */ (e.relatedTarget))) clearDropMarks();
    });
    section.addEventListener("drop", (e) => onDrop(e, status));
    root.append(section);
    columns.set(status, { section, list, count });
  });
}

/** @param {Task} task */
function createCard(task) {
  const title = h("p", { class: "card-title", "data-testid": "task-title" });
  const button = (/** @type {string} */ action, /** @type {string} */ label) =>
    h("button", {
      type: "button",
      class: "icon-btn",
      "data-action": action,
      "data-testid": action === "left" || action === "right" ? `move-${action}` : `${action}-task`,
      "aria-label": label,
      title: label,
      html: ICONS[action],
    });
  const card = h(
    "article",
    {
      class: "card",
      "data-testid": "task-card",
      "data-task-id": task.id,
      tabindex: 0,
      draggable: "true",
      role: "listitem",
    },
    [
      title,
      h("footer", { class: "card-footer" }, [
        h("span", { class: "card-assignee" }),
        h("div", { class: "card-actions" }, [
          button("left", "Move left"),
          button("right", "Move right"),
          button("edit", "Edit title"),
          button("delete", "Delete"),
        ]),
      ]),
    ],
  );
  card.addEventListener("dragstart", (e) => {
    if (editing === task.id) return e.preventDefault();
    dragId = task.id;
    e.dataTransfer?.setData("text/plain", task.id);
    if (e.dataTransfer) e.dataTransfer.effectAllowed = "move";
    requestAnimationFrame(() => card.classList.add("dragging"));
  });
  card.addEventListener("dragend", () => {
    dragId = null;
    card.classList.remove("dragging");
    clearDropMarks();
  });
  cards.set(task.id, card);
  return card;
}

/** @param {HTMLElement} card @param {Task} task @param {number} col */
function updateCard(card, task, col) {
  card.dataset.status = task.status;
  // Shown at once, confirmed when the stream brings its event (or undone with a message).
  const pending = board.isPending(task.id);
  card.classList.toggle("is-pending", pending);
  card.dataset.pending = String(pending);
  card.dataset.version = String(task.version);
  card.setAttribute("aria-label", task.title);
  if (editing !== task.id) {
    const title = /** @type {HTMLElement} */ (card.querySelector(".card-title"));
    if (title.textContent !== task.title) title.textContent = task.title;
  }
  const slot = /** @type {HTMLElement} */ (card.querySelector(".card-assignee"));
  if ((slot.dataset.assignee ?? "") !== (task.assigneeId ?? "")) {
    slot.dataset.assignee = task.assigneeId ?? "";
    slot.replaceChildren();
    if (task.assigneeId) {
      const a = avatar(task.assigneeId, nameOf(task.assigneeId), "avatar-sm");
      a.title = `Assigned to ${nameOf(task.assigneeId)}`;
      slot.append(a, h("span", { class: "assignee-name" }, [nameOf(task.assigneeId).split(" ")[0]]));
    }
  }
  const statuses = board.statuses;
  const left = /** @type {HTMLButtonElement} */ (card.querySelector('[data-action="left"]'));
  const right = /** @type {HTMLButtonElement} */ (card.querySelector('[data-action="right"]'));
  left.disabled = col === 0;
  right.disabled = col === statuses.length - 1;
  left.title = left.disabled ? "" : `Move to ${statusLabel(statuses[col - 1])}`;
  right.title = right.disabled ? "" : `Move to ${statusLabel(statuses[col + 1])}`;
  left.setAttribute("aria-label", left.title || "Move left");
  right.setAttribute("aria-label", right.title || "Move right");
}

/** The next card element after `node` (or the first of `list`), skipping leaving cards. */
function nextCard(/** @type {Element} */ list, /** @type {Element|null} */ node) {
  let el = node ? node.nextElementSibling : list.firstElementChild;
  while (el && el.classList.contains("leaving")) el = el.nextElementSibling;
  return el;
}

function render() {
  if (!board) return;
  rendering = true;
  const focused = document.activeElement;
  const focusedCard = focused instanceof HTMLElement ? focused.closest(".card") : null;
  let refocus = null;
  const seen = new Set();
  board.columns().forEach((column, col) => {
    const entry = columns.get(column.status);
    if (!entry) return;
    entry.count.textContent = String(column.tasks.length);
    let prev = null;
    for (const task of column.tasks) {
      seen.add(task.id);
      const card = cards.get(task.id) ?? createCard(task);
      updateCard(card, task, col);
      const expected = nextCard(entry.list, prev);
      if (card !== expected) {
        if (focusedCard === card) refocus = focused;
        entry.list.insertBefore(card, expected);
      }
      prev = card;
    }
  });
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      if (touchDrag?.id === id) endTouchDrag(); // it is gone: nothing left to drop
      cards.delete(id);
      if (editing === id) editing = null;
      card.remove();
    }
  }
  if (refocus instanceof HTMLElement && refocus.isConnected) refocus.focus({ preventScroll: false });
  rendering = false;
}

function flash(/** @type {string} */ id) {
  const card = cards.get(id);
  if (!card) return;
  card.classList.remove("flash");
  void card.offsetWidth; // restart the animation
  card.classList.add("flash");
  card.addEventListener("animationend", () => card.classList.remove("flash"), { once: true });
}

/** A remote delete: fade the card out before it goes. */
function leave(/** @type {string} */ id) {
  const card = cards.get(id);
  if (!card) return;
  if (touchDrag?.id === id) endTouchDrag();
  cards.delete(id);
  card.classList.add("leaving");
  setTimeout(() => card.remove(), 350);
}

// ---- editing, moving, deleting ------------------------------------------------------------------

function startEdit(/** @type {string} */ id) {
  const card = cards.get(id);
  const task = board.task(id);
  if (!card || !task || editing) return;
  editing = id;
  card.classList.add("editing");
  card.draggable = false;
  const title = /** @type {HTMLElement} */ (card.querySelector(".card-title"));
  const input = /** @type {HTMLTextAreaElement} */ (
    h("textarea", {
      class: "card-title-input",
      "data-testid": "task-title-input",
      maxlength: 2 * TITLE_MAX,
      rows: 2,
      "aria-label": "Task title",
    })
  );
  limitCodePoints(input, TITLE_MAX);
  input.value = task.title;
  title.replaceChildren(input);
  input.focus();
  input.select();
  let done = false;
  const finish = (/** @type {boolean} */ save) => {
    if (done) return;
    done = true;
    const value = input.value.trim().replace(/\s+/g, " ");
    editing = null;
    card.classList.remove("editing");
    card.draggable = true;
    title.textContent = task.title;
    if (save && value && value !== board.task(id)?.title) {
      board.rename(id, value).catch(() => {});
    }
    render();
    cards.get(id)?.focus();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      finish(true);
    } else if (e.key === "Escape") {
      e.preventDefault();
      finish(false);
    }
    e.stopPropagation();
  });
  input.addEventListener("blur", () => {
    if (!rendering) finish(true);
    else requestAnimationFrame(() => input.isConnected && input.focus());
  });
}

/** Move a card one column left (-1) or right (+1), to the end of that column. */
function moveBy(/** @type {string} */ id, /** @type {number} */ delta) {
  const task = board.task(id);
  if (!task) return;
  const statuses = board.statuses;
  const to = statuses[statuses.indexOf(task.status) + delta];
  if (!to) return;
  board.move(id, to).catch(() => {});
}

/** Move a card up (-1) or down (+1) within its column. */
function reorder(/** @type {string} */ id, /** @type {number} */ delta) {
  const task = board.task(id);
  if (!task) return;
  const column = board.columns().find((c) => c.status === task.status);
  const index = column.tasks.findIndex((t) => t.id === id);
  const target = index + delta;
  if (target < 0 || target >= column.tasks.length) return;
  board.move(id, task.status, target).catch(() => {});
}

/** How long a deleted card can be brought back: its DELETE is sent only after this. */
const UNDO_MS = 5000;

function remove(/** @type {string} */ id) {
  const task = board.task(id);
  const card = cards.get(id);
  // Keep keyboard users in the column: focus a neighbour first.
  const neighbour = card?.nextElementSibling ?? card?.previousElementSibling;
  const deletion = board.remove(id, { undoFor: UNDO_MS });
  deletion.catch(() => {});
  if (task) undoToast(`Deleted “${task.title}”`, deletion.undo, UNDO_MS);
  if (neighbour instanceof HTMLElement) neighbour.focus();
}

function onBoardClick(/** @type {MouseEvent} */ e) {
  const target = /** @type {HTMLElement} */ (e.target);
  const button = target.closest("button[data-action]");
  const card = target.closest(".card");
  if (!card) return;
  const id = /** @type {HTMLElement} */ (card).dataset.taskId;
  if (button) {
    const action = /** @type {HTMLElement} */ (button).dataset.action;
    if (action === "left") moveBy(id, -1);
    else if (action === "right") moveBy(id, +1);
    else if (action === "edit") startEdit(id);
    else if (action === "delete") remove(id);
  } else if (target.closest(".card-title") && !editing) {
    startEdit(id);
  }
}

function onBoardKey(/** @type {KeyboardEvent} */ e) {
  const target = /** @type {HTMLElement} */ (e.target);
  if (!target.classList.contains("card")) return;
  const id = target.dataset.taskId;
  const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  if (e.altKey && e.key in moves) {
    e.preventDefault();
    const [dx, dy] = moves[e.key];
    if (dx) moveBy(id, dx);
    else reorder(id, dy);
  } else if (!e.altKey && (e.key === "ArrowUp" || e.key === "ArrowDown")) {
    e.preventDefault(); // walk the column
    const sibling = e.key === "ArrowUp" ? target.previousElementSibling : target.nextElementSibling;
    if (sibling instanceof HTMLElement) sibling.focus();
  } else if (e.key === "Enter" || e.key === "F2") {
    e.preventDefault();
    startEdit(id);
  } else if (e.key === "Delete") {
    e.preventDefault();
    remove(id);
  }
}

// ---- drag and drop ----------------------------------------------------------------------------

function clearDropMarks() {
  for (const el of document.querySelectorAll(".drop-before, .drop-end")) {
    el.classList.remove("drop-before", "drop-end");
  }
}

/** Where a drop at clientY would land in column `status`: index among the other cards. */
function dropIndex(/** @type {string} */ status, /** @type {number} */ y) {
  const list = columns.get(status).list;
  const others = [...list.children].filter(
    (el) => el instanceof HTMLElement && el.dataset.taskId !== dragId && !el.classList.contains("leaving"),
  );
  let index = others.findIndex((el) => {
    const r = el.getBoundingClientRect();
    return y < r.top + r.height / 2;
  });
  if (index < 0) index = others.length;
  return { index, before: others[index] ?? null, list };
}

/** Show where the dragged card would land in column `status` at clientY. */
function markDrop(/** @type {string} */ status, /** @type {number} */ y) {
  const { before, list } = dropIndex(status, y);
  clearDropMarks();
  if (before) before.classList.add("drop-before");
  else list.classList.add("drop-end");
}

/** Move card `id` to where clientY points in column `status` (a mouse drop or a touch drop). */
function dropAt(/** @type {string} */ id, /** @type {string} */ status, /** @type {number} */ y) {
  const { index } = dropIndex(status, y);
  clearDropMarks();
  dragId = null;
  const task = board.task(id);
  if (!task) return;
  const column = board.columns().find((c) => c.status === status);
  // Dropped where it already is: nothing to do.
  if (task.status === status && column.tasks.findIndex((t) => t.id === id) === index) return;
  board.move(id, status, index).catch(() => {});
}

function onDragOver(/** @type {DragEvent} */ e, /** @type {string} */ status) {
  if (!dragId) return;
  e.preventDefault();
  if (e.dataTransfer) e.dataTransfer.dropEffect = "move";
  markDrop(status, e.clientY);
}

function onDrop(/** @type {DragEvent} */ e, /** @type {string} */ status) {
  const id = dragId ?? e.dataTransfer?.getData("text/plain");
  if (!id) return;
  e.preventDefault();
  dropAt(id, status, e.clientY);
}

// ---- touch: hold a card, then drag it ------------------------------------------------------------
//
// Browsers start no HTML drag and drop from a touch, so touch has its own: a finger held still
// on a card for TOUCH_HOLD_MS picks it up (a finger that moves first is scrolling the page),
// a copy of the card follows the finger, the drop marks show where it will land, and lifting
// the finger drops it there. The board's touchmove listener is registered up front and not
// passive: only then may it cancel the scrolling the finger would otherwise do while dragging.

const TOUCH_HOLD_MS = 300;
/** px a finger may wander during the hold (it trembles) before the hold counts as a scroll */
const TOUCH_SLOP = 10;
/** px from the board's edges (or the window's top and bottom) where a drag scrolls it */
const EDGE = 36;

/** @type {null | {id: string, card: HTMLElement, touchId: number, x: number, y: number,
 *   startX: number, startY: number, timer: any, ghost: HTMLElement|null, dx: number, dy: number,
 *   status: string|null, frame: number}} */
let touchDrag = null;

function onTouchStart(/** @type {TouchEvent} */ e) {
  if (touchDrag || e.touches.length !== 1 || editing) return;
  const target = /** @type {HTMLElement} */ (e.target);
  const card = /** @type {HTMLElement|null} */ (target.closest(".card"));
  if (!card || target.closest("button, input, textarea")) return;
  const t = e.touches[0];
  touchDrag = {
    id: /** @type {string} */ (card.dataset.taskId),
    card,
    touchId: t.identifier,
    x: t.clientX,
    y: t.clientY,
    startX: t.clientX,
    startY: t.clientY,
    timer: setTimeout(pickUp, TOUCH_HOLD_MS),
    ghost: null,
    dx: 0,
    dy: 0,
    status: null,
    frame: 0,
  };
}

function pickUp() {
  const drag = touchDrag;
  if (!drag || !drag.card.isConnected) return endTouchDrag();
  const rect = drag.card.getBoundingClientRect();
  const ghost = /** @type {HTMLElement} */ (drag.card.cloneNode(true));
  ghost.classList.add("drag-ghost");
  ghost.removeAttribute("data-testid");
  ghost.setAttribute("aria-hidden", "true");
  ghost.style.width = `${rect.width}px`;
  drag.dx = drag.x - rect.left;
  drag.dy = drag.y - rect.top;
  drag.ghost = ghost;
  document.body.append(ghost);
  dragId = drag.id;
  drag.card.classList.add("dragging");
  $("board").classList.add("is-touch-dragging");
  navigator.vibrate?.(15);
  followFinger();
  drag.frame = requestAnimationFrame(autoScroll);
}

function onTouchMove(/** @type {TouchEvent} */ e) {
  const drag = touchDrag;
  if (!drag) return;
  const t = [...e.changedTouches].find((touch) => touch.identifier === drag.touchId);
  if (!t) return;
  drag.x = t.clientX;
  drag.y = t.clientY;
  if (!drag.ghost) {
    // Moved before the hold ended: the finger is scrolling, not dragging.
    if (Math.hypot(drag.x - drag.startX, drag.y - drag.startY) > TOUCH_SLOP) endTouchDrag();
    return;
  }
  if (e.cancelable) e.preventDefault();
  followFinger();
}

function onTouchEnd(/** @type {TouchEvent} */ e) {
  const drag = touchDrag;
  if (!drag || ![...e.changedTouches].some((t) => t.identifier === drag.touchId)) return;
  if (drag.ghost) {
    // No click after a drag (it would open the title's editor).
    if (e.cancelable) e.preventDefault();
    const status = columnAt(drag.x, drag.y);
    if (status) dropAt(drag.id, status, drag.y);
  }
  endTouchDrag();
}

function endTouchDrag() {
  const drag = touchDrag;
  touchDrag = null;
  if (!drag) return;
  clearTimeout(drag.timer);
  cancelAnimationFrame(drag.frame);
  drag.ghost?.remove();
  drag.card.classList.remove("dragging");
  $("board").classList.remove("is-touch-dragging");
  if (dragId === drag.id) dragId = null;
  clearDropMarks();
}

/** The status of the column under the point, or null. */
function columnAt(/** @type {number} */ x, /** @type {number} */ y) {
  const el = document.elementFromPoint(x, y);
  const column = /** @type {HTMLElement|null} */ (el?.closest(".column") ?? null);
  return column?.dataset.status ?? null;
}

/** Move the copy under the finger and the drop marks to where it points. */
function followFinger() {
  const drag = touchDrag;
  if (!drag?.ghost) return;
  drag.ghost.style.transform = `translate(${drag.x - drag.dx}px, ${drag.y - drag.dy}px) rotate(2deg)`;
  drag.status = columnAt(drag.x, drag.y);
  if (drag.status) markDrop(drag.status, drag.y);
  else clearDropMarks();
}

/** Near an edge the board scrolls, so that a card can reach a column out of view. */
function autoScroll() {
  const drag = touchDrag;
  if (!drag?.ghost) return;
  const boardEl = $("board");
  const r = boardEl.getBoundingClientRect();
  const speed = (/** @type {number} */ depth) => Math.ceil(12 * Math.min(1, depth / EDGE));
  let moved = false;
  if (drag.x < r.left + EDGE && boardEl.scrollLeft > 0) {
    boardEl.scrollLeft -= speed(r.left + EDGE - drag.x);
    moved = true;
  } else if (drag.x > r.right - EDGE && boardEl.scrollLeft + boardEl.clientWidth < boardEl.scrollWidth) {
    boardEl.scrollLeft += speed(drag.x - (r.right - EDGE));
    moved = true;
  }
  // Vertically: the column's own list if it scrolls, else the page.
  const list = drag.status ? columns.get(drag.status)?.list : null;
  const scroller = list && list.scrollHeight > list.clientHeight ? list : document.scrollingElement;
  if (scroller) {
    const top = scroller === list ? list.getBoundingClientRect().top : 0;
    const bottom = scroller === list ? list.getBoundingClientRect().bottom : innerHeight;
    if (drag.y < top + EDGE) {
      scroller.scrollTop -= speed(top + EDGE - drag.y);
      moved = true;
    } else if (drag.y > bottom - EDGE) {
      scroller.scrollTop += speed(drag.y - (bottom - EDGE));
      moved = true;
    }
  }
  if (moved) followFinger();
  drag.frame = requestAnimationFrame(autoScroll);
}

// ---- activity -----------------------------------------------------------------------------------

/**
 * An event of the project room in words: [verb, title, rest], or null for events the panel
 * does not show. `title` is the card's title as the caller knows it (the event alone does not
 * always carry it: a move names the task by id).
 * @param {any} event @param {string} title
 * @returns {[string, string, string] | null}
 */
function describe(event, title) {
  const data = event.data ?? {};
  switch (event.type) {
    case "task:created":
      return ["added", title, `to ${statusLabel(data.task?.status ?? "")}`];
    case "task:moved":
      if (data.fromStatus === data.toStatus) {
        return ["reordered", title, `in ${statusLabel(data.toStatus)}`];
      }
      return ["moved", title, `to ${statusLabel(data.toStatus)}`];
    case "task:deleted":
      return ["deleted", title, ""];
    case "task:updated": {
      const c = data.changes ?? {};
      if (c.title) return ["renamed", c.title.from, `to “${c.title.to}”`];
      if (c.assigneeId) {
        const to = c.assigneeId.to;
        return ["assigned", title, to ? `to ${nameOf(to)}` : "to nobody"];
      }
      return ["edited", title, ""];
    }
    default:
      return null;
  }
}

/** How many items the Activity panel keeps. */
const ACTIVITY_MAX = 30;

/**
 * Show an event in the Activity panel, newest first, once: the history read at start and the
 * live stream overlap, so an event already shown (same epoch and offset) is skipped, and one
 * that arrives late (history) goes where its offset puts it.
 * @param {any} event @param {string} title @param {boolean} own
 */
function addActivity(event, title, own) {
  const words = describe(event, title);
  if (!words) return;
  const list = $("activity-list");
  const key = `${event.epoch}:${event.offset}`;
  if (list.querySelector(`[data-key="${CSS.escape(key)}"]`)) return;
  const [verb, what, rest] = words;
  const who = event.userId === me ? "You" : event.userId ? nameOf(event.userId) : "A service";
  const time = new Date(event.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const item = h(
    "li",
    {
      class: `activity-item${own ? "" : " is-remote"}`,
      "data-testid": "activity-item",
      "data-key": key,
      "data-offset": event.offset,
    },
    [
      avatar(event.userId ?? "service", event.userId ? nameOf(event.userId) : who, "avatar-sm"),
      h("div", { class: "activity-text" }, [
        h("p", {}, [h("strong", {}, [who]), ` ${verb} `, h("em", {}, [`“${what}”`]), rest ? ` ${rest}` : ""]),
        h("time", { datetime: new Date(event.ts).toISOString() }, [time]),
      ]),
    ],
  );
  // Newest first: before the first item of a lower offset (of the same epoch; an item of an
  // older epoch is older whatever its offset).
  const after = [...list.children].find(
    (li) =>
      !(li instanceof HTMLElement) ||
      !li.dataset.key?.startsWith(`${event.epoch}:`) ||
      Number(li.dataset.offset) < event.offset,
  );
  list.insertBefore(item, after ?? null);
  while (list.children.length > ACTIVITY_MAX) list.lastElementChild?.remove();
  $("activity-empty").hidden = list.children.length > 0;
}

/** A live change of the board in the Activity panel. */
function showChange(/** @type {any} */ change) {
  const title = (change.task ?? change.previous)?.title ?? "a task";
  addActivity(change.event, title, change.own);
}

/** How many of the room's latest events the panel reads when the page opens. */
const ACTIVITY_HISTORY = 100;

/**
 * Fill the Activity panel from the room's history (the open log): its latest events, so the
 * panel shows what happened before this page opened, not only what happens while it is open.
 * Titles come from the events themselves where they carry one, else from the board.
 */
async function loadActivity(/** @type {string} */ room) {
  const head = (await client.history(room, 0, 1)).offset;
  const page = await client.history(room, Math.max(0, head - ACTIVITY_HISTORY), ACTIVITY_HISTORY);
  /** task id → its title as of the event being read (events are in offset order) */
  const titles = new Map();
  for (const event of page.events) {
    const data = event.data ?? {};
    const id = data.task?.id ?? data.taskId;
    if (data.task?.title) titles.set(id, data.task.title);
    const title = titles.get(id) ?? board?.task(id)?.title ?? "a task";
    addActivity(event, title, false);
  }
}

// ---- start --------------------------------------------------------------------------------------

async function devToken(/** @type {string} */ user) {
  const response = await fetch(`/api/dev/token?user=${encodeURIComponent(user)}`);
  if (!response.ok) throw new Error(`dev token: HTTP ${response.status}`);
  return (await response.json()).token;
}

/** Ends the wait of `patiently` early ("Retry now"). */
let wakePatience = () => {};

/** Retry `fn` until it succeeds (the server may be starting). */
async function patiently(/** @type {() => Promise<any>} */ fn) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (err?.status && err.status !== 0 && err.status < 500) throw err;
      if (attempt === 1) showMessage("Can't reach the server. The board opens as soon as it answers.");
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, Math.min(5000, 500 * 2 ** attempt));
        wakePatience = () => {
          clearTimeout(timer);
          resolve(undefined);
        };
      });
      wakePatience = () => {};
    }
  }
}

async function start(/** @type {string} */ user) {
  me = user;
  $("me").hidden = false;
  $("me-avatar").replaceWith(Object.assign(avatar(user), { id: "me-avatar" }));
  $("me-name").textContent = nameOf(user);
  $("switch-user").addEventListener("click", () => {
    location.search = "";
  });

  const maxDelay = Number(params.get("maxDelay")) || 10000;
  client = new LiveboardClient({ token: () => devToken(user), backoffMax: maxDelay });
  client.on("state", onConnectionState);
  onConnectionState({ state: client.state });
  $("retry-now").addEventListener("click", retryNow);
  if (params.get("project")) {
    // Show the changes a previous visit left unsent, even while the server cannot be reached.
    board = new Board(client, /** @type {string} */ (params.get("project")), { user });
    void board.restore().then(() => renderQueue(/** @type {Board} */ (board).waiting));
  }

  const workspaces = await patiently(() => client.listWorkspaces());
  if (workspaces.length === 0) {
    showMessage(`${nameOf(user)} is not a member of any workspace.`);
    return;
  }
  const wanted = params.get("project");
  let workspace = workspaces[0];
  let projects = [];
  for (const ws of workspaces) {
    const list = await patiently(() => client.listProjects(ws.id));
    if (wanted ? list.some((p) => p.id === wanted) : list.length > 0) {
      workspace = ws;
      projects = list;
      break;
    }
  }
  if (projects.length === 0) {
    showMessage(`No project in “${workspace.name}” yet.`);
    return;
  }
  const project = projects.find((p) => p.id === wanted) ?? projects[0];
  $("workspace-name").textContent = workspace.name;
  $("project-name").textContent = project.name;
  if (projects.length > 1) {
    const select = /** @type {HTMLSelectElement} */ ($("project-select"));
    select.replaceChildren(...projects.map((p) => h("option", { value: p.id }, [p.name])));
    select.value = project.id;
    select.hidden = false;
    $("project-name").classList.add("visually-hidden");
    select.addEventListener("change", () => {
      const next = new URLSearchParams(location.search);
      next.set("project", select.value);
      location.search = next.toString();
    });
  }
  document.title = `${project.name} · liveboard`;

  if (board?.projectId !== project.id) {
    board = new Board(client, project.id, { user });
    void board.restore();
  }
  // Remember the project, so that a reload shows its queued changes before the network is back.
  const here = new URLSearchParams(location.search);
  if (here.get("project") !== project.id) {
    here.set("project", project.id);
    history.replaceState(null, "", `?${here}`);
  }
  board.on("reset", () => render());
  board.on("queue", (q) => renderQueue(q.waiting));
  board.on("rollback", (r) => toast(r.message, "error"));
  board.on("change", (change) => {
    if (change.type === "task:deleted" && !change.own) leave(change.taskId);
    render();
    if (change.event) {
      showChange(change);
      if (!change.own && change.type !== "task:deleted") flash(change.taskId);
    }
  });
  board.on("presence", (p) => renderPresence(p.users));
  board.on("resync", () => toast("Catching up: the board was reloaded from the server."));
  board.on("revoked", () => showMessage("You no longer have access to this project."));
  board.on("error", (e) => toast(e.message, "error"));
  await patiently(() => board.start());
  $("message").hidden = true;
  buildColumns();
  render();
  followComments(project.id);
  loadActivity(`project:${project.id}`).catch((err) =>
    console.warn("could not read the room's history for the Activity panel", err),
  );
  $("workspace").hidden = false;
  const boardEl = $("board");
  boardEl.addEventListener("click", onBoardClick);
  boardEl.addEventListener("keydown", onBoardKey);
  boardEl.addEventListener("touchstart", onTouchStart, { passive: true });
  boardEl.addEventListener("touchmove", onTouchMove, { passive: false });
  boardEl.addEventListener("touchend", onTouchEnd, { passive: false });
  boardEl.addEventListener("touchcancel", endTouchDrag);
  // A long press would open the browser's menu over the card being picked up.
  boardEl.addEventListener("contextmenu", (e) => {
    if (touchDrag) e.preventDefault();
  });
  // For debugging in the console.
  Object.assign(window, { liveboard: { client, board } });
}

// ---- comment counts: `comment:added` events another backend publishes (docs/own-backend.md)

/** task id → number of `comment:added` events seen; offsets counted (history and live overlap) */
const comments = { counts: new Map(), seen: new Set(), epoch: "" };

/** Count the project's `comment:added` events: its history, then live ones. */
function followComments(/** @type {string} */ projectId) {
  const room = `project:${projectId}`;
  const count = (/** @type {any} */ event) => {
    if (event.type !== "comment:added" || typeof event.data?.taskId !== "string") return;
    if (event.epoch !== comments.epoch) {
      comments.epoch = event.epoch;
      comments.counts.clear();
      comments.seen.clear();
    }
    if (comments.seen.has(event.offset)) return;
    comments.seen.add(event.offset);
    const id = event.data.taskId;
    comments.counts.set(id, (comments.counts.get(id) ?? 0) + 1);
    showCommentCount(id);
  };
  board.subscription?.on("event", count);
  board.on("reset", () => comments.counts.forEach((_, id) => showCommentCount(id)));
  board.on("change", (change) => showCommentCount(change.taskId));
  void (async () => {
    // At most 20 pages of history: enough for a demo, bounded for a long-lived room.
    for (let after = 0, page = 0; page < 20; page++) {
      const history = await client.history(room, after, 1000);
      if (history.events.length === 0) break;
      history.events.forEach(count);
      after = history.events[history.events.length - 1].offset;
    }
  })().catch((err) => console.warn("could not read the room's history", err));
}

/** The card's comment badge, created on first use, kept in step with the count. */
function showCommentCount(/** @type {string|undefined} */ taskId) {
  const n = taskId ? comments.counts.get(taskId) : undefined;
  const card = taskId ? cards.get(taskId) : undefined;
  if (!n || !card) return;
  let badge = /** @type {HTMLElement|null} */ (card.querySelector(".card-comments"));
  if (!badge) {
    badge = h("span", { class: "card-comments", "data-testid": "comment-count" });
    card.querySelector(".card-footer")?.prepend(badge);
  }
  badge.textContent = `💬 ${n}`;
  badge.title = `${n} comment${n === 1 ? "" : "s"}`;
}

const user = params.get("user");
if (user) {
  start(user).catch((err) => {
    console.error(err);
    showMessage(`Could not open the board: ${err?.message ?? err}`);
  });
} else {
  showPicker();
}
