// Type declarations for svc-client (see README.md for the guarantees). `npm test` checks them against
// src/ (test/types/declarations.ts: every export declared, every implementation assignable to its
// declaration) and compiles example/typed.ts against them with --strict.

/** Celery's states, as svc's events carry them. */
export type TaskState =
  | "PENDING"
  | "RECEIVED"
  | "STARTED"
  | "PROGRESS"
  | "RETRY"
  | "SUCCESS"
  | "FAILURE"
  | "REVOKED";

/** The states that end a task: its result() settles and its events() ends. */
export type TerminalState = "SUCCESS" | "FAILURE" | "REVOKED";
export declare const TERMINAL_STATES: readonly TerminalState[];

/** `progress` of a PROGRESS event. */
export interface Progress {
  current: number;
  /** null when the task did not say how much there is to do. */
  total: number | null;
  message: string | null;
}

/** `error` of a FAILURE, RETRY or REVOKED event (REVOKED: type "TaskRevokedError", message "revoked" | "terminated" | "expired"). */
export interface RemoteError {
  type: string;
  message: string;
}

/** One event, as `/ws` and `GET /tasks/{id}` send it. */
export interface TaskEvent<Result = unknown> {
  task_id: string;
  name: string | null;
  /** 1, 2, 3, … per stream; a handle never delivers the same seq twice or out of order. */
  seq: number;
  state: TaskState;
  /** Unix time, seconds. */
  ts: number;
  result: Result | null;
  error: RemoteError | null;
  progress: Progress | null;
  retries: number;
  worker: string | null;
  /** false: the server's history no longer reached back to what this client had seen (a gap). */
  recovered?: boolean;
  /**
   * true (with `recovered: false`): neither the history nor Celery's result backend knows the task any
   * more; `state` is the last one this connection was sent. Later events, if any, still follow.
   */
  lost?: boolean;
  /** Python's repr of a result JSON cannot carry exactly (then `result` is null). */
  result_repr?: string;
  /** Python's repr of a progress JSON cannot carry exactly (then `progress` is null). */
  progress_repr?: string;
  /** RETRY: when the next attempt is due (ISO 8601). Not `task.eta`, the time left. */
  eta?: string;
  /** RECEIVED: a short summary of the arguments. */
  args?: string;
  /** SUCCESS/FAILURE: seconds since STARTED. */
  runtime?: number;
  /** FAILURE after the last retry. */
  retries_exhausted?: boolean;
  /** A workflow step's copy in its workflow's stream: the workflow's id. */
  workflow_id?: string;
  /** A workflow step's index (on step copies, and on a workflow's final FAILURE/REVOKED). */
  step?: number;
  /** A workflow step's copy: the seq of the event in the step's own stream. */
  step_seq?: number;
  /** A workflow's final FAILURE/REVOKED: the step that did not succeed. */
  failed_task_id?: string;
  /** A workflow's PENDING and final SUCCESS: its steps' ids. */
  steps?: string[];
  [extra: string]: unknown;
}

/** A PROGRESS event. */
export interface ProgressEvent extends TaskEvent {
  state: "PROGRESS";
  progress: Progress;
}

/** The name of the stream a task writes to when it names none: "output". */
export declare const DEFAULT_STREAM: "output";

/**
 * A stream frame as `/ws` sends it: one chunk of a task's named stream. It has no `state`: it never
 * changes a handle's state and never ends it. Its `seq` is in the task's own sequence, shared with events.
 */
export interface StreamFrame<Data = unknown> {
  op: "stream";
  task_id: string;
  seq: number;
  stream: string;
  data: Data;
  /** false: chunks before this one (after the subscriber's since) were cut by the server's cap or TTL. */
  recovered?: boolean;
  /** A workflow step's chunk in its workflow's stream: the workflow's id (then `task_id` is the step's). */
  workflow_id?: string;
  step?: number;
  step_seq?: number;
}

