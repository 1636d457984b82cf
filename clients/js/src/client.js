/**
 * The Client: HTTP calls (submit, workflows, cancel, state), the one shared WebSocket and its life
 * (`on("connected" | "disconnected" | "reconnecting")`), and the catalogue's runtimes for etas.
 * @module
 */

import { CATALOGUE_MAX_AGE, RuntimeCatalogue } from "./catalogue.js";
import { NetworkError, errorFromResponse } from "./errors.js";
import { CONNECT_TIMEOUT, MuxSocket } from "./socket.js";
import { HISTORY_LIMIT, Task } from "./task.js";
import { Workflow } from "./workflow.js";

/**
 * @typedef {object} ClientOptions
 * @property {string} [baseUrl]  where svc is served: an origin ("http://127.0.0.1:8000") or the prefix it is
 *   mounted at ("http://127.0.0.1:8000/svc"; in a page also "/svc", resolved against location); every HTTP
 *   and WebSocket URL is built under it; a trailing slash is ignored (default: location.origin)
 * @property {string} [apiKey]   sent as `Authorization: Bearer` on every HTTP call, and on the WebSocket
 *   handshake where the WebSocket class can send headers (the `ws` package); browsers rely on task tokens
 * @property {any} [WebSocket]   a WHATWG WebSocket class (default: globalThis.WebSocket; on Node 20 pass
 *   the `ws` package's)
 * @property {typeof fetch} [fetch]  default: globalThis.fetch
 * @property {import("./backoff.js").BackoffOptions} [backoff]  the reconnect policy
 * @property {number} [idleTimeout]  ms the socket stays open once nothing is watched (default 1000)
 * @property {number} [connectTimeout]  ms a WebSocket may take to open before it is closed and retried
 *   through the backoff (default 10000)
 * @property {import("./renewal.js").GetToken} [getToken]  asked for a fresh token of a task (or
 *   workflow) id when the server refuses the token it was watched with (expired): a new token is tried
 *   once; null, undefined, the same token or a throw let the refusal stand (default: none)
 * @property {number} [historyLimit]  the most events each handle's `history` keeps, and the backlog at
 *   which a slow events() iterator has its unread PROGRESS coalesced (default 1000)
 */

/**
 * `baseUrl` made absolute (a relative one resolves against the page), without query, fragment or
 * trailing slash; the page's origin when none (or "") is given.
 * @param {string | undefined} baseUrl
 * @returns {string}
 */
function resolveBase(baseUrl) {
  const page = globalThis.location?.href;
  if (!baseUrl) {
    if (!page) throw new TypeError("svc-client: baseUrl is required outside a browser page");
    return globalThis.location.origin;
  }
  let url;
  try {
    url = new URL(baseUrl, page);
  } catch (error) {
    const hint = page ? "" : " (a relative one needs a browser page to resolve against)";
    throw new TypeError(`svc-client: baseUrl ${JSON.stringify(baseUrl)} is not a URL${hint}`, { cause: error });
  }
  url.search = "";
  url.hash = "";
  return url.href.replace(/\/+$/, "");
}

/**
 * The URL of route `path` under `base`, keeping the base's path: ("http://h/svc", "/tasks/add") gives
 * http://h/svc/tasks/add, where `new URL(path, base)` would drop "/svc".
 * @param {string} base  as resolveBase returns it
 * @param {string} path
 * @returns {URL}
 */
function urlUnder(base, path) {
  return new URL(`${base}/${path.replace(/^\/+/, "")}`);
}

export class Client {
  /** @param {ClientOptions} [options] */
  constructor({
    baseUrl,
    apiKey,
    WebSocket,
    fetch,
    backoff,
    idleTimeout,
    connectTimeout = CONNECT_TIMEOUT,
    getToken,
    historyLimit = HISTORY_LIMIT,
  } = {}) {
    /** The absolute base every URL is built under, without a trailing slash. @type {string} */
    this.baseUrl = resolveBase(baseUrl);
    /** @private */ this._apiKey = apiKey || null;
    /** @private */ this._fetch = fetch ?? globalThis.fetch?.bind(globalThis);
    if (typeof this._fetch !== "function") {
      throw new TypeError("svc-client: no fetch available: pass { fetch } (Node >= 18 has one built in)");
    }
    const WebSocketClass = WebSocket ?? globalThis.WebSocket;
    if (typeof WebSocketClass !== "function") {
      throw new TypeError(
        "svc-client: no WebSocket available: pass { WebSocket } — on Node, " +
          '`import { WebSocket } from "ws"` and `new Client({ baseUrl, WebSocket })`',
      );
    }
    const wsUrl = urlUnder(this.baseUrl, "/ws");
    wsUrl.protocol = wsUrl.protocol === "https:" ? "wss:" : "ws:";
    /** @private */
    this._socket = new MuxSocket({
      url: wsUrl.href,
      WebSocket: WebSocketClass,
      headers: this._apiKey ? { Authorization: `Bearer ${this._apiKey}` } : undefined,
      backoff,
      idleTimeout,
      connectTimeout,
      getToken,
    });
    if (!(historyLimit >= 1)) throw new RangeError("svc-client: historyLimit must be at least 1");
    /** @private */
    this._owner = {
      watch: (/** @type {Task} */ task) => this._socket.watch(task),
      unwatch: (/** @type {Task} */ task) => this._socket.unwatch(task),
      request: this.request.bind(this),
      historyLimit,
      catalogue: new RuntimeCatalogue(() => this.request("GET", "/tasks"), { maxAge: CATALOGUE_MAX_AGE }),
    };
  }

