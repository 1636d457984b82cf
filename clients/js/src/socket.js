/**
 * One reconnecting, multiplexed WebSocket to `<baseUrl>/ws`, shared by every watched task of a Client.
 *
 * Guarantees:
 * - opened lazily by the first `watch()`, closed `idleTimeout` ms after nothing is watched any more;
 * - on every (re)connect, each watched id is subscribed with `since` = the last seq its handles have
 *   seen (events and stream chunks share a task's seq), so the server resends exactly what was missed
 *   (a handle drops anything older: no duplicates);
 * - a dropped connection (network error, 1001 server shutdown, 1011, 1013 overloaded, anything else)
 *   is retried with exponential backoff and full jitter (see backoff.js);
 * - a close that retrying cannot fix (1008 auth/origin refused, 1009 frame too large) fails every
 *   watched handle with a ConnectionClosedError and does not reconnect.
 * @module
 */

import { BACKOFF_DEFAULTS, backoffDelay } from "./backoff.js";
import { ConnectionClosedError, SubscriptionError } from "./errors.js";

const OPEN = 1;
const FATAL_CLOSE_CODES = new Set([1008, 1009]);

/**
 * What the socket needs of a watched handle (a Task or Workflow).
 * @typedef {object} Watched
 * @property {string} id        the id subscribed to: a task id or a workflow id
 * @property {string | null} token
 * @property {number} lastSeq   the newest seq the handle has delivered
 * @property {(frame: Record<string, any>) => void} _deliver  one frame for it (an event or a stream chunk)
 * @property {(error: Error) => void} _fail  the handle can no longer watch
 */

/**
 * @typedef {object} MuxSocketOptions
 * @property {string} url                    ws(s)://host[/prefix]/ws, without a query
 * @property {any} WebSocket                 a WHATWG-compatible WebSocket class
 * @property {Record<string, string>} [headers]  handshake headers (honoured by `ws`; browsers ignore them)
 * @property {import("./backoff.js").BackoffOptions} [backoff]
 * @property {number} [idleTimeout]          ms to keep the socket open with nothing watched (default 1000)
 */

export class MuxSocket {
  /** @param {MuxSocketOptions} options */
  constructor({ url, WebSocket, headers, backoff = {}, idleTimeout = 1000 }) {
    this.url = url;
    this.WebSocket = WebSocket;
    this.headers = headers;
    this.backoff = { ...BACKOFF_DEFAULTS, ...backoff };
    this.idleTimeout = idleTimeout;
    /** @type {Map<string, Set<Watched>>} */
    this._streams = new Map();
    /** @type {any} */
    this._ws = null;
    this._attempt = 0;
    this._openedAt = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._reconnectTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._idleTimer = null;
    this._closed = false;
  }

  /** True while a connection is open. */
  get connected() {
    return this._ws !== null && this._ws.readyState === OPEN;
  }

  /**
   * Start delivering frames of `stream.id` to `stream` (subscribing with since = stream.lastSeq).
   * @param {Watched} stream
   */
  watch(stream) {
    if (this._closed) throw new DOMException("svc-client: the client is closed", "AbortError");
    this._cancelIdle();
    let watchers = this._streams.get(stream.id);
    if (!watchers) this._streams.set(stream.id, (watchers = new Set()));
    if (watchers.has(stream)) return;
    watchers.add(stream);
    if (this._ws === null && this._reconnectTimer === null) this._connect();
    else if (this.connected) this._subscribe(stream.id);
  }

  /**
   * Stop delivering to `stream`; unsubscribe when it was the last watcher of its id.
   * @param {Watched} stream
   */
  unwatch(stream) {
    const watchers = this._streams.get(stream.id);
    if (!watchers || !watchers.delete(stream)) return;
    if (watchers.size === 0) {
      this._streams.delete(stream.id);
      if (this.connected) this._send({ op: "unsubscribe", task_id: stream.id });
    }
    if (this._streams.size === 0) this._scheduleIdle();
  }

  /** Close for good: every watched handle fails with `error`, and no reconnect follows. */
  close(error) {
    this._closed = true;
    const streams = this._allStreams();
    this._streams.clear();
    this._disconnect(1000, "client closed");
    for (const stream of streams) stream._fail(error);
  }

