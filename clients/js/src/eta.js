/**
 * Time left: an estimate of the seconds until a running task ends, `null` when there is none.
 *
 * - From the task's own progress, when a PROGRESS event has a known `total` and `current` has grown
 *   since the run's reference point (its STARTED event, else the first PROGRESS of the run seen): the
 *   work left over the rate so far, in the worker's clock (the events' `ts`), so network delays and a
 *   replayed history do not skew it. Successive estimates are smoothed: each new one is blended with
 *   the previous one aged by the time between the two events (a steady rate gives the exact answer).
 * - Else from the recent runtimes of tasks of the same name (the catalogue's `runtime`: p50, p95):
 *   `p50 - elapsed` while the run is younger than p50, then `p95 - elapsed`, then null (the run is
 *   already longer than 95% of recent ones). `elapsed` is `now - STARTED's ts`, now from the caller's clock.
 *
 * A task that is not running (PENDING, RECEIVED, RETRY, ended) has no estimate. Pure: it reads no clock.
 * @module
 */

/** Weight of the newest estimate against the aged previous one. */
export const ETA_SMOOTHING = 0.3;

/**
 * What the catalogue says recent runs of a task name took (seconds from STARTED to the end).
 * @typedef {{p50: number, p95: number, runs: number}} RuntimeStats
 */

/** @typedef {{ts: number, current: number}} ProgressPoint */

const RUNNING = new Set(["STARTED", "PROGRESS"]);

/**
 * Seconds left at `at`, if the rate from `from` to `at` holds; null when it cannot tell (no total, no
 * progress since `from`, no time passed).
 * @param {ProgressPoint} from
 * @param {ProgressPoint & {total: number | null}} at
 * @returns {number | null}
 */
export function remainingFromProgress(from, at) {
  const { total } = at;
  if (typeof total !== "number" || !(total > 0)) return null;
  if (at.current >= total) return 0;
  const done = at.current - from.current;
  const took = at.ts - from.ts;
  if (!(done > 0) || !(took > 0)) return null;
  return ((total - at.current) * took) / done;
}

/**
 * Seconds left for a run `elapsed` seconds old, from recent runtimes; null without any, or once the
 * run is older than their p95.
 * @param {RuntimeStats | null | undefined} runtime
 * @param {number} elapsed
 * @returns {number | null}
 */
export function remainingFromRuntime(runtime, elapsed) {
  if (!runtime || !(runtime.runs > 0)) return null;
  const { p50, p95 } = runtime;
  const age = Math.max(0, elapsed);
  if (typeof p50 === "number" && age < p50) return p50 - age;
  if (typeof p95 === "number" && age < p95) return p95 - age;
  return null;
}

/** One task's estimator: fed its own events in seq order, asked for an estimate. */
export class EtaEstimator {
  /** @param {{smoothing?: number}} [options] */
  constructor({ smoothing = ETA_SMOOTHING } = {}) {
    /** @private */ this._smoothing = smoothing;
    /** @private */ this._running = false;
    /** The ts of the run's STARTED (or its first event seen). @private @type {number | null} */
    this._startedAt = null;
    /** @private @type {ProgressPoint | null} */ this._from = null;
    /** The last smoothed estimate and the ts it is for. @private @type {{eta: number, ts: number} | null} */
    this._last = null;
  }

  /** True while the task runs (its newest event is STARTED or PROGRESS). */
  get running() {
    return this._running;
  }

  /** True when the task runs without an estimate from its own progress: runtimes are wanted. */
  get needsRuntime() {
    return this._running && this._last === null;
  }

  /**
   * Take the task's next event (its own: not a workflow step's copy, not a stream chunk).
   * @param {{state?: unknown, ts?: unknown, progress?: any}} event
   */
  observe(event) {
    const ts = typeof event.ts === "number" ? event.ts : null;
    if (event.state === "STARTED" || !RUNNING.has(/** @type {string} */ (event.state))) this._reset();
    this._running = RUNNING.has(/** @type {string} */ (event.state));
    if (!this._running || ts === null) return;
    this._startedAt ??= ts;
    if (event.state === "STARTED") {
      this._from = { ts, current: 0 };
      return;
    }
    const progress = event.progress;
    const current = typeof progress?.current === "number" ? progress.current : null;
    if (current === null) return;
    const total = typeof progress.total === "number" ? progress.total : null;
    if (this._from === null) {
      this._from = { ts, current };
      if (total === null || current < total) return;
    }
    const raw = remainingFromProgress(this._from, { ts, current, total });
    if (raw === null) return;
    const aged = this._last === null ? raw : Math.max(0, this._last.eta - (ts - this._last.ts));
    const eta = raw === 0 ? 0 : this._smoothing * raw + (1 - this._smoothing) * aged;
    this._last = { eta, ts };
  }

  /**
   * Seconds left: from the task's own progress when there is an estimate, else from `runtime` at
   * `now` (unix seconds); null when the task is not running or nothing tells.
   * @param {RuntimeStats | null | undefined} runtime
   * @param {number} now
   * @returns {number | null}
   */
  estimate(runtime, now) {
    if (!this._running) return null;
    if (this._last !== null) return this._last.eta;
    if (this._startedAt === null) return null;
    return remainingFromRuntime(runtime, now - this._startedAt);
  }

  /** @private */
  _reset() {
    this._startedAt = null;
    this._from = null;
    this._last = null;
  }
}
