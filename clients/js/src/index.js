/**
 * svc-client: submit svc tasks over HTTP and watch their events and streams over one reconnecting
 * WebSocket.
 * @module
 */

export { Client } from "./client.js";
export { Task, TERMINAL_STATES, HISTORY_LIMIT } from "./task.js";
export { Workflow } from "./workflow.js";
export { CONNECT_TIMEOUT, CONNECTION_EVENTS } from "./socket.js";
export { CATALOGUE_MAX_AGE } from "./catalogue.js";
export { ETA_SMOOTHING, EtaEstimator, remainingFromProgress, remainingFromRuntime } from "./eta.js";
export { DEFAULT_STREAM } from "./streams.js";
export { BACKOFF_DEFAULTS, backoffDelay, ceiling } from "./backoff.js";
export {
  SvcError,
  HttpError,
  BadRequestError,
  UnauthorizedError,
  ForbiddenError,
  NotFoundError,
  ConflictError,
  PayloadTooLargeError,
  ValidationError,
  RateLimitedError,
  ServiceUnavailableError,
  NetworkError,
  ConnectionClosedError,
  TaskError,
  TaskFailedError,
  TaskRevokedError,
  SubscriptionError,
  errorFromResponse,
  parseRetryAfter,
} from "./errors.js";