  _connect() {
    this._reconnectTimer = null;
    // With auth on, a browser (which cannot send headers) is let in by any task token it holds;
    // every subscribe frame then carries its own token.
    const token = this._allStreams().find((stream) => stream.token)?.token;
    const url = token ? `${this.url}?token=${encodeURIComponent(token)}` : this.url;
    let ws;
    try {
      ws = this.headers ? new this.WebSocket(url, [], { headers: this.headers }) : new this.WebSocket(url);
    } catch (error) {
      this.close(/** @type {Error} */ (error)); // a malformed URL: retrying cannot help
      return;
    }
    this._ws = ws;
    ws.onopen = () => {
      this._openedAt = Date.now();
      for (const id of this._streams.keys()) this._subscribe(id);
    };
    ws.onmessage = (/** @type {{data: unknown}} */ event) => this._onMessage(event.data);
    ws.onclose = (/** @type {{code: number, reason: string}} */ event) =>
      this._onClose(ws, event.code, event.reason);
    ws.onerror = () => {}; // a close event follows; that is where the policy lives
  }

  /** @param {string} id */
  _subscribe(id) {
    const watchers = [...(this._streams.get(id) ?? [])];
    if (watchers.length === 0) return;
    const since = Math.min(...watchers.map((stream) => stream.lastSeq));
    const token = watchers.find((stream) => stream.token)?.token ?? null;
    this._send({ op: "subscribe", task_id: id, token, since: Math.max(0, since) });
  }

  /** @param {object} frame */
  _send(frame) {
    this._ws.send(JSON.stringify(frame));
  }

  /** @param {unknown} data */
  _onMessage(data) {
    let frame;
    try {
      frame = JSON.parse(typeof data === "string" ? data : String(data));
    } catch {
      return; // not ours to interpret
    }
    if (frame === null || typeof frame !== "object") return;
    if (frame.op === "error") {
      const watchers = this._streams.get(frame.task_id);
      if (!watchers) return;
      this._streams.delete(frame.task_id);
      const error = new SubscriptionError(frame.task_id, String(frame.detail ?? "refused"));
      for (const stream of watchers) stream._fail(error);
      if (this._streams.size === 0) this._scheduleIdle();
      return;
    }
    // A workflow step's copy (an event or a stream chunk) carries its own task_id (the step's) and
    // step_seq: it belongs to the workflow's handles. Every other frame belongs to its task_id's.
    const id = frame.step_seq != null ? frame.workflow_id : frame.task_id;
    const watchers = this._streams.get(id);
    if (!watchers) return; // in flight after an unsubscribe
    for (const stream of [...watchers]) stream._deliver(frame);
  }

  /** @param {any} ws @param {number} code @param {string} reason */
  _onClose(ws, code, reason) {
    if (ws !== this._ws) return; // one we closed on purpose
    this._ws = null;
    if (this._closed || this._streams.size === 0) return;
    if (this._openedAt && Date.now() - this._openedAt >= this.backoff.stableAfter) this._attempt = 0;
    this._openedAt = 0;
    if (FATAL_CLOSE_CODES.has(code)) {
      const streams = this._allStreams();
      this._streams.clear();
      const error = new ConnectionClosedError(code, reason ?? "");
      for (const stream of streams) stream._fail(error);
      return;
    }
    const delay = backoffDelay(this._attempt++, this.backoff);
    this._reconnectTimer = setTimeout(() => this._connect(), delay);
  }

  _scheduleIdle() {
    this._cancelIdle();
    if (this._reconnectTimer !== null) {
      clearTimeout(this._reconnectTimer);
      this._reconnectTimer = null;
    }
    this._idleTimer = setTimeout(() => {
      this._idleTimer = null;
      if (this._streams.size === 0) this._disconnect(1000, "nothing watched");
    }, this.idleTimeout);
  }

  _cancelIdle() {
    if (this._idleTimer !== null) {
      clearTimeout(this._idleTimer);
      this._idleTimer = null;
    }
  }

  /** @param {number} code @param {string} reason */
  _disconnect(code, reason) {
    this._cancelIdle();
    if (this._reconnectTimer !== null) {
      clearTimeout(this._reconnectTimer);
      this._reconnectTimer = null;
    }
    const ws = this._ws;
    this._ws = null;
    this._attempt = 0;
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        // already closing
      }
    }
  }

  /** @returns {Watched[]} */
  _allStreams() {
    return [...this._streams.values()].flatMap((watchers) => [...watchers]);
  }
}
