/**
 * The dashboard's state and the pure reducer that moves it: frames of `/ws/dashboard` (one snapshot per
 * connection, then updates), the table's filters, the selected task, queue depth samples and the
 * catalogue's runtimes. No DOM, no clock (callers pass `now`), no I/O; a state is never mutated, each
 * action returns a new one (sharing what did not change).
 *
 * The table's view (filtered, newest first) is derived lazily by {@link withView}, so that a burst of
 * frames costs one sort per rendered frame, not one per frame received.
 * @module
 */

/** States after which a task never changes. */
export const TERMINAL = new Set(["SUCCESS", "FAILURE", "REVOKED"]);
/** States the detail panel offers Retry for. */
export const RETRYABLE = new Set(["FAILURE", "REVOKED"]);
/** Queue depth samples kept per queue, one a second (3 min). */
export const QUEUE_SAMPLES = 180;

/**
 * @typedef {object} Row  one task as the feed sends it (svc/monitor/live.py TaskRow.as_dict)
 * @property {string} id
 * @property {string | null} [name]
 * @property {string} state
 * @property {number} seq
 * @property {{current?: number, total?: number | null, message?: string} | null} [progress]
 * @property {number | null} [submitted]
 * @property {number | null} [started]
 * @property {number | null} [ended]
 * @property {number | null} [runtime]
 * @property {number} [updated]
 */

/**
 * @typedef {object} State
 * @property {Map<string, Row>} tasks       id → row, the newest 10,000 the server keeps
 * @property {object[]} workers
 * @property {Record<string, any>} rates    task name → per-minute counts, totals, p50, p95
 * @property {Record<string, number>} queues  queue → depth
 * @property {Map<string, number[]>} queueHistory  queue → depths, oldest first
 * @property {Record<string, {p50: number, p95: number, runs: number} | null>} runtimes  from GET /tasks
 * @property {number} clockOffset           server clock − ours, seconds
 * @property {{state: string, text: string}} filter
 * @property {Row[]} view                   the rows shown: filtered, newest first (see withView)
 * @property {boolean} viewStale            view is out of date with tasks or filter
 * @property {Record<string, number>} counts  state → tasks in it (of all tasks, not the view)
 * @property {string[]} names               task names seen, sorted
 * @property {string | null} selected       the id in the detail panel
 * @property {number} snapshots             snapshots applied (one per connection)
 * @property {[Row, Row][]} stale           [known, older] rows an update carried and that were not applied
 */

/** @returns {State} */
export function initialState() {
  return {
    tasks: new Map(),
    workers: [],
    rates: {},
    queues: {},
    queueHistory: new Map(),
    runtimes: {},
    clockOffset: 0,
    filter: { state: "", text: "" },
    view: [],
    viewStale: false,
    counts: {},
    names: [],
    selected: null,
    snapshots: 0,
    stale: [],
  };
}

/**
 * @typedef {{type: "snapshot", frame: any, now: number}
 *   | {type: "update", frame: any, now: number}
 *   | {type: "filter", state?: string, text?: string}
 *   | {type: "select", id: string | null}
 *   | {type: "sample"}
 *   | {type: "runtimes", tasks: {name: string, runtime?: any}[]}} Action
 * `now` is the receiver's clock, unix seconds.
 */

/**
 * The state after `action`.
 * @param {State} state
 * @param {Action} action
 * @returns {State}
 */
