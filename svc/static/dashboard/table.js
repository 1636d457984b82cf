/**
 * The virtualised task table: the view's rows at a fixed height, only those in sight (plus an
 * overscan) in the DOM, row elements pooled and refilled as the window moves; the filters above it.
 * @module
 */

import { $, el, set, seconds } from "./dom.js";
import { isRunning, percentOf, runtimeOf, runtimeStats, serverNow } from "./state.js";
import { formatTimeLeft, timeLeft } from "./time-left.js";

const ROW_H = 36;     // px, fixed: the table computes the visible window from it (CSS --row-h)
const OVERSCAN = 8;   // rows rendered above and below the visible window

/**
 * The table over the page's #table, #tbody and filter inputs.
 * @param {{state: () => import("./state.js").State, now: () => number, changed: () => void,
 *   filter: (filter: {state: string, text: string}) => void, open: (id: string) => void}} options
 *   state: the current state; now: our clock (unix s); changed: the rows need a render;
 *   filter: the user changed the filters; open: the user chose a row.
 */
export function createTable({ state, now, changed, filter, open }) {
  const table = $("table");
  const tbody = $("tbody");
  const filterState = $("filter-state");
  const filterName = $("filter-name");
  const countLabel = $("task-count");
  const namesList = $("task-names");
  const pool = [];              // row elements, reused as the window moves
  let knownNames = "";
  let pendingScrollTo = null;   // a task to bring into view once it is in the table

  table.addEventListener("scroll", changed, { passive: true });
  new ResizeObserver(changed).observe(table);
  const refilter = () => {
    pendingScrollTo = null;
    table.scrollTop = 0;
    filter({ state: filterState.value, text: filterName.value });
  };
  filterState.addEventListener("change", refilter);
  filterName.addEventListener("input", refilter);
  const rowOf = (event) => event.target.closest?.('[data-testid="task-row"]');
  tbody.addEventListener("click", (event) => { const row = rowOf(event); if (row) open(row.dataset.taskId); });
  tbody.addEventListener("keydown", (event) => {
    const row = rowOf(event);
    if (row && (event.key === "Enter" || event.key === " ")) { event.preventDefault(); open(row.dataset.taskId); }
  });

  /** The count, the state filter's per-state counts and the name suggestions, after the view changed. */
  function viewChanged() {
    const { view, tasks, counts, names } = state();
    countLabel.textContent = `${view.length.toLocaleString("en")} of ${tasks.size.toLocaleString("en")} tasks`;
    countLabel.dataset.shown = String(view.length);
    countLabel.dataset.total = String(tasks.size);
    for (const option of filterState.options) {
      if (!option.value || option.value === "active") continue;
      const label = `${option.value} (${counts[option.value] ?? 0})`;
      if (option.textContent !== label) option.textContent = label;
    }
    const joined = names.join("\n");
    if (joined !== knownNames) {
      knownNames = joined;
      namesList.replaceChildren(...names.map((name) => el("option", { value: name })));
    }
    if (pendingScrollTo) scrollToTask(pendingScrollTo);
  }

  /** Render the rows in sight. */
  function render() {
    const current = state();
    const rows = current.view;
    const at = serverNow(current, now());
    const height = `${rows.length * ROW_H}px`;
    if (tbody.style.height !== height) tbody.style.height = height;
    const top = table.scrollTop;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(rows.length, Math.ceil((top + table.clientHeight) / ROW_H) + OVERSCAN);
    const count = Math.max(0, last - first);
    while (pool.length < count) pool.push(makeRow());
    for (let i = 0; i < pool.length; i += 1) {
      const node = pool[i];
      if (i >= count) {
        if (node.isConnected) node.remove();
        continue;
      }
      const index = first + i;
      const y = `${index * ROW_H}px`;
      if (node.style.top !== y) node.style.top = y;
      node.setAttribute("aria-rowindex", String(index + 1));
      fillRow(node, rows[index], current, at);
      if (!node.isConnected) tbody.append(node);
    }
  }

  /** Bring task `id` into view (once it is in the view, if it is not yet). */
  function scrollToTask(id) {
    const index = state().view.findIndex((row) => row.id === id);
    if (index < 0) { pendingScrollTo = id; return; }
    pendingScrollTo = null;
    const y = index * ROW_H;
    const visible = table.clientHeight - 32 - ROW_H;
    if (y < table.scrollTop || y > table.scrollTop + visible) table.scrollTop = Math.max(0, y - ROW_H * 2);
    changed();
  }

  return { viewChanged, render, scrollToTask };
}

function makeRow() {
  const cells = {
    state: el("span", { className: "state" }),
    name: el("span", { className: "cell" }),
    id: el("span", { className: "cell mono" }),
    args: el("span", { className: "cell mono" }),
    worker: el("span", { className: "cell mono" }),
    runtime: el("span", { className: "cell num" }),
    retries: el("span", { className: "cell num" }),
    bar: el("progress", { max: 100 }),
    pct: el("span"),
    eta: el("span", { className: "eta" }),
    outcome: el("span", { className: "cell" }),
  };
  cells.bar.dataset.testid = "progress";
  cells.bar.setAttribute("aria-label", "progress");
  cells.eta.dataset.testid = "time-left";
  cells.prog = el("span", { className: "prog" }, cells.bar, cells.pct, cells.eta);
  const node = el("div", { className: "grid trow", tabIndex: 0 },
    el("span", { className: "cell" }, cells.state), cells.name, cells.id, cells.args, cells.worker,
    cells.runtime, cells.retries, el("span", { className: "cell" }, cells.prog), cells.outcome);
  node.setAttribute("role", "row");
  node.dataset.testid = "task-row";
  node.cells = cells;
  node.shown = null;
  return node;
}

function fillRow(node, row, current, at) {
  const running = isRunning(row);
  const selected = String(row.id === current.selected);
  if (node.getAttribute("aria-selected") !== selected) node.setAttribute("aria-selected", selected);
  if (node.shown === row && !running) return;  // rows are replaced, never mutated: same object, same row
  node.shown = row;
  const c = node.cells;
  node.dataset.taskId = row.id;
  node.dataset.state = row.state;
  set(c.state, row.state);
  c.state.className = `state ${row.state}`;
  set(c.name, row.name ?? "?");
  set(c.id, row.id.slice(0, 8));
  c.id.title = row.id;
  set(c.args, row.args ?? "");
  c.args.title = row.args ?? "";
  set(c.worker, row.worker ?? "");
  c.worker.title = row.worker ?? "";
  set(c.runtime, seconds(runtimeOf(row, at)));
  set(c.retries, row.retries ? String(row.retries) : "");
  const pct = percentOf(row);
  c.prog.hidden = pct === null && !running;
  if (pct === null) {
    c.bar.removeAttribute("value");   // indeterminate: running, no progress reported
    c.bar.removeAttribute("aria-valuenow");
    set(c.pct, "");
  } else {
    c.bar.value = pct;
    c.bar.setAttribute("aria-valuenow", String(pct));
    set(c.pct, `${pct}%`);
  }
  const left = running ? timeLeft(row, runtimeStats(current, row.name), at) : null;
  set(c.eta, formatTimeLeft(left));
  if (left === null) delete c.eta.dataset.seconds;
  else c.eta.dataset.seconds = left.toFixed(1);
  c.prog.title = row.progress?.message ?? "";
  const outcome = row.error ?? row.result ?? "";
  set(c.outcome, outcome);
  c.outcome.title = outcome;
  c.outcome.className = row.error ? "cell bad" : "cell res";
}