/** One chunk of a task's stream, as `task.on("stream")` and `task.chunks()` give it. */
export interface StreamChunk<Data = unknown> {
  /** The stream's name ("output" unless the task named another). */
  stream: string;
  /** The chunk: a string for text streams, or any JSON value. */
  data: Data;
  /** Its place in the task's seq, shared with its events (a workflow: the workflow stream's seq). */
  seq: number;
  /** The task that wrote it: the handle's id, or in a workflow's stream the step's id. */
  taskId: string;
  /** A workflow step's chunk: the step's index. */
  step?: number;
  /** A workflow step's chunk: its seq in the step's own sequence. */
  stepSeq?: number;
  /**
   * Present (false) only when chunks before this one, after what the handle had received, were cut by
   * the server (its cap or TTL): the stream has a gap just before this chunk.
   */
  recovered?: false;
}

/** The reconnect policy: exponential backoff with full jitter. */
export interface BackoffOptions {
  /** Ceiling of the first delay, ms. Default 250. */
  base?: number;
  /** Largest ceiling, ms. Default 10000. */
  cap?: number;
  /** ms a connection must stay open before the attempt count resets. Default 5000. */
  stableAfter?: number;
}
export declare const BACKOFF_DEFAULTS: Readonly<Required<BackoffOptions>>;
/** min(cap, base × 2^attempt). */
export declare function ceiling(attempt: number, options?: BackoffOptions): number;
/** A delay uniform in [0, ceiling(attempt)) ms. */
export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;

/** A WHATWG-compatible WebSocket class: the browser's, or the `ws` package's on Node. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: any }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: any) => void) | null;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[], options?: any) => WebSocketLike;

/**
 * Asked for a fresh token of a task (or workflow) id whose token the server refused (expired, after
 * SVC_TOKEN_TTL). A string other than the refused token is tried once; null, undefined, the same
 * token or a throw let the refusal stand.
 */
export type GetToken = (taskId: string) => string | null | undefined | Promise<string | null | undefined>;

export interface ClientOptions {
  /**
   * Where svc is served: its origin ("http://127.0.0.1:8000") or the prefix it is mounted at
   * ("http://127.0.0.1:8000/svc", or in a page "/svc", resolved against `location`). Every HTTP and
   * WebSocket URL is built under it (`<baseUrl>/tasks/add`, `ws(s)://…/svc/ws`); a trailing slash is
   * ignored. Default (also for ""): `location.origin` in a page; required elsewhere.
   */
  baseUrl?: string;
  /** Sent as `Authorization: Bearer` on every HTTP call (and the `ws` handshake). Never give it to a browser. */
  apiKey?: string;
  /** Default: globalThis.WebSocket. On Node 20: `import { WebSocket } from "ws"`. */
  WebSocket?: WebSocketConstructor | (new (...args: any[]) => any);
  /** Default: globalThis.fetch. */
  fetch?: typeof fetch;
  /** The reconnect policy. */
  backoff?: BackoffOptions;
  /** ms the socket stays open once nothing is watched. Default 1000. */
  idleTimeout?: number;
  /** ms a WebSocket may take to open; then it is closed and retried through the backoff. Default 10000. */
  connectTimeout?: number;
  /** Renews a refused task token (see GetToken). Default: none (a refusal fails the handle). */
  getToken?: GetToken;
  /**
   * The most events each handle's `history` keeps (the oldest are let go of first), and the backlog
   * past which a slow events() iterator has its unread PROGRESS events coalesced. Default 1000.
   */
  historyLimit?: number;
}

/** Default of ClientOptions.connectTimeout: 10000 ms. */
export declare const CONNECT_TIMEOUT: number;
/** Default of ClientOptions.historyLimit: 1000 events. */
export declare const HISTORY_LIMIT: number;
/** ms between two fetches of the catalogue (GET /tasks) for etas, at most: 60000. */
export declare const CATALOGUE_MAX_AGE: number;

/** The connection events of `client.on()`. */
export declare const CONNECTION_EVENTS: readonly ConnectionEventName[];
export type ConnectionEventName = keyof ConnectionListeners;

/** What `client.on()` calls. */
export interface ConnectionListeners {
  /** The shared WebSocket opened; every watched task is (re)subscribed. */
  connected: () => void;
  /** An open WebSocket was lost (not when the client closed it itself: idle, close()). */
  disconnected: (info: { code: number; reason: string }) => void;
  /**
   * A new connection attempt is about to start in `delay` ms; `attempt` is 1 for the first retry since
   * the last stable connection.
   */
  reconnecting: (info: { attempt: number; delay: number }) => void;
}