  /** True while the shared WebSocket is open. */
  get connected() {
    return this._socket.connected;
  }

  /**
   * Listen to the shared WebSocket's life: "connected" (it opened; every watched task is subscribed
   * again), "disconnected" (an open socket was lost: `{code, reason}`; not when the client closes it
   * for being idle or on close()), "reconnecting" (a new attempt is about to start: `{attempt, delay}`,
   * attempt 1 for the first retry since the last stable connection, delay in ms).
   * @param {"connected" | "disconnected" | "reconnecting"} type
   * @param {Function} listener
   * @returns {() => void} removes the listener
   */
  on(type, listener) {
    return this._socket.on(type, listener);
  }

  /**
   * Submit task `name` (POST /tasks/{name}); resolves with its handle, state "PENDING".
   * @param {string} name
   * @param {{args?: unknown[], kwargs?: Record<string, unknown>, options?: Record<string, unknown>,
   *   idempotencyKey?: string, signal?: AbortSignal}} [init]
   * @returns {Promise<Task>}
   */
  async submit(name, { args = [], kwargs = {}, options = {}, idempotencyKey, signal } = {}) {
    const accepted = await this.request("POST", `/tasks/${encodeURIComponent(name)}`, {
      body: { args, kwargs, options },
      headers: idempotencyKey ? { "Idempotency-Key": idempotencyKey } : undefined,
      signal,
    });
    return new Task(this._owner, accepted.task_id, accepted.token, { name: accepted.name ?? name });
  }

  /**
   * A handle for a task that already exists (submitted elsewhere), from its id and token.
   * @param {string} id
   * @param {string | null} [token]
   * @returns {Task}
   */
  task(id, token = null) {
    return new Task(this._owner, id, token, { state: "PENDING" });
  }

  /**
   * Run a chain (`{chain: [...]}`), a group (`{group: [...]}`) or a chord (`{group, callback}`)
   * (POST /workflows); resolves with a handle whose result() is the workflow's.
   * @param {{chain?: object[], group?: object[], callback?: object}} spec
   * @param {{signal?: AbortSignal}} [init]
   * @returns {Promise<Workflow>}
   */
  async workflow(spec, { signal } = {}) {
    const accepted = await this.request("POST", "/workflows", { body: spec, signal });
    return new Workflow(this._owner, accepted);
  }

  /**
   * A handle for a workflow that already exists, from the submit answer's fields.
   * @param {string} id
   * @param {string | null} [token]
   * @param {string[]} [taskIds]
   * @returns {Workflow}
   */
  workflowHandle(id, token = null, taskIds = []) {
    return new Workflow(this._owner, { workflow_id: id, token: token ?? undefined, task_ids: taskIds });
  }

  /**
   * One HTTP call to the API; resolves with the parsed JSON body, rejects with a typed HttpError
   * (problem details) or a NetworkError.
   * @param {string} method
   * @param {string} path  a route of the SPEC ("/tasks"), taken under baseUrl's path
   * @param {{query?: Record<string, unknown>, body?: unknown, headers?: Record<string, string>,
   *   signal?: AbortSignal}} [init]
   */
  async request(method, path, { query, body, headers, signal } = {}) {
    const url = urlUnder(this.baseUrl, path);
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value != null) url.searchParams.set(key, String(value));
    }
    /** @type {Record<string, string>} */
    const allHeaders = { accept: "application/json", ...headers };
    if (body !== undefined) allHeaders["content-type"] = "application/json";
    if (this._apiKey) allHeaders.authorization = `Bearer ${this._apiKey}`;
    const shown = `${url.origin}${url.pathname}`; // never the token in messages
    let response;
    try {
      response = await this._fetch(url.href, {
        method,
        headers: allHeaders,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (error) {
      if (signal?.aborted) throw error;
      throw new NetworkError(`${method} ${shown} failed: ${/** @type {Error} */ (error).message}`, {
        cause: error,
      });
    }
    if (!response.ok) throw await errorFromResponse(response, method, shown);
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }

  /** Close the WebSocket; every pending result() rejects with an AbortError and watching stops. */
  close() {
    this._socket.close(new DOMException("the client was closed", "AbortError"));
  }
}
