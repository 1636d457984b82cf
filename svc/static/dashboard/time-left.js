/**
 * Time left on a table row: seconds until a running task ends, or null. The policy is the JS SDK's
 * (clients/js/src/eta.js, served at ../sdk/eta.js): from the task's own progress once it has some (the
 * work left over the rate since STARTED, in the worker's clock, aged by the time since that progress),
 * else from recent runtimes of its name (p50 − elapsed, then p95 − elapsed). Pure: callers pass `now`.
 * @module
 */

import { remainingFromProgress, remainingFromRuntime } from "../sdk/eta.js";

const RUNNING = new Set(["STARTED", "PROGRESS"]);

/**
 * Seconds left for `row` at server time `now`, or null (not running, or nothing tells).
 * @param {import("./state.js").Row} row
 * @param {{p50: number, p95: number, runs: number} | null} runtime  recent runtimes of the row's name
 * @param {number} now  unix seconds, the server's clock
 * @returns {number | null}
 */
export function timeLeft(row, runtime, now) {
  if (!RUNNING.has(row.state) || row.started == null) return null;
  const { current, total } = row.progress ?? {};
  if (typeof current === "number" && typeof row.updated === "number" && row.updated >= row.started) {
    const left = remainingFromProgress(
      { ts: row.started, current: 0 },
      { ts: row.updated, current, total: typeof total === "number" ? total : null },
    );
    if (left !== null) return Math.max(0, left - Math.max(0, now - row.updated));
  }
  return remainingFromRuntime(runtime, now - row.started);
}

/** "~12 s left" (whole seconds, minutes from 2 min on), "" for no estimate. */
export function formatTimeLeft(seconds) {
  if (seconds == null) return "";
  if (seconds < 120) return `~${Math.max(0, Math.round(seconds))} s left`;
  if (seconds < 7200) return `~${Math.round(seconds / 60)} min left`;
  return `~${Math.round(seconds / 3600)} h left`;
}
