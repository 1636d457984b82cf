/**
 * One reconnecting, multiplexed WebSocket to `<baseUrl>/ws`, shared by every watched task of a Client.
 *
 * Guarantees:
 * - opened lazily by the first `watch()`, closed `idleTimeout` ms after nothing is watched any more;
 * - on every (re)connect, each watched id is subscribed with `since` = the last seq its handles have
 *   seen (events and stream chunks share a task's seq), so the server resends exactly what was missed
 *   (a handle drops anything older: no duplicates);
 * - a dropped connection (network error, 1001 server shutdown, 1011, 1013 overloaded, anything else),
 *   and a connection not open within `connectTimeout` ms, is retried with exponential backoff and full
 *   jitter (see backoff.js);
 * - a close that retrying cannot fix (1008 auth/origin refused, 1009 frame too large) fails every
 *   watched handle with a ConnectionClosedError and does not reconnect — except that, with a
 *   `getToken`, a 1008 of a handshake that carried a task token renews that token and connects once
 *   more (see renewal.js), as a refused subscribe renews its own;
 * - its life is told to `on("connected" | "disconnected" | "reconnecting")` listeners.
 * @module
 */

import { BACKOFF_DEFAULTS, backoffDelay } from "./backoff.js";
import { ConnectionClosedError, SubscriptionError } from "./errors.js";
import { Listeners } from "./listeners.js";
import { TokenRenewal } from "./renewal.js";

const OPEN = 1;
const FATAL_CLOSE_CODES = new Set([1008, 1009]);
const CLOSE_POLICY = 1008;
/** The code a connection attempt that timed out is reported with (as a browser reports a failed one). */
const CLOSE_ABNORMAL = 1006;

/** The connection events `MuxSocket.on()` takes. @type {readonly ("connected" | "disconnected" | "reconnecting")[]} */
export const CONNECTION_EVENTS = Object.freeze(["connected", "disconnected", "reconnecting"]);

/** Default of {@link MuxSocketOptions.connectTimeout}: ms a WebSocket may take to open. */
export const CONNECT_TIMEOUT = 10_000;

/**
 * What the socket needs of a watched handle (a Task or Workflow).
 * @typedef {object} Watched
 * @property {string} id        the id subscribed to: a task id or a workflow id
 * @property {string | null} token  the socket replaces it with a renewed one (see getToken)
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
 * @property {number} [connectTimeout]       ms a WebSocket may take to open before it is closed and
 *   retried (default 10000)
 * @property {import("./renewal.js").GetToken} [getToken]  asked for a fresh task token when one is refused
 */

export class MuxSocket {
  /** @param {MuxSocketOptions} options */
  constructor({ url, WebSocket, headers, backoff = {}, idleTimeout = 1000, connectTimeout = CONNECT_TIMEOUT, getToken }) {
    this.url = url;
    this.WebSocket = WebSocket;
    this.headers = headers;
    this.backoff = { ...BACKOFF_DEFAULTS, ...backoff };
    this.idleTimeout = idleTimeout;
    this.connectTimeout = connectTimeout;
    /** @type {Map<string, Set<Watched>>} */
    this._streams = new Map();
    /** @type {any} */
    this._ws = null;
    this._attempt = 0;
    this._openedAt = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._reconnectTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._connectTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._idleTimer = null;
    this._closed = false;
    /** The id whose token the current (or last) handshake carried. @type {string | null} */
    this._handshakeId = null;
    /** The most recently renewed token, preferred for the next handshake. @type {{id: string, token: string} | null} */
    this._freshest = null;
    this._awaitingHandshakeToken = false;
    /** @private */ this._listeners = new Listeners();
    /** @private */ this._subscribeRenewal = new TokenRenewal(getToken);
    /** @private */ this._handshakeRenewal = new TokenRenewal(getToken);
  }

  /** True while a connection is open. */
  get connected() {
    return this._ws !== null && this._ws.readyState === OPEN;
  }

