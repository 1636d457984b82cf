/**
 * Handles for one task (or one workflow): its events and its streams' chunks, listeners, result(),
 * events(), stream(), text(), cancel(), and its time left (eta).
 *
 * A handle starts watching on the first `on()`, `result()`, `events()`, `stream()` or `text()` and keeps
 * watching until its terminal event (or `unwatch()`): a terminal event settles `result()` even if it
 * arrived before anyone asked. Events and stream chunks share the task's seq; each frame reaches
 * listeners once, in seq order, and anything at or below the last seq seen is dropped (that is what
 * makes reconnects seamless, for chunks as for events).
 *
 * Memory: `history` keeps the newest `historyLimit` events (the Client's option); each running
 * `events()` iterator has its own bounded backlog (backlog.js), so a slow consumer costs at most that
 * many events. Stream chunks are all kept (streams.js).
 * @module
 */

import { EventBacklog } from "./backlog.js";
import { abortReason, errorForEvent } from "./errors.js";
import { Listeners } from "./listeners.js";
import { DEFAULT_STREAM, StreamBuffer, chunkOf, isStreamFrame, textOf } from "./streams.js";
import { TimeLeft } from "./time-left.js";

/** The states that end a task. @type {readonly ("SUCCESS" | "FAILURE" | "REVOKED")[]} */
export const TERMINAL_STATES = Object.freeze(["SUCCESS", "FAILURE", "REVOKED"]);
/** @type {Set<string>} */
const TERMINAL = new Set(TERMINAL_STATES);

/** Default of the Client's `historyLimit`: the most events a handle's `history` keeps. */
export const HISTORY_LIMIT = 1000;

/**
 * What a handle needs of its Client (kept narrow so the two cannot tangle).
 * @typedef {object} Owner
 * @property {(handle: Task) => void} watch
 * @property {(handle: Task) => void} unwatch
 * @property {(method: string, path: string, init?: {query?: Record<string, unknown>}) => Promise<any>} request
 *   one HTTP call; `path` is a route ("/tasks/{id}") that the Client puts under its baseUrl
 * @property {number} [historyLimit]  the most events `history` keeps (default HISTORY_LIMIT)
 * @property {import("./catalogue.js").RuntimeCatalogue} [catalogue]  recent runtimes, for the eta
 * @property {() => number} [now]  unix time in seconds, for the eta (default: Date.now() / 1000)
 */

/** @typedef {import("../index.js").TaskState} TaskState one of Celery's states, as events carry them */

/**
 * The outcome of a handle's terminal event.
 * @typedef {{ok: true, value: any}
 *   | {ok: false, error: import("./errors.js").TaskFailedError | import("./errors.js").TaskRevokedError}} Outcome
 */

/** One task: its id, token and state, its events, its streams, its result. */
export class Task {
  /**
   * @param {Owner} owner
   * @param {string} id
   * @param {string | null} token
   * @param {{name?: string | null, state?: TaskState}} [init]
   */
  constructor(owner, id, token, { name = null, state = "PENDING" } = {}) {
    /** @private */ this._owner = owner;
    /** The task id (for a workflow: the workflow id). @type {string} */
    this.id = id;
    /** The task's subscription token (or null when auth is off and none was given). @type {string | null} */
    this.token = token ?? null;
    /** The task name, when known. @type {string | null} */
    this.name = name;
    /** The state of the newest event of the handle's own id (never changed by stream chunks). @type {TaskState} */
    this.state = state;
    /** The newest seq delivered, of an event or a stream chunk (0 before any). @type {number} */
    this.lastSeq = 0;
    /** The newest event delivered (never a stream chunk), or null. @type {any} */
    this.latest = null;
    /**
     * The newest `historyLimit` events delivered, in seq order (older ones are let go of first; a
     * late events() iterator replays what it holds). Chunks are kept apart. @type {any[]}
     */
    this.history = [];
    /** @private */ this._historyLimit = owner.historyLimit ?? HISTORY_LIMIT;
    /** @private */ this._streams = new StreamBuffer();
    /** A throwing listener cannot break delivery to the others (listeners.js). @private */
    this._listeners = new Listeners();
    /** @private @type {Outcome | null} */ this._outcome = null;
    /** @private @type {Set<{resolve: Function, reject: Function}>} */ this._waiters = new Set();
    /** @private @type {Set<() => void>} */ this._wakers = new Set();
    /** events() iterators' backlogs @private @type {Set<EventBacklog<any>>} */ this._backlogs = new Set();
    /** @private @type {Error | null} */ this._failure = null;
    /** @private */ this._watching = false;
    /** @private */
    this._timeLeft = new TimeLeft(owner, () => this.name, (eta) => this._listeners.emit("eta", eta));
  }

