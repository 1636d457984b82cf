// An in-memory WebSocket for the unit tests: it records what the client sends, and the test plays
// the server (open, receive, drop). The integration suites run the same paths against real servers.

import { Client } from "../src/index.js";

/** A WebSocket that opens, receives and closes only when the test says so. */
export class FakeWebSocket {
  /** @type {FakeWebSocket[]} */
  static instances = [];

  /** @param {string} url */
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    /** @type {any[]} */ this.sent = [];
    /** Whether the client called close() on it. */
    this.closedByClient = false;
    /** @type {((event: any) => void) | null} */ this.onopen = null;
    /** @type {((event: any) => void) | null} */ this.onmessage = null;
    /** @type {((event: any) => void) | null} */ this.onclose = null;
    /** @type {((event: any) => void) | null} */ this.onerror = null;
    FakeWebSocket.instances.push(this);
  }

  /** @param {string} data */
  send(data) {
    this.sent.push(JSON.parse(data));
  }

  close() {
    this.readyState = 3;
    this.closedByClient = true;
  }

  open() {
    this.readyState = 1;
    this.onopen?.({});
  }

  /** @param {object} frame */
  receive(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** @param {number} code */
  drop(code, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

/**
 * A Client on FakeWebSocket (instances reset), with tiny backoff delays and no idle wait.
 * @param {import("../src/client.js").ClientOptions} [options]
 */
export function fakeClient(options = {}) {
  FakeWebSocket.instances = [];
  return new Client({
    baseUrl: "http://127.0.0.1:1",
    WebSocket: FakeWebSocket,
    fetch: async () => new Response("{}"),
    backoff: { base: 1, cap: 2 },
    idleTimeout: 0,
    ...options,
  });
}

/** Resolves once `predicate()` is true (checked every ms). @param {() => boolean} predicate */
export async function until(predicate) {
  while (!predicate()) await new Promise((done) => setTimeout(done, 1));
}

/** An event frame of task `id`. */
export const event = (/** @type {string} */ id, /** @type {number} */ seq, state = "STARTED", extra = {}) => ({
  task_id: id, name: "t", seq, state, ts: 0, result: null, error: null, progress: null, retries: 0, worker: null, ...extra,
});
