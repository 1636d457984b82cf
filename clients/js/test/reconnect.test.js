// Reconnects against real processes: the API is killed (or shut down) mid-task and started again on
// the same port; the SDK resubscribes with since = last seq and callers see every event (and every
// stream chunk) exactly once, and its connection listeners hear every step. Also: a server that never
// completes the handshake (connectTimeout), and task tokens that expire while watched (getToken).

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";

import { Client } from "../src/index.js";
import { PYTHON, REPO_ROOT, Stack, countingWebSocket } from "./harness.js";

const T = { timeout: 90_000 };
/** @type {Stack} */
let stack;

before(async () => {
  stack = await new Stack().start();
}, { timeout: 120_000 });

after(() => stack?.stop(), { timeout: 60_000 });

/**
 * Run count_to(20) while `disrupt` runs after the third progress event; return what the caller saw.
 * @param {() => Promise<void>} disrupt
 */
async function countThrough(disrupt) {
  const { WebSocket: Counting, instances } = countingWebSocket(WebSocket);
  const client = new Client({ baseUrl: stack.baseUrl, WebSocket: Counting, backoff: { base: 100, cap: 1000 } });
  try {
    const task = await client.submit("count_to", { args: [20], kwargs: { delay: 0.1 } });
    /** @type {any[]} */ const events = [];
    /** @type {() => void} */ let third = () => {};
    const thirdSeen = new Promise((done) => (third = /** @type {() => void} */ (done)));
    task.on("event", (ev) => {
      events.push(ev);
      if (ev.state === "PROGRESS" && ev.progress.current === 3) third();
    });
    const result = task.result({ timeout: 60_000 });
    await thirdSeen;
    await disrupt();
    assert.equal(await result, 20);
    return { events, sockets: instances.length };
  } finally {
    client.close();
  }
}

/** @param {any[]} events */
function assertEveryEventOnce(events) {
  const seqs = events.map((ev) => ev.seq);
  assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), `seqs ${seqs}`);
  const progress = events.filter((ev) => ev.state === "PROGRESS").map((ev) => ev.progress.current);
  assert.deepEqual(progress, Array.from({ length: 20 }, (_, i) => i + 1));
  assert.equal(events.at(-1).state, "SUCCESS");
  assert.equal(events.filter((ev) => ev.state === "SUCCESS").length, 1);
}

test("after the API is SIGKILLed and restarted, every remaining event arrives once, in order", T, async () => {
  const { events, sockets } = await countThrough(() => stack.restartApi({ kill: "SIGKILL" }));
  assert.ok(sockets >= 2, `reconnected (${sockets} sockets)`);
  assertEveryEventOnce(events);
});

test("after a graceful API shutdown (close 1001) the SDK reconnects the same way", T, async () => {
  const { events, sockets } = await countThrough(() => stack.restartApi({ kill: "SIGTERM" }));
  assert.ok(sockets >= 2, `reconnected (${sockets} sockets)`);
  assertEveryEventOnce(events);
});

test("after the API is SIGKILLed mid-stream and restarted, the text arrives whole, each chunk once, in order", T, async () => {
  const { WebSocket: Counting, instances } = countingWebSocket(WebSocket);
  const client = new Client({ baseUrl: stack.baseUrl, WebSocket: Counting, backoff: { base: 100, cap: 1000 } });
  try {
    const words = 80;
    const task = await client.submit("stream_text", { kwargs: { words, delay: 0.05 } });
    /** @type {number[]} */ const seen = [];
    /** @type {() => void} */ let tenth = () => {};
    const tenthSeen = new Promise((done) => (tenth = /** @type {() => void} */ (done)));
    task.on("stream", (chunk) => {
      seen.push(chunk.seq);
      if (seen.length === 10) tenth();
    });
    const text = task.text("output", { timeout: 60_000 });
    await tenthSeen;
    await stack.restartApi({ kill: "SIGKILL" });
    const [whole, result] = await Promise.all([text, task.result({ timeout: 60_000 })]);
    assert.equal(whole, result);
    assert.equal(seen.length, words, "every word once");
    assert.ok(seen.every((seq, i) => i === 0 || seq > seen[i - 1]), `in order: ${seen}`);
    assert.ok(instances.length >= 2, `reconnected (${instances.length} sockets)`);
  } finally {
    client.close();
  }
});