  /** True once the terminal event was delivered. */
  get done() {
    return this._outcome !== null;
  }

  /**
   * How the task ended, once it did: `{ok: true, value}` (SUCCESS) or `{ok: false, error}` (the
   * TaskFailedError or TaskRevokedError that result() rejects with); null before the end.
   * @returns {Outcome | null}
   */
  get outcome() {
    return this._outcome;
  }

  /**
   * Seconds left until the task ends, as estimated at its newest event (see eta.js): from its own
   * progress rate when a PROGRESS event has a total, else from the recent runtimes of its name (the
   * catalogue, fetched on the first read); null when the task is not running or nothing tells.
   * @returns {number | null}
   */
  get eta() {
    this._timeLeft.want();
    return this._timeLeft.value;
  }

  /** The names of the streams this handle has received chunks of, in the order they first appeared. */
  get streamNames() {
    return this._streams.names();
  }

  /**
   * Call `listener` for every "event", every "progress" event, every "state" change
   * (`(state, event)`), every "stream" chunk (a StreamChunk, any stream), every change of "eta"
   * (`(eta)`, seconds or null), or an "error" (the handle can no longer watch). Starts watching.
   * Stream chunks never reach "event" listeners.
   * @param {"event" | "progress" | "state" | "stream" | "eta" | "error"} type
   * @param {Function} listener
   * @returns {() => void} removes the listener
   */
  on(type, listener) {
    const remove = this._listeners.add(type, listener);
    if (type === "eta") this._timeLeft.want();
    this._watch();
    return remove;
  }

  /**
   * The task's return value once it succeeds; rejects TaskFailedError (FAILURE), TaskRevokedError
   * (REVOKED), SubscriptionError/ConnectionClosedError (cannot watch), the signal's reason on abort,
   * or a DOMException "TimeoutError" after `timeout` ms.
   * @param {{signal?: AbortSignal, timeout?: number}} [options]
   * @returns {Promise<any>}
   */
  async result(options = {}) {
    const outcome = await this._settled(options);
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  }

  /**
   * The text of stream `name` once the task has ended, whatever its end (SUCCESS, FAILURE or REVOKED:
   * a failed task's partial output is still given; `result()` is where the failure surfaces): the
   * stream's chunks concatenated in seq order, strings as they are and other values as their JSON.
   * Chunks the server cut before they reached this handle are missing (see `chunks()` and a chunk's
   * `recovered`). Rejects as `result()` does when the handle cannot watch, on abort, or after `timeout` ms.
   * @param {string} [name]  default "output"
   * @param {{signal?: AbortSignal, timeout?: number}} [options]
   * @returns {Promise<string>}
   */
  async text(name = DEFAULT_STREAM, options = {}) {
    await this._settled(options);
    return textOf(this._streams.of(name));
  }

  /**
   * The chunks of stream `name` received so far, in seq order (a copy; empty before the first).
   * @param {string} [name]  default "output"
   * @returns {import("./streams.js").StreamChunk[]}
   */
  chunks(name = DEFAULT_STREAM) {
    return [...this._streams.of(name)];
  }

  /**
   * Every chunk's `data` of stream `name`, in seq order, starting with those received before the
   * iterator was made; ends normally when the task ends (whatever its end: `result()` says how) or on
   * `unwatch()`. Throws if the handle can no longer watch, or the signal's reason on abort.
   * @param {string} [name]  default "output"
   * @param {{signal?: AbortSignal}} [options]
   * @returns {AsyncGenerator<any, void, undefined>}
   */
  async *stream(name = DEFAULT_STREAM, { signal } = {}) {
    let index = 0;
    const next = () => {
      const chunks = this._streams.of(name);
      return index < chunks.length ? chunks[index++] : undefined;
    };
    for await (const chunk of this._follow(next, signal)) yield chunk.data;
  }