export function reduce(state, action) {
  switch (action.type) {
    case "snapshot": {
      const tasks = new Map();
      for (const row of action.frame.tasks ?? []) tasks.set(row.id, row);
      return { ...stats(state, action.frame, action.now), tasks, snapshots: state.snapshots + 1, viewStale: true };
    }
    case "update": {
      const rows = action.frame.tasks ?? [];
      const next = stats(state, action.frame, action.now);
      if (!rows.length) return next;
      const tasks = new Map(state.tasks);
      const stale = [];
      for (const row of rows) {
        const known = tasks.get(row.id);
        // A row never goes back: an older view of a task (lower seq) is not applied.
        if (known && row.seq < known.seq) { stale.push([known, row]); continue; }
        tasks.set(row.id, row);
      }
      return { ...next, tasks, stale: stale.length ? [...state.stale, ...stale] : state.stale, viewStale: true };
    }
    case "filter": {
      const filter = { state: action.state ?? state.filter.state, text: action.text ?? state.filter.text };
      return { ...state, filter, viewStale: true };
    }
    case "select":
      return { ...state, selected: action.id };
    case "sample": {
      const queueHistory = new Map(state.queueHistory);
      for (const [name, depth] of Object.entries(state.queues)) {
        const samples = queueHistory.get(name) ?? [];
        queueHistory.set(name, [...samples.slice(-(QUEUE_SAMPLES - 1)), depth]);
      }
      return { ...state, queueHistory };
    }
    case "runtimes": {
      const runtimes = {};
      for (const task of action.tasks ?? []) runtimes[task.name] = task.runtime ?? null;
      return { ...state, runtimes };
    }
    default:
      return state;
  }
}

/** The fields every frame carries: the clock, workers, rates, queues. */
function stats(state, frame, now) {
  return {
    ...state,
    clockOffset: typeof frame.now === "number" ? frame.now - now : state.clockOffset,
    workers: frame.workers ?? [],
    rates: frame.rates ?? {},
    queues: frame.queues ?? {},
  };
}

/** Whether `frame` carries a row of task `id`. */
export function touches(frame, id) {
  return id != null && (frame.tasks ?? []).some((row) => row.id === id);
}

/** The order of the table: newest submitted first (then newest updated, then id). */
export const sortKey = (row) => row.submitted ?? row.updated ?? 0;

/** Whether `row` passes `filter` (a state, "active" for not finished; text: a name's part or an id's start). */
export function matches(row, filter) {
  const wanted = filter.state;
  if (wanted === "active" ? TERMINAL.has(row.state) : wanted && row.state !== wanted) return false;
  const text = filter.text.trim().toLowerCase();
  return !text || (row.name ?? "").toLowerCase().includes(text) || row.id.startsWith(text);
}

/**
 * `state` with its view, counts and names derived again if tasks or the filter changed since.
 * @param {State} state
 * @returns {State}
 */
export function withView(state) {
  if (!state.viewStale) return state;
  const counts = {};
  const names = new Set();
  const view = [];
  for (const row of state.tasks.values()) {
    counts[row.state] = (counts[row.state] ?? 0) + 1;
    if (row.name) names.add(row.name);
    if (matches(row, state.filter)) view.push(row);
  }
  view.sort((a, b) => sortKey(b) - sortKey(a) || (a.id < b.id ? 1 : -1));
  return { ...state, view, counts, names: [...names].sort(), viewStale: false };
}

/** The server's clock (unix seconds) when ours reads `now`. */
export const serverNow = (state, now) => now + state.clockOffset;

/** Whether the task is running: started and not finished. */
export const isRunning = (row) => row.started != null && !TERMINAL.has(row.state);

/** Seconds the task ran (or has been running, at server time `now`); null before it started. */
export function runtimeOf(row, now) {
  if (row.runtime != null) return row.runtime;
  if (row.started == null) return null;
  return Math.max(0, (row.ended ?? now) - row.started);
}

/** The progress bar's percent (0–100), or null when the task reported no progress with a total. */
export function percentOf(row) {
  if (row.state === "SUCCESS" && row.progress) return 100;
  const { current, total } = row.progress ?? {};
  if (typeof current !== "number" || !total) return null;
  return Math.max(0, Math.min(100, Math.round((100 * current) / total)));
}

/** Runtime statistics for task name `name`: the catalogue's, else the feed's rates (which carry no run count). */
export function runtimeStats(state, name) {
  if (name == null) return null;
  const known = state.runtimes[name];
  if (known) return known;
  const rate = state.rates[name];
  if (rate && typeof rate.p50 === "number") return { p50: rate.p50, p95: rate.p95 ?? rate.p50, runs: 1 };
  return null;
}