/** What the catalogue (GET /tasks) says recent runs of a task name took, in seconds from STARTED. */
export interface RuntimeStats {
  p50: number;
  p95: number;
  runs: number;
}

/** One entry of GET /tasks. */
export interface CatalogueEntry {
  name: string;
  description: string;
  schema: Record<string, unknown>;
  /** null before any run (or when the server keeps no statistics); absent from older servers. */
  runtime?: RuntimeStats | null;
}

export interface SubmitOptions {
  args?: unknown[];
  kwargs?: Record<string, unknown>;
  /** countdown (s), eta (ISO 8601), expires (s or ISO 8601), priority (0-9), queue. */
  options?: {
    countdown?: number;
    eta?: string;
    expires?: number | string;
    priority?: number;
    queue?: string;
    [option: string]: unknown;
  };
  /** Sent as the Idempotency-Key header: a repeat returns the first submit's task. */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

export interface WorkflowStep {
  task: string;
  args?: unknown[];
  kwargs?: Record<string, unknown>;
}

export type WorkflowSpec =
  | { chain: WorkflowStep[] }
  | { group: WorkflowStep[]; callback?: WorkflowStep };

export interface ResultOptions {
  /** Rejects with signal.reason (a DOMException "AbortError" by default) when aborted. */
  signal?: AbortSignal;
  /** ms; rejects with a DOMException "TimeoutError" after it. */
  timeout?: number;
}

export interface CancelAnswer {
  task_id: string;
  revoked: boolean;
  terminate: boolean;
  task_ids?: string[];
  [extra: string]: unknown;
}

export interface IterateOptions {
  /** The iterator throws signal.reason (a DOMException "AbortError" by default) when aborted. */
  signal?: AbortSignal;
}

export interface EventsOptions extends IterateOptions {
  /** Only events with a seq above it (and gap markers, `recovered: false`). Default 0: all. */
  since?: number;
}

export interface TaskListeners {
  /** Every event (never a stream chunk). */
  event: (event: TaskEvent) => void;
  progress: (event: ProgressEvent) => void;
  state: (state: TaskState, event: TaskEvent) => void;
  /** Every chunk of every stream of the task, once each, in seq order (interleaved with events). */
  stream: (chunk: StreamChunk) => void;
  /** The time left changed (seconds, or null: not running, or nothing tells). Listening lets the handle fetch runtimes. */
  eta: (eta: number | null) => void;
  error: (error: Error) => void;
}

/** How a task ended: its result, or the error result() rejects with. */
export type Outcome<Result = unknown> =
  | { ok: true; value: Result }
  | { ok: false; error: TaskFailedError | TaskRevokedError };

/**
 * One task's events and streams. Watching starts on the first on()/result()/events()/stream()/text()
 * and ends at its terminal event.
 */
export declare class Task<Result = unknown> {
  /** Handles come from `client.submit()`, `client.task()` and `client.workflow()`. */
  protected constructor(owner: unknown, id: string, token: string | null, init?: { name?: string | null; state?: string });
  readonly id: string;
  readonly token: string | null;
  readonly name: string | null;
  /** The state of the newest event of the handle's own id ("PENDING" after submit); chunks never change it. */
  readonly state: TaskState;
  /** The newest seq delivered, of an event or a stream chunk (0 before any). */
  readonly lastSeq: number;
  /** The newest event delivered (never a stream chunk). */
  readonly latest: TaskEvent<Result> | null;
  /**
   * The newest `historyLimit` events delivered (default 1000), in seq order; older ones are let go of
   * first. Stream chunks are kept apart: chunks().
   */
  readonly history: readonly TaskEvent[];
  /** True once the terminal event was delivered. */
  readonly done: boolean;
  /** How the task ended; null before its terminal event. */
  readonly outcome: Outcome<Result> | null;
  /**
   * Seconds left until the task ends, as estimated at its newest event: from its progress rate
   * (PROGRESS with a total), else from its name's recent runtimes (the catalogue, fetched lazily: on
   * the first read or "eta" listener); null when it is not running or nothing tells.
   */
  readonly eta: number | null;
  /** The names of the streams the handle has received chunks of, in order of their first chunk. */
  readonly streamNames: string[];
  on<K extends keyof TaskListeners>(type: K, listener: TaskListeners[K]): () => void;
  /** The result on SUCCESS; rejects TaskFailedError, TaskRevokedError, SubscriptionError, ConnectionClosedError, AbortError, TimeoutError. */
  result(options?: ResultOptions): Promise<Result>;
  /**
   * Every event with seq > since (default: all), ending after the terminal one: first a replay of
   * `history` as it is when iteration begins (the newest historyLimit events), then every event after.
   * While it lags more than historyLimit events behind, its unread PROGRESS events are coalesced to the newest.
   */
  events(options?: EventsOptions): AsyncGenerator<TaskEvent, void, undefined>;
  /**
   * Every chunk's `data` of stream `name` (default "output"), in seq order, starting with chunks received
   * before the call; ends normally when the task ends (SUCCESS, FAILURE or REVOKED: result() says which)
   * or on unwatch(). Throws SubscriptionError / ConnectionClosedError / AbortError as events() does.
   */
  stream<Data = unknown>(name?: string, options?: IterateOptions): AsyncGenerator<Data, void, undefined>;
  /**
   * Stream `name`'s (default "output") chunks concatenated once the task has ended, whatever its end:
   * strings as they are, other values as JSON.stringify gives them. Rejects like result() when the handle
   * cannot watch, on abort or timeout, but not on FAILURE/REVOKED (a failed task's partial text is given).
   */
  text(name?: string, options?: ResultOptions): Promise<string>;
  /** The chunks of stream `name` (default "output") received so far, in seq order (a copy). */
  chunks<Data = unknown>(name?: string): StreamChunk<Data>[];
  /** DELETE /tasks/{id}: revoke (and with terminate, stop it if running). */
  cancel(options?: { terminate?: boolean }): Promise<CancelAnswer>;
  /** GET /tasks/{id}: the newest recorded event (the polling fallback). */
  fetchState(): Promise<TaskEvent<Result>>;
  /** Stop watching: pending result() and text() calls reject with an AbortError; iterators end. */
  unwatch(): void;
}

/**
 * A chain, group or chord: its handle carries every step's events and stream chunks (with step/step_seq,
 * chunks with `taskId` and `step`) and a final event.
 */
export declare class Workflow<Result = unknown> extends Task<Result> {
  protected constructor(owner: unknown, accepted: { workflow_id: string; kind?: string; task_ids?: string[]; token?: string });
  readonly kind: "chain" | "group" | "chord" | null;
  /** The steps' task ids, in step order. */
  readonly taskIds: string[];
}

export declare class Client {
  constructor(options?: ClientOptions);
  /** The absolute base every URL is built under, without a trailing slash, e.g. "http://127.0.0.1:8000/svc". */
  readonly baseUrl: string;
  /** True while the shared WebSocket is open. */
  readonly connected: boolean;
  /** Listen to the shared WebSocket's life; returns a function that removes the listener. */
  on<K extends ConnectionEventName>(type: K, listener: ConnectionListeners[K]): () => void;
  /** POST /tasks/{name}. */
  submit<Result = unknown>(name: string, options?: SubmitOptions): Promise<Task<Result>>;
  /** A handle for an existing task. */
  task<Result = unknown>(id: string, token?: string | null): Task<Result>;
  /** POST /workflows. */
  workflow<Result = unknown>(spec: WorkflowSpec, options?: { signal?: AbortSignal }): Promise<Workflow<Result>>;
  /** A handle for an existing workflow. */
  workflowHandle<Result = unknown>(id: string, token?: string | null, taskIds?: string[]): Workflow<Result>;
  /** One HTTP call to `path` (a route, e.g. "/tasks") under baseUrl: the parsed JSON body, or a typed HttpError / NetworkError. */
  request<T = any>(
    method: string,
    path: string,
    init?: { query?: Record<string, unknown>; body?: unknown; headers?: Record<string, string>; signal?: AbortSignal },
  ): Promise<T>;
  /** Close the socket; pending result() calls reject with an AbortError. */
  close(): void;
}

/** Base of every error the SDK throws on purpose. */
export declare class SvcError extends Error {
  constructor(message: string, options?: { cause?: unknown });
}

export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  [member: string]: unknown;
}