  /**
   * Every event of the task with seq > `since` (default: all), in seq order; ends after the terminal
   * event. It starts with a replay of `history` as it is when iteration begins (the newest
   * `historyLimit` events), then yields every event delivered after that; while it lags more than
   * `historyLimit` events behind, PROGRESS events it has not read are coalesced to the newest.
   * Stream chunks are not events: see stream(). Throws if the handle can no longer watch, or the
   * signal's reason on abort.
   * @param {{since?: number, signal?: AbortSignal}} [options]
   * @returns {AsyncGenerator<any, void, undefined>}
   */
  async *events({ since = 0, signal } = {}) {
    /** @type {EventBacklog<any>} */
    const backlog = new EventBacklog(this._historyLimit);
    for (const event of this.history) backlog.push(event);
    this._backlogs.add(backlog);
    try {
      for await (const event of this._follow(() => backlog.shift(), signal)) {
        if (event.seq > since || event.recovered === false) yield event;
      }
    } finally {
      this._backlogs.delete(backlog);
    }
  }

  /**
   * Revoke the task (DELETE /tasks/{id}); `terminate: true` also stops it if it is running.
   * Watchers then get REVOKED. Resolves with the server's answer.
   * @param {{terminate?: boolean}} [options]
   */
  cancel({ terminate = false } = {}) {
    const query = { token: this.token, terminate: terminate ? "true" : undefined };
    return this._owner.request("DELETE", `/tasks/${encodeURIComponent(this.id)}`, { query });
  }

  /** The newest recorded event, over HTTP (GET /tasks/{id}): the polling fallback. */
  fetchState() {
    return this._owner.request("GET", `/tasks/${encodeURIComponent(this.id)}`, {
      query: { token: this.token },
    });
  }

  /** Stop watching: pending result() and text() calls reject with an AbortError; iterators end. */
  unwatch() {
    if (!this._watching) return;
    this._watching = false;
    this._owner.unwatch(this);
    this._rejectWaiters(new DOMException(`stopped watching task ${this.id}`, "AbortError"));
    this._wakeIterators();
  }

  /** @private */
  _watch() {
    if (this._watching || this._outcome) return;
    this._owner.watch(this);
    this._watching = true;
  }

