/**
 * What the API's catalogue (`GET /tasks`) says of how long tasks of each name recently ran: each
 * entry's `runtime` (`{p50, p95, runs}` seconds, or null), which time-left estimates fall back on
 * before a task reports progress of its own.
 *
 * Fetched lazily (never until a handle asks), at most once per `maxAge` ms whatever the outcome
 * (a failure is not retried sooner), one fetch at a time. A failed fetch keeps what the last good
 * one said (nothing, before any).
 * @module
 */

/** Default of the Client's catalogue refresh interval: ms between two fetches of GET /tasks at most. */
export const CATALOGUE_MAX_AGE = 60_000;

/** @typedef {import("./eta.js").RuntimeStats} RuntimeStats */

export class RuntimeCatalogue {
  /**
   * @param {() => Promise<any>} load  GET /tasks: resolves `{tasks: [{name, runtime?}, …]}`
   * @param {{maxAge?: number, now?: () => number}} [options]  now: a clock in ms (tests pass their own)
   */
  constructor(load, { maxAge = CATALOGUE_MAX_AGE, now = Date.now } = {}) {
    /** @private */ this._load = load;
    /** @private */ this._maxAge = maxAge;
    /** @private */ this._now = now;
    /** @private @type {Map<string, RuntimeStats | null>} */ this._runtimes = new Map();
    /** When the last fetch started, ms (null before any). @private @type {number | null} */
    this._fetchedAt = null;
    /** @private @type {Promise<void> | null} */ this._inFlight = null;
  }

  /**
   * The runtimes of task `name` as last fetched: null when unknown (never fetched, not in the
   * catalogue, no runs yet, or the server does not say).
   * @param {string | null} name
   * @returns {RuntimeStats | null}
   */
  runtimeOf(name) {
    return name == null ? null : (this._runtimes.get(name) ?? null);
  }

  /**
   * Fetch the catalogue if it was never fetched or its last fetch started `maxAge` ms ago or more;
   * resolves once that fetch settled (never rejects). Null when no fetch is due (one is in flight: its
   * promise is returned then).
   * @returns {Promise<void> | null}
   */
  refresh() {
    if (this._inFlight) return this._inFlight;
    const now = this._now();
    if (this._fetchedAt !== null && now - this._fetchedAt < this._maxAge) return null;
    this._fetchedAt = now;
    this._inFlight = this._fetch().finally(() => {
      this._inFlight = null;
    });
    return this._inFlight;
  }

  /** @private */
  async _fetch() {
    let body;
    try {
      body = await this._load();
    } catch {
      return; // no estimate from runtimes until the next fetch is due
    }
    const tasks = Array.isArray(body?.tasks) ? body.tasks : [];
    /** @type {Map<string, RuntimeStats | null>} */
    const runtimes = new Map();
    for (const entry of tasks) {
      if (typeof entry?.name === "string") runtimes.set(entry.name, runtimeFrom(entry.runtime));
    }
    this._runtimes = runtimes;
  }
}

/**
 * A catalogue entry's `runtime`, if it is one (p50 and p95 numbers, runs a count); null otherwise,
 * also when the server sends none.
 * @param {unknown} value
 * @returns {RuntimeStats | null}
 */
export function runtimeFrom(value) {
  if (value === null || typeof value !== "object") return null;
  const { p50, p95, runs } = /** @type {Record<string, unknown>} */ (value);
  if (typeof p50 !== "number" || typeof p95 !== "number") return null;
  return { p50, p95, runs: typeof runs === "number" ? runs : 1 };
}
