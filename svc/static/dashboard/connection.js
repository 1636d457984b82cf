/**
 * The dashboard's socket: `/ws/dashboard`, authenticated by a first `{"op": "auth"}` frame, read for
 * snapshot and update frames, and reconnected on any close but a refused key (1008) with the JS SDK's
 * own reconnect policy (../sdk/backoff.js: full jitter, doubling, capped; the attempt count resets
 * once a connection has stayed open `stableAfter` ms).
 * @module
 */

import { BACKOFF_DEFAULTS, backoffDelay } from "../sdk/backoff.js";

/** The server refused the API key: retrying cannot fix it. */
export const CLOSE_POLICY = 1008;

/**
 * @typedef {"connecting" | "live" | "reconnecting" | "auth"} Status
 * @typedef {object} ConnectionOptions
 * @property {string} url                       the socket's URL (ws: or wss:)
 * @property {() => string} key                 the API key to show ("" for none)
 * @property {(frame: any) => void} frame       a snapshot or update frame arrived
 * @property {(status: Status, text: string, title?: string) => void} status  the status changed
 * @property {import("../sdk/backoff.js").BackoffOptions} [backoff]  default: the SDK's defaults
 */

/** @param {ConnectionOptions} options */
export function createConnection({ url, key, frame, status, backoff = BACKOFF_DEFAULTS }) {
  const stableAfter = backoff.stableAfter ?? BACKOFF_DEFAULTS.stableAfter;
  let socket = null;
  let shown = "";      // the key the current socket showed
  let attempt = 0;
  let openedAt = 0;
  let timer = null;
  let current = "connecting";
  const report = (name, text, title) => { current = name; status(name, text, title); };

  function connect() {
    clearTimeout(timer);
    timer = null;
    const opened = new WebSocket(url);
    socket = opened;
    shown = key();
    if (current !== "auth") report(attempt ? "reconnecting" : "connecting", attempt ? "reconnecting" : "connecting");
    opened.addEventListener("open", () => {
      openedAt = Date.now();
      // Always sent: with auth on, a missing key is refused at once instead of after the server's wait;
      // with auth off the server ignores it.
      opened.send(JSON.stringify({ op: "auth", key: shown }));
    });
    opened.addEventListener("message", (message) => {
      if (opened !== socket) return;
      let parsed;
      try { parsed = JSON.parse(message.data); } catch { return; }
      if (parsed.op === "snapshot") {
        frame(parsed);
        report("live", "live");
      } else if (parsed.op === "update") {
        frame(parsed);
      }
    });
    opened.addEventListener("close", (event) => {
      if (opened !== socket) return;
      socket = null;
      if (openedAt && Date.now() - openedAt >= stableAfter) attempt = 0;
      openedAt = 0;
      if (event.code === CLOSE_POLICY) { needKey(); return; }
      const delay = backoffDelay(attempt++, backoff);
      report("reconnecting", `reconnecting (${event.code || "network"})`,
        `closed with ${event.code} ${event.reason}; next attempt in ${(delay / 1000).toFixed(1)} s`);
      timer = setTimeout(connect, delay);
    });
  }

  /** The server wants a key it accepts: say so, and wait for restart(). */
  function needKey() {
    report("auth", "API key required");
  }

  /** Drop the socket and connect again now (a new key). */
  function restart() {
    const old = socket;
    socket = null;
    old?.close(1000, "new key");
    attempt = 0;
    report("connecting", "connecting");
    connect();
  }

  return {
    connect,
    needKey,
    restart,
    /** The key the current socket showed. */
    get key() { return shown; },
    /** Whether a socket is open or opening. */
    get connected() { return socket !== null; },
  };
}