  /**
   * Listen to the connection's life: "connected" (a socket opened), "disconnected" (an open socket was
   * lost: `{code, reason}`; not when the client closes it itself), "reconnecting" (a new attempt is
   * about to be made: `{attempt, delay}`, attempt 1 for the first retry).
   * @param {"connected" | "disconnected" | "reconnecting"} type
   * @param {Function} listener
   * @returns {() => void} removes the listener
   */
  on(type, listener) {
    if (!CONNECTION_EVENTS.includes(type)) {
      throw new TypeError(`svc-client: no connection event ${JSON.stringify(type)} (${CONNECTION_EVENTS.join(", ")})`);
    }
    return this._listeners.add(type, listener);
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
    if (this._ws === null && this._reconnectTimer === null && !this._awaitingHandshakeToken) this._connect();
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

  /**
   * Close for good: every watched handle fails with `error`, and no reconnect follows.
   * @param {Error} error
   */
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
    const handshake = this._handshakeToken();
    this._handshakeId = handshake?.id ?? null;
    const url = handshake ? `${this.url}?token=${encodeURIComponent(handshake.token)}` : this.url;
    let ws;
    try {
      ws = this.headers ? new this.WebSocket(url, [], { headers: this.headers }) : new this.WebSocket(url);
    } catch (error) {
      this.close(/** @type {Error} */ (error)); // a malformed URL: retrying cannot help
      return;
    }
    this._ws = ws;
    this._connectTimer = setTimeout(() => this._connectTimedOut(ws), this.connectTimeout);
    ws.onopen = () => {
      this._clearConnectTimer();
      this._openedAt = Date.now();
      this._subscribeRenewal.reset(); // every subscribe on a new connection is a new attempt
      for (const id of this._streams.keys()) this._subscribe(id);
      this._listeners.emit("connected");
    };
    ws.onmessage = (/** @type {{data: unknown}} */ event) => this._onMessage(event.data);
    ws.onclose = (/** @type {{code: number, reason: string}} */ event) =>
      this._onClose(ws, event.code, event.reason);
    ws.onerror = () => {}; // a close event follows; that is where the policy lives
  }

  /** The id and token the next handshake carries: a freshly renewed one first, else any watched one. */
  _handshakeToken() {
    const fresh = this._freshest;
    if (fresh && this._streams.has(fresh.id)) return fresh;
    const stream = this._allStreams().find((candidate) => candidate.token);
    return stream ? { id: stream.id, token: /** @type {string} */ (stream.token) } : null;
  }

  /** @param {any} ws  a socket that did not open within connectTimeout ms */
  _connectTimedOut(ws) {
    this._connectTimer = null;
    if (ws !== this._ws || ws.readyState === OPEN) return;
    // Retire it first (so its late events are ignored), then go through the usual retry policy.
    ws.onopen = ws.onmessage = ws.onclose = () => {};
    try {
      ws.close();
    } catch {
      // closing a socket that is still connecting may throw in some implementations
    }
    this._onClose(ws, CLOSE_ABNORMAL, `not open within ${this.connectTimeout} ms`);
  }

  /** @param {string} id */
  _subscribe(id) {
    const watchers = [...(this._streams.get(id) ?? [])];
    if (watchers.length === 0 || this._subscribeRenewal.pending(id)) return; // renewal subscribes itself
    const since = Math.min(...watchers.map((stream) => stream.lastSeq));
    const token = this._tokenOf(id);
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
    this._handshakeRenewal.reset(); // the server took this connection
    if (frame.op === "error") {
      this._onRefused(frame.task_id, String(frame.detail ?? "refused"));
      return;
    }
    // A workflow step's copy (an event or a stream chunk) carries its own task_id (the step's) and
    // step_seq: it belongs to the workflow's handles. Every other frame belongs to its task_id's.
    const id = frame.step_seq != null ? frame.workflow_id : frame.task_id;
    const watchers = this._streams.get(id);
    if (!watchers) return; // in flight after an unsubscribe
    this._subscribeRenewal.succeeded(id);
    for (const stream of [...watchers]) stream._deliver(frame);
  }

  /**
   * The server refused to subscribe `id`: renew its token once if it carried one (and a getToken was
   * given), else fail its handles with a SubscriptionError.
   * @param {string} id
   * @param {string} detail
   */
  _onRefused(id, detail) {
    const watchers = this._streams.get(id);
    if (!watchers) return;
    if (this._subscribeRenewal.pending(id)) return; // the stale token's answer; the renewal retries
    const token = this._tokenOf(id);
    if (!token || !this._subscribeRenewal.mayRenew(id)) {
      this._failId(id, new SubscriptionError(id, detail));
      return;
    }
    this._subscribeRenewal.renew(id, token).then(({ token: fresh, error }) => {
      if (this._closed || !this._streams.has(id)) return; // unwatched meanwhile
      if (fresh === null) {
        this._failId(id, new SubscriptionError(id, detail, { cause: error }));
        return;
      }
      this._renewed(id, fresh);
      if (this.connected) this._subscribe(id); // else the next connection's open subscribes with it
    });
  }

