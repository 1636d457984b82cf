/**
 * The reconnect policy: exponential backoff with full jitter, as a pure function (mirrors svc/backoff.py).
 *
 * Attempt 0 waits a random time in [0, base) — so that many clients dropped at once (a server restart)
 * do not reconnect in step (RFC 6455 §7.2.3) — and each further attempt doubles the ceiling, up to `cap`.
 * The socket resets the attempt count once a connection has stayed open for `stableAfter` ms.
 * @module
 */

/**
 * @typedef {object} BackoffOptions
 * @property {number} [base]        ceiling of the first delay, ms (default 250)
 * @property {number} [cap]         largest ceiling, ms (default 10000)
 * @property {number} [stableAfter] ms a connection must stay open before the attempt count resets (default 5000)
 */

/** Defaults of {@link BackoffOptions}. */
export const BACKOFF_DEFAULTS = Object.freeze({ base: 250, cap: 10_000, stableAfter: 5_000 });

/**
 * The ceiling of the delay before reconnect attempt `attempt` (0-based): min(cap, base * 2^attempt).
 * @param {number} attempt
 * @param {BackoffOptions} [options]
 * @returns {number}
 */
export function ceiling(attempt, options = {}) {
  const base = options.base ?? BACKOFF_DEFAULTS.base;
  const cap = options.cap ?? BACKOFF_DEFAULTS.cap;
  // 2 ** 1024 is Infinity, and Math.min copes; clamp the exponent anyway to stay in integers.
  return Math.min(cap, base * 2 ** Math.min(Math.max(0, attempt), 52));
}

/**
 * The delay in ms before reconnect attempt `attempt`: uniform in [0, ceiling(attempt)) ("full jitter").
 * @param {number} attempt
 * @param {BackoffOptions} [options]
 * @param {() => number} [random] a source of numbers in [0, 1) (tests pass their own)
 * @returns {number}
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  return Math.floor(random() * ceiling(attempt, options));
}
