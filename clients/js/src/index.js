/**
 * svc-client: submit svc tasks over HTTP and watch their events and streams over one reconnecting
 * WebSocket.
 * @module
 */

export { Client } from "./client.js";
export { Task, Workflow, TERMINAL_STATES } from "./task.js";
export { DEFAULT_STREAM } from "./streams.js";
export { BACKOFF_DEFAULTS, backoffDelay, ceiling } from "./backoff.js";
export {
  SvcError,
  HttpError,
  BadRequestError,
  UnauthorizedError,
  ForbiddenError,
  NotFoundError,
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