  /**
   * Every handle of `id` gets the renewed token (their cancel() and fetchState() use it too).
   * @param {string} id
   * @param {string} token
   */
  _renewed(id, token) {
    for (const stream of this._streams.get(id) ?? []) stream.token = token;
    this._freshest = { id, token };
  }

  /** @param {string} id @param {Error} error */
  _failId(id, error) {
    const watchers = this._streams.get(id);
    if (!watchers) return;
    this._streams.delete(id);
    for (const stream of watchers) stream._fail(error);
    if (this._streams.size === 0) this._scheduleIdle();
  }

  /** @param {any} ws @param {number} code @param {string} reason */
  _onClose(ws, code, reason) {
    if (ws !== this._ws) return; // one we closed on purpose
    this._clearConnectTimer();
    this._ws = null;
    const wasOpen = this._openedAt !== 0;
    if (this._openedAt && Date.now() - this._openedAt >= this.backoff.stableAfter) this._attempt = 0;
    this._openedAt = 0;
    if (wasOpen) this._listeners.emit("disconnected", { code, reason: reason ?? "" });
    if (this._closed || this._streams.size === 0) return;
    if (code !== CLOSE_POLICY) this._handshakeRenewal.reset();
    const handshakeId = this._handshakeId;
    const handshakeToken = handshakeId ? this._tokenOf(handshakeId) : null;
    if (code === CLOSE_POLICY && handshakeId && handshakeToken && this._handshakeRenewal.mayRenew(handshakeId)) {
      this._renewHandshake(handshakeId, handshakeToken, reason ?? "");
      return;
    }
    if (FATAL_CLOSE_CODES.has(code)) {
      this._failAll(new ConnectionClosedError(code, reason ?? ""));
      return;
    }
    this._retry();
  }

  /**
   * A handshake that carried `id`'s token was refused (1008): ask for a fresh token and connect once
   * more with it, or fail everything as any 1008 does.
   * @param {string} id @param {string} stale @param {string} reason
   */
  _renewHandshake(id, stale, reason) {
    this._awaitingHandshakeToken = true;
    this._handshakeRenewal.renew(id, stale).then(({ token: fresh, error }) => {
      this._awaitingHandshakeToken = false;
      if (this._closed || this._streams.size === 0 || this._ws !== null) return;
      if (fresh === null || !this._streams.has(id)) {
        this._failAll(new ConnectionClosedError(CLOSE_POLICY, reason, { cause: error }));
        return;
      }
      this._renewed(id, fresh);
      this._listeners.emit("reconnecting", { attempt: ++this._attempt, delay: 0 });
      this._connect();
    });
  }

  /** Schedule the next connection attempt after a backoff delay. */
  _retry() {
    const delay = backoffDelay(this._attempt++, this.backoff);
    this._listeners.emit("reconnecting", { attempt: this._attempt, delay });
    if (this._closed || this._streams.size === 0) return; // a listener closed or unwatched everything
    this._reconnectTimer = setTimeout(() => this._connect(), delay);
  }

  /** @param {Error} error */
  _failAll(error) {
    const streams = this._allStreams();
    this._streams.clear();
    for (const stream of streams) stream._fail(error);
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

  _clearConnectTimer() {
    if (this._connectTimer !== null) {
      clearTimeout(this._connectTimer);
      this._connectTimer = null;
    }
  }

  /** @param {number} code @param {string} reason */
  _disconnect(code, reason) {
    this._cancelIdle();
    this._clearConnectTimer();
    if (this._reconnectTimer !== null) {
      clearTimeout(this._reconnectTimer);
      this._reconnectTimer = null;
    }
    const ws = this._ws;
    this._ws = null;
    this._attempt = 0;
    this._openedAt = 0;
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        // already closing
      }
    }
  }

  /**
   * The token `id` is subscribed with: the first of its handles' tokens (null when none has one).
   * @param {string} id
   * @returns {string | null}
   */
  _tokenOf(id) {
    for (const stream of this._streams.get(id) ?? []) if (stream.token) return stream.token;
    return null;
  }

  /** @returns {Watched[]} */
  _allStreams() {
    return [...this._streams.values()].flatMap((watchers) => [...watchers]);
  }
}
