// The demo page: a live list kept in step by resource_create / resource_delete events.
//
// Order of start-up (so nothing is missed): GET /api/items returns the list and `since`, the
// id of the channel's newest event at that moment; the client then connects with that
// `since`, and the server sends every change made after it before the live ones.
// Applying an event is idempotent (create = upsert, delete of an unknown id = nothing), so an
// event already reflected in the list does no harm.

import { connect } from "../tbone/tbone.js";

const LOG_LIMIT = 60;
const STATE_TEXT = {
  connecting: "connecting…",
  open: "live",
  reconnecting: "reconnecting…",
  closed: "closed",
  failed: "refused",
};

const $ = (id) => document.getElementById(id);
const list = $("items");
const items = new Map(); // id -> <li>

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text; // never innerHTML: item names are user input
  return node;
}

function log(kind, cls, what, id) {
  const entry = el("li", `is-${cls}`);
  const now = new Date();
  const text = el("span", "what", what);
  if (id) text.append(" ", el("span", "id", `#${id}`));
  entry.append(el("time", "", now.toLocaleTimeString([], { hour12: false })), el("span", "kind", kind), text);
  const logList = $("log");
  logList.prepend(entry);
  while (logList.children.length > LOG_LIMIT) logList.lastElementChild.remove();
}

function refreshCount() {
  $("count").textContent = String(items.size);
  $("empty").hidden = items.size > 0;
}

function addItem(item, fresh) {
  if (items.has(item.id)) return;
  const row = el("li", fresh ? "item new" : "item");
  row.dataset.id = item.id;
  const text = el("div", "item-text");
  text.append(el("div", "item-name", item.name));
  if (item.note) text.append(el("div", "item-note", item.note));
  text.append(el("div", "item-id", `#${item.id}`));
  const remove = el("button", "remove", "Delete");
  remove.type = "button";
  remove.setAttribute("aria-label", `Delete ${item.name}`);
  remove.addEventListener("click", () => deleteItem(item.id, remove));
  row.append(text, remove);
  list.prepend(row);
  items.set(item.id, row);
  refreshCount();
}

function removeItem(id) {
  const row = items.get(id);
  if (!row) return;
  row.remove();
  items.delete(id);
  refreshCount();
}

async function deleteItem(id, button) {
  button.disabled = true;
  const response = await fetch(`api/items/${encodeURIComponent(id)}`, { method: "DELETE" });
  // 404: another page deleted it first; its resource_delete event removes the row here.
  if (!response.ok && response.status !== 404) {
    button.disabled = false;
    log("error", "warn", `delete failed: HTTP ${response.status}`);
  }
}

function showError(message) {
  const box = $("form-error");
  box.textContent = message || "";
  box.hidden = !message;
}

$("create").addEventListener("submit", async (submit) => {
  submit.preventDefault();
  const name = $("name").value.trim();
  if (!name) {
    showError("Give the item a name.");
    $("name").focus();
    return;
  }
  const button = $("add");
  button.disabled = true;
  showError("");
  try {
    const response = await fetch("api/items", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name, note: $("note").value }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      showError(body.error?.message || `HTTP ${response.status}`);
      return;
    }
    // The list is not touched here: the item arrives as an event, like in every other page.
    $("create").reset();
    $("name").focus();
  } catch (err) {
    showError(`The server could not be reached (${err.message}); try again.`);
  } finally {
    button.disabled = false;
  }
});

function setStatus({ state, delay }) {
  const status = $("status");
  status.dataset.state = state;
  const text = STATE_TEXT[state] || state;
  $("status-text").textContent = state === "reconnecting" && delay ? `reconnecting in ${(delay / 1000).toFixed(1)}s…` : text;
}

async function start() {
  let since = null;
  try {
    const response = await fetch("api/items");
    const body = await response.json();
    for (const item of body.items) addItem(item, false);
    since = body.since;
  } catch (err) {
    log("error", "warn", `could not load items (${err.message})`);
  }
  refreshCount();
  const client = connect("ws", { events: ["resource_create", "resource_delete"], since });
  let opened = 0; // connections so far: the first one's catch-up is no "resume" to the user
  client.onState((change) => {
    setStatus(change);
    if (change.state === "open") {
      opened += 1;
      log(opened === 1 ? "connected" : "reconnected", "state", `to ${client.url.pathname}`);
    }
    if (change.state === "reconnecting" && change.delay) log("closed", "warn", `connection lost (code ${change.code}); retry in ${(change.delay / 1000).toFixed(1)}s`);
    if (change.state === "failed") log("refused", "warn", `the server refused the subscription (code ${change.code})`);
  });
  client.onRecovered(({ complete }) => {
    // The first connection starts from the list's `since`: its catch-up is part of loading.
    // The log shows item ids only (#3, as the list does), never the channel's event ids.
    if (complete && opened > 1) log("resumed", "recovered", "caught up with the changes missed");
    else if (!complete) log("gap", "warn", "the server's history did not reach back: reloading the list");
    if (!complete) reload();
  });
  client.onError((error) => log("error", "warn", `${error.code}: ${error.message}`));
  client.on("resource_create", (item) => {
    addItem(item, true);
    log("create", "create", item.name, item.id);
  });
  client.on("resource_delete", (item) => {
    removeItem(item.id);
    log("delete", "delete", item.name, item.id);
  });
  setStatus({ state: client.state });
  window.demo = { client, items };
}

// After a gap (the server lost its history, e.g. an in-memory channel that restarted), the
// list may be stale: read it again rather than show something the server no longer has.
async function reload() {
  const response = await fetch("api/items");
  const body = await response.json();
  const ids = new Set(body.items.map((item) => item.id));
  for (const id of [...items.keys()]) if (!ids.has(id)) removeItem(id);
  for (const item of body.items) addItem(item, false);
}

start();
