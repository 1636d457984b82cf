/**
 * The SDK's errors, one rooted tree:
 *
 *   SvcError                       anything this SDK throws on purpose
 *   ├── HttpError                  an HTTP call answered with a problem-details error (.status …)
 *   │   ├── BadRequestError        400 malformed JSON
 *   │   ├── UnauthorizedError      401 missing or bad API key
 *   │   ├── ForbiddenError         403 bad or expired task token
 *   │   ├── NotFoundError          404 unknown task name or task id
 *   │   ├── ConflictError          409 an Idempotency-Key reused for a different request
 *   │   ├── PayloadTooLargeError   413 body too large
 *   │   ├── ValidationError        422 arguments that fail the task's schema
 *   │   ├── RateLimitedError       429 (.retryAfter, seconds)
 *   │   └── ServiceUnavailableError 503 broker/Redis unreachable, or no worker
 *   ├── NetworkError               the HTTP request never got an answer (.cause)
 *   ├── ConnectionClosedError      the WebSocket was refused for good (.code, .reason), e.g. 1008
 *   └── TaskError                  about one task (.taskId, .event)
 *       ├── TaskFailedError        the task ended FAILURE (.type, .remoteMessage)
 *       ├── TaskRevokedError       the task ended REVOKED (.reason: "revoked" | "terminated" | "expired")
 *       └── SubscriptionError      the server refused to watch it (.detail)
 *
 * Aborting `result()` rejects with the signal's reason (a DOMException "AbortError" by default); its
 * `timeout` option rejects with a DOMException "TimeoutError", as `AbortSignal.timeout()` does.
 * @module
 */

