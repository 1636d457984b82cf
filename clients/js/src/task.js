/**
 * Handles for one task's (or one workflow's) event stream: listeners, result(), events(), cancel().
 *
 * A handle starts watching on the first `on()`, `result()` or `events()` and keeps watching until its
 * terminal event (or `unwatch()`): a terminal event settles `result()` even if it arrived before anyone
 * asked. Events reach listeners once each, in seq order; anything at or below the last seq seen is
 * dropped (that is what makes reconnects seamless).
 * @module
 */

import { abortReason, errorForEvent } from "./errors.js";

export const TERMINAL_STATES = Object.freeze(["SUCCESS", "FAILURE", "REVOKED"]);
const TERMINAL = new Set(TERMINAL_STATES);

/**
 * What a handle needs of its Client (kept narrow so the two cannot tangle).
 * @typedef {object} Owner
 * @property {(stream: Task) => void} watch
 * @property {(stream: Task) => void} unwatch
 * @property {(method: string, path: string, init?: {query?: Record<string, unknown>}) => Promise<any>} request
 *   one HTTP call; `path` is a route ("/tasks/{id}") that the Client puts under its baseUrl
 */

/** One task: its id, token and state, its events, its result. */
export class Task {
  /**
   * @param {Owner} owner
   * @param {string} id
   * @param {string | null} token
   * @param {{name?: string | null, state?: string}} [init]
   */
  constructor(owner, id, token, { name = null, state = "PENDING" } = {}) {
    /** @private */ this._owner = owner;
    /** The task id (for a workflow: the workflow id). @type {string} */
    this.id = id;
    /** The task's subscription token (or null when auth is off and none was given). @type {string | null} */
    this.token = token ?? null;
    /** The task name, when known. @type {string | null} */
    this.name = name;
    /** The state of the newest event of this stream's own id. @type {string} */
    this.state = state;
    /** The newest seq delivered (0 before any). @type {number} */
    this.lastSeq = 0;
    /** The newest event delivered, or null. @type {any} */
    this.latest = null;
    /** Every event delivered so far, in seq order (events() replays it). @type {any[]} */
    this.history = [];
    /** @private @type {Map<string, Set<Function>>} */ this._listeners = new Map();
    /** @private @type {{ok: boolean, value?: unknown, error?: Error} | null} */ this._outcome = null;
    /** @private @type {Set<{resolve: Function, reject: Function}>} */ this._waiters = new Set();
    /** @private @type {Set<() => void>} */ this._wakers = new Set();
    /** @private @type {Error | null} */ this._failure = null;
    /** @private */ this._watching = false;
  }

  /** True once the terminal event was delivered. */
  get done() {
    return this._outcome !== null;
  }

  /**
   * Call `listener` for every "event", every "progress" event, every "state" change
   * (`(state, event)`), or an "error" (the stream can no longer be watched). Starts watching.
   * @param {"event" | "progress" | "state" | "error"} type
   * @param {Function} listener
   * @returns {() => void} removes the listener
   */
  on(type, listener) {
    let listeners = this._listeners.get(type);
    if (!listeners) this._listeners.set(type, (listeners = new Set()));
    listeners.add(listener);
    this._watch();
    return () => listeners.delete(listener);
  }