/** An HTTP error answer (RFC 9457 problem details). */
export declare class HttpError extends SvcError {
  constructor(init: {
    status: number;
    title?: string;
    detail?: string;
    type?: string;
    problem?: Problem;
    method?: string;
    url?: string;
    retryAfter?: number | null;
  });
  readonly status: number;
  readonly title: string;
  readonly detail: string;
  readonly type: string;
  readonly problem: Problem;
  readonly method?: string;
  readonly url?: string;
  /** Seconds, from Retry-After (429). */
  readonly retryAfter: number | null;
}
export declare class BadRequestError extends HttpError {}
export declare class UnauthorizedError extends HttpError {}
export declare class ForbiddenError extends HttpError {}
export declare class NotFoundError extends HttpError {}
/** 409: an Idempotency-Key reused for a different request. */
export declare class ConflictError extends HttpError {}
export declare class PayloadTooLargeError extends HttpError {}
export declare class ValidationError extends HttpError {}
export declare class RateLimitedError extends HttpError {}
export declare class ServiceUnavailableError extends HttpError {}
/** The HTTP request got no answer; `cause` is fetch's error. */
export declare class NetworkError extends SvcError {}
/** The WebSocket was refused for good (1008 auth/origin, 1009). */
export declare class ConnectionClosedError extends SvcError {
  constructor(code: number, reason: string, options?: { cause?: unknown });
  readonly code: number;
  readonly reason: string;
}
export declare class TaskError extends SvcError {
  constructor(message: string, taskId: string, event?: TaskEvent | null, options?: { cause?: unknown });
  readonly taskId: string;
  readonly event: TaskEvent | null;
}
export declare class TaskFailedError extends TaskError {
  constructor(taskId: string, event: TaskEvent);
  /** The remote exception's class, e.g. "ValueError". */
  readonly type: string;
  /** The remote exception's message. */
  readonly remoteMessage: string;
  /** A workflow's failing step index. */
  readonly step?: number;
  /** A workflow's failing step id. */
  readonly failedTaskId?: string;
  readonly event: TaskEvent;
}
export declare class TaskRevokedError extends TaskError {
  constructor(taskId: string, event: TaskEvent);
  /** "revoked", "terminated" or "expired". */
  readonly reason: string;
  readonly event: TaskEvent;
}
/** The server refused a subscription (`{"op": "error"}`). */
export declare class SubscriptionError extends TaskError {
  /** `cause`: why a token renewal (getToken) did not help, when it threw. */
  constructor(taskId: string, detail: string, options?: { cause?: unknown });
  readonly detail: string;
}

