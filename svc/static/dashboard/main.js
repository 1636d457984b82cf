/**
 * The dashboard page: one state (state.js's reducer), the views that show it (table, charts, workers,
 * detail), the socket that feeds it (connection.js), rendering batched into one animation frame.
 * Loaded by svc/static/dashboard.html as an ES module from `dashboard-assets/`, relative to the page, so
 * it works under any prefix the API is mounted at.
 * @module
 */

import { createApi } from "./api.js";
import { createCharts } from "./charts.js";
import { createConnection } from "./connection.js";
import { createDetail } from "./detail.js";
import { $ } from "./dom.js";
import { initialState, reduce, serverNow, touches, withView } from "./state.js";
import { createTable } from "./table.js";
import { createWorkers } from "./workers.js";

const KEY_STORAGE = "svc-dashboard-api-key";
const RUNTIMES_EVERY = 30_000;  // ms between refreshes of the catalogue's runtimes (GET /tasks)
/** The path svc is mounted at ("" at the root): this page is served at `<BASE>/dashboard`. */
const BASE = location.pathname.replace(/\/dashboard$/, "");

for (const node of document.querySelectorAll("[data-route]")) node.textContent = BASE + node.dataset.route;

let state = initialState();
const ourNow = () => Date.now() / 1000;
const now = () => serverNow(state, ourNow());

// ---------------------------------------------------------------------------------------------
// Rendering, batched into one animation frame
// ---------------------------------------------------------------------------------------------
const dirty = { view: false, table: false, workers: false, rates: false, queues: false };
let frameRequested = false;
function schedule() {
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(render);
  }
}
function render() {
  frameRequested = false;
  if (dirty.view) { dirty.view = false; state = withView(state); table.viewChanged(); dirty.table = true; }
  if (dirty.table) { dirty.table = false; table.render(); }
  if (dirty.workers) { dirty.workers = false; workers.render(state.workers); }
  if (dirty.rates) { dirty.rates = false; charts.renderRates(state.rates); charts.renderQueues(state.queues, state.queueHistory); }
  if (dirty.queues) { dirty.queues = false; charts.renderQueues(state.queues, state.queueHistory); }
}
const tableChanged = () => { dirty.table = true; schedule(); };

function applySnapshot(frame) {
  state = reduce(state, { type: "snapshot", frame, now: ourNow() });
  dirty.view = dirty.workers = dirty.rates = true;
  schedule();
}

function applyUpdate(frame) {
  state = reduce(state, { type: "update", frame, now: ourNow() });
  dirty.workers = dirty.rates = true;
  if (frame.tasks?.length) dirty.view = true;
  if (touches(frame, state.selected)) detail.refresh();
  schedule();
}

// ---------------------------------------------------------------------------------------------
// The views
// ---------------------------------------------------------------------------------------------
const keyInput = $("api-key");
const statusPill = $("connection");
const keyForm = $("key-form");
const authBanner = $("auth-banner");
keyInput.value = localStorage.getItem(KEY_STORAGE) ?? localStorage.getItem("svc-demo-api-key") ?? "";
const key = () => keyInput.value.trim();

const table = createTable({
  state: () => state,
  now: ourNow,
  changed: tableChanged,
  filter: (filter) => { state = reduce(state, { type: "filter", ...filter }); dirty.view = true; schedule(); },
  open: (id) => detail.open(id),
});
const charts = createCharts();
const workers = createWorkers(now);
const api = createApi({ base: BASE, key, unauthorized: () => connection.needKey() });
const detail = createDetail({
  api,
  base: BASE,
  row: (id) => state.tasks.get(id),
  now,
  select: (id) => { state = reduce(state, { type: "select", id }); tableChanged(); },
  unauthorized: () => connection.needKey(),
  scrollToTask: (id) => table.scrollToTask(id),
});

// ---------------------------------------------------------------------------------------------
// The connection, and the catalogue's runtimes (for time left) once it is live
// ---------------------------------------------------------------------------------------------
let runtimesAt = 0;
async function refreshRuntimes() {
  runtimesAt = Date.now();
  try {
    const catalogue = await api.call("GET", "/tasks");
    state = reduce(state, { type: "runtimes", tasks: catalogue?.tasks ?? [] });
    tableChanged();
  } catch {
    // no estimate from runtimes until the next try; the rates' p50 still serve
  }
}

const scheme = location.protocol === "https:" ? "wss" : "ws";
const connection = createConnection({
  url: `${scheme}://${location.host}${BASE}/ws/dashboard`,
  key,
  frame: (frame) => {
    if (frame.op === "snapshot") applySnapshot(frame);
    else applyUpdate(frame);
  },
  status: (name, text, title) => {
    statusPill.dataset.status = name;
    statusPill.textContent = text;
    if (title !== undefined) statusPill.title = title;
    keyForm.classList.toggle("needed", name === "auth");
    authBanner.classList.toggle("shown", name === "auth");
    if (name === "auth") keyInput.focus();
    // Only once live: the key is known good, so the catalogue call does not fail for want of one.
    if (name === "live" && Date.now() - runtimesAt >= RUNTIMES_EVERY) refreshRuntimes();
  },
});

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const shown = key();
  if (shown) localStorage.setItem(KEY_STORAGE, shown);
  else localStorage.removeItem(KEY_STORAGE);
  if (shown !== connection.key || !connection.connected) connection.restart();
});
keyInput.addEventListener("change", () => keyForm.requestSubmit());

// Once a second: heartbeat ages, running tasks' runtimes and time left, a queue depth sample.
setInterval(() => {
  workers.tick();
  state = reduce(state, { type: "sample" });
  dirty.queues = true;
  if (state.view.length) dirty.table = true;
  schedule();
  detail.tick();
  if (statusPill.dataset.status === "live" && Date.now() - runtimesAt >= RUNTIMES_EVERY) refreshRuntimes();
}, 1000);

// For tests and the console: the state and the two ways frames change it.
window.__svcDashboard = {
  get state() { return state; },
  applySnapshot,
  applyUpdate,
  scrollToTask: (id) => table.scrollToTask(id),
  select: (id) => detail.open(id),
  renderNow: render,
};

connection.connect();