test("connection listeners hear the restart: disconnected {code}, reconnecting {attempt, delay}, connected", T, async () => {
  const client = new Client({ baseUrl: stack.baseUrl, WebSocket, backoff: { base: 100, cap: 1000 } });
  /** @type {any[]} */ const life = [];
  client.on("connected", () => life.push("connected"));
  client.on("disconnected", ({ code }) => life.push(`disconnected ${code}`));
  client.on("reconnecting", ({ attempt, delay }) => life.push(`reconnecting ${attempt} ${delay >= 0}`));
  try {
    const task = await client.submit("count_to", { args: [20], kwargs: { delay: 0.1 } });
    const result = task.result({ timeout: 60_000 });
    await new Promise((done) => task.on("progress", (ev) => ev.progress.current === 3 && done(undefined)));
    await stack.restartApi({ kill: "SIGTERM" });
    assert.equal(await result, 20);
    assert.equal(life[0], "connected");
    assert.equal(life[1], "disconnected 1001", `a graceful shutdown says 1001: ${life}`);
    assert.equal(life[2], "reconnecting 1 true");
    assert.equal(life.at(-1), "connected", `${life}`);
    assert.ok(life.slice(2, -1).every((step) => step.startsWith("reconnecting")), `only retries between: ${life}`);
  } finally {
    client.close();
  }
});

test("a server that accepts TCP but never answers the handshake is given up on after connectTimeout, and retried", T, async () => {
  /** @type {Set<import("node:net").Socket>} */ const held = new Set();
  const silent = createServer((socket) => held.add(socket)); // reads nothing, answers nothing
  silent.listen(0, "127.0.0.1");
  await once(silent, "listening");
  const { port } = /** @type {import("node:net").AddressInfo} */ (silent.address());
  const client = new Client({ baseUrl: `http://127.0.0.1:${port}`, WebSocket, connectTimeout: 200, backoff: { base: 10, cap: 20 } });
  try {
    /** @type {number[]} */ const attempts = [];
    const started = Date.now();
    const enough = new Promise((done) => client.on("reconnecting", ({ attempt }) => attempts.push(attempt) === 3 && done(undefined)));
    client.task("some-task", null).on("event", () => {});
    await enough;
    const took = Date.now() - started;
    assert.deepEqual(attempts, [1, 2, 3]);
    assert.ok(took >= 3 * 200 && took < 3000, `three timeouts of 200 ms took ${took} ms`);
    assert.equal(client.connected, false);
  } finally {
    client.close();
    for (const socket of held) socket.destroy();
    silent.close();
  }
});

test("watchers outlive their tokens: expired at the handshake (1008) and at subscribe, getToken renews both", { timeout: 120_000 }, async () => {
  const secret = "js-renewal-secret";
  const api = await stack.startApi({
    name: "api-short-tokens",
    env: { SVC_API_KEYS: "renewal-key", SVC_SECRET_KEY: secret, SVC_TOKEN_TTL: "2" },
  });
  const run = promisify(execFile);
  /** What the app's backend does: mint a fresh token for a task id (svc's own token code). */
  const mint = async (/** @type {string} */ id) => {
    const code = "import sys; from svc.edge import tokens; print(tokens.issue(sys.argv[1].encode(), [sys.argv[2]], 600))";
    const { stdout } = await run(PYTHON, ["-c", code, secret, id], { cwd: REPO_ROOT, env: stack.env() });
    return stdout.trim();
  };
  const backend = new Client({ baseUrl: api.baseUrl, apiKey: "renewal-key", WebSocket });
  /** @type {string[]} */ const asked = [];
  const page = new Client({
    baseUrl: api.baseUrl,
    WebSocket, // like a browser: no API key, task tokens only
    backoff: { base: 100, cap: 500 },
    getToken: async (id) => {
      asked.push(id);
      return mint(id);
    },
  });
  try {
    const [one, two] = await Promise.all([
      backend.submit("count_to", { args: [60], kwargs: { delay: 0.1 } }),
      backend.submit("count_to", { args: [60], kwargs: { delay: 0.1 } }),
    ]);
    const first = page.task(one.id, one.token);
    const second = page.task(two.id, two.token);
    const results = Promise.all([first.result({ timeout: 60_000 }), second.result({ timeout: 60_000 })]);
    await new Promise((done) => first.on("progress", (ev) => ev.progress.current === 5 && done(undefined)));
    await new Promise((done) => setTimeout(done, 2500)); // both tokens expire
    await api.stop("SIGKILL", 5000);
    const again = await stack.startApi({
      port: api.port,
      name: "api-short-tokens-again",
      env: { SVC_API_KEYS: "renewal-key", SVC_SECRET_KEY: secret, SVC_TOKEN_TTL: "2" },
    });
    try {
      assert.deepEqual(await results, [60, 60]);
      assert.deepEqual(asked.sort(), [one.id, two.id].sort(), "each expired token renewed once");
      assert.notEqual(first.token, one.token, "the handle holds the renewed token");
      const progress = first.history.filter((ev) => ev.state === "PROGRESS").map((ev) => ev.progress.current);
      assert.deepEqual(progress, Array.from({ length: 60 }, (_, i) => i + 1), "no gap across the renewal");
    } finally {
      await again.stop();
    }
  } finally {
    page.close();
    backend.close();
  }
});