/** The time-left estimator of one task (the one behind `task.eta`), fed its own events; reads no clock. */
export declare class EtaEstimator {
  constructor(options?: { smoothing?: number });
  /** True while the task runs (its newest event is STARTED or PROGRESS). */
  readonly running: boolean;
  /** True while it runs without an estimate from its own progress. */
  readonly needsRuntime: boolean;
  observe(event: { state?: unknown; ts?: unknown; progress?: any }): void;
  /** Seconds left; `now` in unix seconds (for the runtime fallback). */
  estimate(runtime: RuntimeStats | null | undefined, now: number): number | null;
}
/** Weight of the newest estimate against the aged previous one: 0.3. */
export declare const ETA_SMOOTHING: number;
/** Seconds left at `at` if the rate since `from` holds; null when it cannot tell. */
export declare function remainingFromProgress(
  from: { ts: number; current: number },
  at: { ts: number; current: number; total: number | null },
): number | null;
/** Seconds left for a run `elapsed` s old: p50 - elapsed, then p95 - elapsed, then null. */
export declare function remainingFromRuntime(runtime: RuntimeStats | null | undefined, elapsed: number): number | null;

export declare function errorFromResponse(response: Response, method: string, url: string): Promise<HttpError>;
export declare function parseRetryAfter(value: string | null, now?: number): number | null;