/** Base of every error the SDK throws on purpose. */
export class SvcError extends Error {
  /** @param {string} message @param {{cause?: unknown}} [options] */
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** An HTTP call answered with an error status; carries the problem-details body. */
export class HttpError extends SvcError {
  /**
   * @param {{status: number, title?: string, detail?: string, type?: string, problem?: Record<string, unknown>,
   *   method?: string, url?: string, retryAfter?: number | null}} init
   */
  constructor({ status, title, detail, type, problem, method, url, retryAfter = null }) {
    const what = detail || title || `HTTP ${status}`;
    super(method && url ? `${method} ${url} answered ${status}: ${what}` : `HTTP ${status}: ${what}`);
    /** @type {number} */ this.status = status;
    /** @type {string} */ this.title = title ?? "";
    /** @type {string} */ this.detail = detail ?? "";
    /** @type {string} */ this.type = type ?? "about:blank";
    /** @type {Record<string, unknown>} */ this.problem = problem ?? {};
    /** @type {string | undefined} */ this.method = method;
    /** @type {string | undefined} */ this.url = url;
    /** Seconds to wait before retrying (from Retry-After), when the server said. @type {number | null} */
    this.retryAfter = retryAfter;
  }
}

/** 400: the body was not valid JSON. */
export class BadRequestError extends HttpError {}
/** 401: a missing or wrong API key. */
export class UnauthorizedError extends HttpError {}
/** 403: a bad, expired or foreign task token. */
export class ForbiddenError extends HttpError {}
/** 404: no exposed task of that name, or no task with that id. */
export class NotFoundError extends HttpError {}
/** 409: an Idempotency-Key was reused for a different request (another task name, or other arguments). */
export class ConflictError extends HttpError {}
/** 413: the request body is over the server's limit. */
export class PayloadTooLargeError extends HttpError {}
/** 422: the arguments fail the task's schema (see `.problem.errors`). */
export class ValidationError extends HttpError {}
/** 429: rate-limited; retry after `.retryAfter` seconds. */
export class RateLimitedError extends HttpError {}
/** 503: Redis or the broker is unreachable (or no worker, for /readyz). */
export class ServiceUnavailableError extends HttpError {}

const BY_STATUS = new Map([
  [400, BadRequestError],
  [401, UnauthorizedError],
  [403, ForbiddenError],
  [404, NotFoundError],
  [409, ConflictError],
  [413, PayloadTooLargeError],
  [422, ValidationError],
  [429, RateLimitedError],
  [503, ServiceUnavailableError],
]);

/** The HTTP request failed before any answer (DNS, refused, reset). */
export class NetworkError extends SvcError {}

/** The WebSocket was closed in a way that retrying cannot fix (1008 auth/origin refused, 1009). */
export class ConnectionClosedError extends SvcError {
  /** @param {number} code @param {string} reason @param {{cause?: unknown}} [options] */
  constructor(code, reason, options) {
    super(`WebSocket closed with ${code}${reason ? `: ${reason}` : ""}`, options);
    /** @type {number} */ this.code = code;
    /** @type {string} */ this.reason = reason;
  }
}

/** Something about one task; `.event` is the event that decided it, when there is one. */
export class TaskError extends SvcError {
  /**
   * @param {string} message @param {string} taskId @param {object | null} [event]
   * @param {{cause?: unknown}} [options]
   */
  constructor(message, taskId, event = null, options) {
    super(message, options);
    /** @type {string} */ this.taskId = taskId;
    /** @type {import("../index.js").TaskEvent | null} */ this.event = /** @type {any} */ (event);
  }
}

/** The task ended FAILURE; `.type` and `.remoteMessage` are the worker's exception's. */
export class TaskFailedError extends TaskError {
  /** @param {string} taskId @param {any} event */
  constructor(taskId, event) {
    const error = event?.error ?? {};
    const type = String(error.type ?? "Error");
    const remote = String(error.message ?? "");
    super(`task ${taskId} failed: ${type}: ${remote}`, taskId, event);
    /** The FAILURE event. @type {import("../index.js").TaskEvent} */
    this.event = event;
    /** The remote exception's class name, e.g. "ValueError". @type {string} */
    this.type = type;
    /** The remote exception's message. @type {string} */
    this.remoteMessage = remote;
    /** For a workflow: the index of the step that failed. @type {number | undefined} */
    this.step = event?.step;
    /** For a workflow: the id of the step that failed. @type {string | undefined} */
    this.failedTaskId = event?.failed_task_id;
  }
}

/** The task ended REVOKED; `.reason` says why ("revoked", "terminated" or "expired"). */
export class TaskRevokedError extends TaskError {
  /** @param {string} taskId @param {any} event */
  constructor(taskId, event) {
    const reason = String(event?.error?.message ?? "revoked");
    super(`task ${taskId} was revoked (${reason})`, taskId, event);
    /** The REVOKED event. @type {import("../index.js").TaskEvent} */
    this.event = event;
    /** @type {string} */ this.reason = reason;
  }
}

/** The server refused to watch the task (an `{"op": "error"}` frame); `.detail` is its reason. */
export class SubscriptionError extends TaskError {
  /**
   * @param {string} taskId @param {string} detail
   * @param {{cause?: unknown}} [options]  cause: why a token renewal (getToken) did not help, if it threw
   */
  constructor(taskId, detail, options) {
    super(`cannot watch task ${taskId}: ${detail}`, taskId, null, options);
    /** @type {string} */ this.detail = detail;
  }
}

/**
 * The typed error for an HTTP error response (problem details when the body is one).
 * @param {Response} response
 * @param {string} method
 * @param {string} url
 * @returns {Promise<HttpError>}
 */
export async function errorFromResponse(response, method, url) {
  /** @type {Record<string, unknown>} */
  let problem = {};
  try {
    const text = await response.text();
    const parsed = text ? JSON.parse(text) : {};
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) problem = parsed;
  } catch {
    // not JSON (a proxy's HTML page): keep the status alone
  }
  const status = response.status;
  const Class = BY_STATUS.get(status) ?? HttpError;
  return new Class({
    status,
    title: typeof problem.title === "string" ? problem.title : response.statusText,
    detail: typeof problem.detail === "string" ? problem.detail : "",
    type: typeof problem.type === "string" ? problem.type : undefined,
    problem,
    method,
    url,
    retryAfter: parseRetryAfter(response.headers.get("retry-after")),
  });
}

/**
 * Seconds from a Retry-After header (delta-seconds or an HTTP date), or null.
 * @param {string | null} value
 * @param {number} [now]
 * @returns {number | null}
 */
export function parseRetryAfter(value, now = Date.now()) {
  if (value == null || value.trim() === "") return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, (date - now) / 1000);
}

/**
 * The error that a terminal event stands for, or null for SUCCESS.
 * @param {string} taskId
 * @param {any} event
 * @returns {TaskFailedError | TaskRevokedError | null}
 */
export function errorForEvent(taskId, event) {
  if (event.state === "FAILURE") return new TaskFailedError(taskId, event);
  if (event.state === "REVOKED") return new TaskRevokedError(taskId, event);
  return null;
}

/**
 * A DOMException named "AbortError" (what fetch rejects with), or the signal's own reason.
 * @param {AbortSignal} [signal]
 * @returns {unknown}
 */
export function abortReason(signal) {
  return signal?.reason ?? new DOMException("This operation was aborted", "AbortError");
}