  /**
   * The outcome once the terminal event is delivered (at once if it was); rejects when the handle
   * cannot watch, on abort, or with a DOMException "TimeoutError" after `timeout` ms.
   * @private
   * @param {{signal?: AbortSignal, timeout?: number}} options
   * @returns {Promise<Outcome>}
   */
  _settled({ signal, timeout }) {
    if (this._outcome) return Promise.resolve(this._outcome);
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise((resolve, reject) => {
      this._watch(); // throws (so rejects) once the client is closed
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let timer;
      const onAbort = () => finish(reject, abortReason(signal));
      const waiter = {
        resolve: (/** @type {Outcome} */ outcome) => finish(resolve, outcome),
        reject: (/** @type {unknown} */ error) => finish(reject, error),
      };
      /** @param {Function} settle @param {unknown} value */
      const finish = (settle, value) => {
        this._waiters.delete(waiter);
        signal?.removeEventListener("abort", onAbort);
        clearTimeout(timer);
        settle(value);
      };
      this._waiters.add(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
      if (timeout != null) {
        const message = `no terminal event for task ${this.id} within ${timeout} ms`;
        timer = setTimeout(() => finish(reject, new DOMException(message, "TimeoutError")), timeout);
      }
    });
  }

  /**
   * Each item `next()` hands out, in order, waiting for more while the task runs; ends at the
   * terminal event (once `next()` has nothing more) or on unwatch(); throws a failure that happened
   * after it began, or the signal's reason.
   * @private
   * @template T
   * @param {() => T | undefined} next  the next item not yet yielded, or undefined for none yet
   * @param {AbortSignal} [signal]
   * @returns {AsyncGenerator<T, void, undefined>}
   */
  async *_follow(next, signal) {
    /** @type {(() => void) | null} */
    let wake = null;
    const waker = () => wake?.();
    this._wakers.add(waker);
    signal?.addEventListener("abort", waker);
    const failureBefore = this._failure;
    try {
      this._watch();
      for (;;) {
        if (signal?.aborted) throw abortReason(signal);
        const item = next();
        if (item !== undefined) {
          yield item;
          continue;
        }
        if (this._outcome) return;
        if (this._failure && this._failure !== failureBefore) throw this._failure;
        if (!this._watching) return; // unwatch()
        await new Promise((resolve) => (wake = /** @type {() => void} */ (resolve)));
        wake = null;
      }
    } finally {
      this._wakers.delete(waker);
      signal?.removeEventListener("abort", waker);
    }
  }

  /**
   * One frame for this handle, from the socket: an event or a stream chunk. Drops what was already
   * seen, and frames of a kind this SDK does not know.
   * @param {Record<string, any>} frame
   */
  _deliver(frame) {
    if (this._outcome) return;
    if (isStreamFrame(frame)) this._deliverChunk(frame);
    else if (frame.op == null) this._deliverEvent(frame);
  }

  /** @private @param {Record<string, any>} event */
  _deliverEvent(event) {
    const seq = typeof event.seq === "number" ? event.seq : 0;
    // "recovered": false says the history no longer reaches back to what we saw: the server sends
    // its newest snapshot (possibly seq 0 from the result backend), which starts a new baseline.
    if (seq <= this.lastSeq && event.recovered !== false) return;
    this.lastSeq = seq;
    this.latest = event;
    this.history.push(event);
    if (this.history.length > this._historyLimit) this.history.shift();
    for (const backlog of this._backlogs) backlog.push(event);
    const own = this._isOwnEvent(event);
    if (own && this.name === null && typeof event.name === "string") this.name = event.name;
    const etaChanged = own && this._timeLeft.update(event);
    const previous = this.state;
    if (own && typeof event.state === "string") this.state = /** @type {TaskState} */ (event.state);
    // Settled before the listeners run, so that they see `done` and `outcome` of a terminal event.
    if (own && TERMINAL.has(event.state)) this._settle(event);
    if (own && this.state !== previous) this._listeners.emit("state", this.state, event);
    this._listeners.emit("event", event);
    if (event.state === "PROGRESS") this._listeners.emit("progress", event);
    if (etaChanged) this._listeners.emit("eta", this._timeLeft.value);
    this._wakeIterators();
  }

  /** @private @param {Record<string, any>} frame */
  _deliverChunk(frame) {
    // A chunk always carries its own seq (chunks are never coalesced or replaced by a snapshot), so
    // one at or below the last seq was delivered already, even if it says "recovered": false.
    if (typeof frame.seq !== "number" || frame.seq <= this.lastSeq) return;
    this.lastSeq = frame.seq;
    const chunk = chunkOf(frame);
    this._streams.add(chunk);
    this._listeners.emit("stream", chunk);
    this._wakeIterators();
  }

  /**
   * The handle cannot watch any more (refused subscription, 1008, client closed).
   * @param {Error} error
   */
  _fail(error) {
    if (this._outcome || !this._watching) return;
    this._watching = false;
    this._failure = error;
    this._listeners.emit("error", error);
    this._rejectWaiters(error);
    this._wakeIterators();
  }

  /**
   * Whether an event is the handle's own (a workflow's step copies are not).
   * @param {Record<string, any>} event
   */
  _isOwnEvent(event) {
    return event.task_id === this.id;
  }

  /** @private @param {Record<string, any>} event */
  _settle(event) {
    const error = errorForEvent(this.id, event);
    this._outcome = error ? { ok: false, error } : { ok: true, value: event.result };
    this._watching = false;
    this._owner.unwatch(this);
    for (const waiter of [...this._waiters]) waiter.resolve(this._outcome);
  }

  /** @private @param {unknown} error */
  _rejectWaiters(error) {
    for (const waiter of [...this._waiters]) waiter.reject(error);
  }

  /** @private */
  _wakeIterators() {
    for (const waker of [...this._wakers]) waker();
  }

}