  /**
   * The task's return value once it succeeds; rejects TaskFailedError (FAILURE), TaskRevokedError
   * (REVOKED), SubscriptionError/ConnectionClosedError (cannot watch), the signal's reason on abort,
   * or a DOMException "TimeoutError" after `timeout` ms.
   * @param {{signal?: AbortSignal, timeout?: number}} [options]
   * @returns {Promise<any>}
   */
  result({ signal, timeout } = {}) {
    if (this._outcome) {
      return this._outcome.ok ? Promise.resolve(this._outcome.value) : Promise.reject(this._outcome.error);
    }
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return new Promise((resolve, reject) => {
      this._watch(); // throws (so rejects) once the client is closed
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let timer;
      const onAbort = () => finish(reject, abortReason(signal));
      const waiter = {
        resolve: (/** @type {unknown} */ value) => finish(resolve, value),
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
   * Every event of the stream with seq > `since` (default: all, replaying those already received), in
   * seq order; ends after the terminal event. Throws if the stream can no longer be watched.
   * @param {{since?: number}} [options]
   * @returns {AsyncGenerator<any, void, undefined>}
   */
  async *events({ since = 0 } = {}) {
    let index = 0;
    /** @type {(() => void) | null} */
    let wake = null;
    const waker = () => wake?.();
    this._wakers.add(waker);
    const failureBefore = this._failure;
    try {
      this._watch();
      for (;;) {
        while (index < this.history.length) {
          const event = this.history[index++];
          if (event.seq > since || event.recovered === false) yield event;
        }
        if (this._outcome) return;
        if (this._failure && this._failure !== failureBefore) throw this._failure;
        if (!this._watching) return; // unwatch()
        await new Promise((resolve) => (wake = /** @type {() => void} */ (resolve)));
        wake = null;
      }
    } finally {
      this._wakers.delete(waker);
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

  /** Stop watching: pending result() calls reject with an AbortError; events() iterators end. */
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
   * One frame of this stream, from the socket. Drops what was already seen.
   * @param {Record<string, any>} event
   */
  _deliver(event) {
    if (this._outcome) return;
    const seq = typeof event.seq === "number" ? event.seq : 0;
    // "recovered": false says the history no longer reaches back to what we saw: the server sends
    // its newest snapshot (possibly seq 0 from the result backend), which starts a new baseline.
    if (seq <= this.lastSeq && event.recovered !== false) return;
    this.lastSeq = seq;
    this.latest = event;
    this.history.push(event);
    const own = this._isOwnEvent(event);
    const previous = this.state;
    if (own && typeof event.state === "string") this.state = event.state;
    if (own && this.state !== previous) this._emit("state", this.state, event);
    this._emit("event", event);
    if (event.state === "PROGRESS") this._emit("progress", event);
    if (own && TERMINAL.has(event.state)) this._settle(event);
    this._wakeIterators();
  }

  /**
   * The stream cannot be watched any more (refused subscription, 1008, client closed).
   * @param {Error} error
   */
  _fail(error) {
    if (this._outcome || !this._watching) return;
    this._watching = false;
    this._failure = error;
    this._emit("error", error);
    this._rejectWaiters(error);
    this._wakeIterators();
  }

  /**
   * Whether an event is this stream's own (a workflow's step copies are not).
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
    for (const waiter of [...this._waiters]) {
      if (error) waiter.reject(error);
      else waiter.resolve(event.result);
    }
  }

  /** @private @param {unknown} error */
  _rejectWaiters(error) {
    for (const waiter of [...this._waiters]) waiter.reject(error);
  }

  /** @private */
  _wakeIterators() {
    for (const waker of [...this._wakers]) waker();
  }

  /** @private @param {string} type @param {...unknown} args */
  _emit(type, ...args) {
    for (const listener of [...(this._listeners.get(type) ?? [])]) {
      try {
        listener(...args);
      } catch (error) {
        // A throwing listener must not break delivery to the others or the socket's reader.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}

/** A chain, group or chord: a Task handle over the workflow's stream, plus its steps' ids. */
export class Workflow extends Task {
  /**
   * @param {Owner} owner
   * @param {{workflow_id: string, kind?: string, task_ids?: string[], token?: string}} accepted
   */
  constructor(owner, accepted) {
    super(owner, accepted.workflow_id, accepted.token ?? null, { name: accepted.kind ?? null });
    /** "chain", "group" or "chord". @type {string | null} */
    this.kind = accepted.kind ?? null;
    /** The steps' task ids, in step order. @type {string[]} */
    this.taskIds = [...(accepted.task_ids ?? [])];
  }
}
