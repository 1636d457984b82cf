// Reconnects against real processes: the API is killed (or shut down) mid-task and started again on
// the same port; the SDK resubscribes with since = last seq and callers see every event (and every
// stream chunk) exactly once.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";

import { Client } from "../src/index.js";
import { Stack, countingWebSocket } from "./harness.js";

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
