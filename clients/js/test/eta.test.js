// Time left: the estimator (eta.js) and the catalogue's runtimes (catalogue.js) on fake clocks, and a
// handle's `eta` (time-left.js) against an in-memory server.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { RuntimeCatalogue, runtimeFrom } from "../src/catalogue.js";
import { EtaEstimator, remainingFromProgress, remainingFromRuntime } from "../src/eta.js";
import { FakeWebSocket, event, fakeClient, until } from "./fake-websocket.js";

const T = { timeout: 10_000 };
const close = (/** @type {number | null} */ actual, /** @type {number} */ expected, what = "") =>
  assert.ok(actual !== null && Math.abs(actual - expected) < 1e-9, `${what} ${actual} ≈ ${expected}`);

const started = (ts = 100) => ({ state: "STARTED", ts });
const progress = (/** @type {number} */ ts, /** @type {number} */ current, /** @type {number | null} */ total = 10) => ({
  state: "PROGRESS", ts, progress: { current, total, message: null },
});

describe("remainingFromProgress / remainingFromRuntime", () => {
  test("the work left over the rate since the reference point", T, () => {
    assert.equal(remainingFromProgress({ ts: 0, current: 0 }, { ts: 4, current: 2, total: 10 }), 16);
    assert.equal(remainingFromProgress({ ts: 10, current: 5 }, { ts: 12, current: 6, total: 10 }), 8);
    assert.equal(remainingFromProgress({ ts: 0, current: 0 }, { ts: 4, current: 10, total: 10 }), 0, "done is 0");
    assert.equal(remainingFromProgress({ ts: 0, current: 0 }, { ts: 4, current: 2, total: null }), null, "no total");
    assert.equal(remainingFromProgress({ ts: 0, current: 2 }, { ts: 4, current: 2, total: 10 }), null, "no progress");
    assert.equal(remainingFromProgress({ ts: 4, current: 0 }, { ts: 4, current: 2, total: 10 }), null, "no time");
  });

  test("runtimes: p50 - elapsed, then p95 - elapsed, then unknown", T, () => {
    const runtime = { p50: 10, p95: 30, runs: 12 };
    assert.equal(remainingFromRuntime(runtime, 0), 10);
    assert.equal(remainingFromRuntime(runtime, 4), 6);
    assert.equal(remainingFromRuntime(runtime, 12), 18, "past p50, p95 bounds it");
    assert.equal(remainingFromRuntime(runtime, 31), null, "longer than 95% of recent runs");
    assert.equal(remainingFromRuntime(runtime, -3), 10, "a clock behind the worker's counts as 0 elapsed");
    assert.equal(remainingFromRuntime(null, 1), null);
    assert.equal(remainingFromRuntime({ p50: 1, p95: 2, runs: 0 }, 0), null, "no runs, no estimate");
  });
});

describe("EtaEstimator", () => {
  test("a steady rate gives the exact time left at every step, and 0 at the end", T, () => {
    const eta = new EtaEstimator();
    eta.observe(started(100));
    assert.equal(eta.running, true);
    assert.equal(eta.needsRuntime, true, "no progress yet: runtimes are wanted");
    for (let current = 1; current <= 10; current++) {
      eta.observe(progress(100 + 2 * current, current));
      close(eta.estimate(null, 0), 2 * (10 - current), `at ${current}/10`);
    }
    assert.equal(eta.needsRuntime, false);
    eta.observe({ state: "SUCCESS", ts: 121 });
    assert.equal(eta.running, false);
    assert.equal(eta.estimate({ p50: 5, p95: 9, runs: 3 }, 121), null, "an ended task has no eta");
  });

  test("a sudden slowdown moves the estimate part of the way (smoothing), not all at once", T, () => {
    const eta = new EtaEstimator({ smoothing: 0.3 });
    eta.observe(started(0));
    eta.observe(progress(1, 1)); // 1 s per item: 9 s left
    close(eta.estimate(null, 0), 9);
    eta.observe(progress(11, 2)); // 10 s for the second: the raw rate says 5.5 s per item → 44 s
    const raw = remainingFromProgress({ ts: 0, current: 0 }, { ts: 11, current: 2, total: 10 });
    close(raw, 44);
    const aged = Math.max(0, 9 - 10);
    close(eta.estimate(null, 0), 0.3 * 44 + 0.7 * aged, "blended with the previous one aged by 10 s");
  });

  test("before progress tells (no total, or none yet) it falls back on runtimes, at the caller's clock", T, () => {
    const eta = new EtaEstimator();
    const runtime = { p50: 8, p95: 20, runs: 5 };
    assert.equal(eta.estimate(runtime, 100), null, "not running yet");
    eta.observe({ state: "RECEIVED", ts: 99 });
    assert.equal(eta.estimate(runtime, 100), null, "queued is not running");
    eta.observe(started(100));
    assert.equal(eta.estimate(runtime, 103), 5);
    eta.observe(progress(104, 3, null)); // a total the task does not know
    assert.equal(eta.needsRuntime, true);
    assert.equal(eta.estimate(runtime, 110), 10, "past p50: p95 - elapsed");
    assert.equal(eta.estimate(null, 110), null, "no runtimes: unknown");
  });

  test("a retry starts a new run; without STARTED the first progress seen is the reference", T, () => {
    const eta = new EtaEstimator();
    eta.observe(started(0));
    eta.observe(progress(5, 1));
    eta.observe({ state: "RETRY", ts: 6 });
    assert.equal(eta.running, false);
    assert.equal(eta.estimate(null, 6), null);
    const late = new EtaEstimator(); // a handle that first saw the task mid-run
    late.observe(progress(50, 4));
    assert.equal(late.estimate(null, 50), null, "one point is no rate");
    late.observe(progress(52, 5));
    close(late.estimate(null, 0), 10, "1 item per 2 s, 5 left");
  });
});

describe("RuntimeCatalogue", () => {
  /** A fake GET /tasks that counts its calls; `answer` decides each. */
  function loader(/** @type {() => any} */ answer) {
    const calls = { count: 0 };
    const load = async () => {
      calls.count++;
      return answer();
    };
    return { calls, load };
  }

  test("nothing is fetched until asked; then at most once per maxAge, concurrent asks share one fetch", T, async () => {
    let now = 1_000_000;
    const { calls, load } = loader(() => ({ tasks: [{ name: "sleep", runtime: { p50: 2, p95: 3, runs: 7 } }, { name: "add", runtime: null }] }));
    const catalogue = new RuntimeCatalogue(load, { maxAge: 60_000, now: () => now });
    assert.equal(catalogue.runtimeOf("sleep"), null);
    assert.equal(calls.count, 0, "lazy");
    const first = catalogue.refresh();
    assert.equal(catalogue.refresh(), first, "one fetch in flight at a time");
    await first;
    assert.equal(calls.count, 1);
    assert.deepEqual(catalogue.runtimeOf("sleep"), { p50: 2, p95: 3, runs: 7 });
    assert.equal(catalogue.runtimeOf("add"), null, "runtime null: no runs yet");
    assert.equal(catalogue.runtimeOf("unknown"), null);
    now += 59_999;
    assert.equal(catalogue.refresh(), null, "fresh: nothing to do");
    now += 1;
    await catalogue.refresh();
    assert.equal(calls.count, 2, "refreshed after 60 s");
  });

  test("a failed fetch is not retried before maxAge and keeps the last good runtimes", T, async () => {
    let now = 0;
    let fail = false;
    const { calls, load } = loader(() => {
      if (fail) throw new TypeError("fetch failed");
      return { tasks: [{ name: "sleep", runtime: { p50: 2, p95: 3, runs: 7 } }] };
    });
    const catalogue = new RuntimeCatalogue(load, { maxAge: 1000, now: () => now });
    await catalogue.refresh();
    fail = true;
    now = 1000;
    await catalogue.refresh(); // never rejects
    assert.deepEqual(catalogue.runtimeOf("sleep"), { p50: 2, p95: 3, runs: 7 });
    assert.equal(catalogue.refresh(), null, "the failure counts as the last fetch");
    assert.equal(calls.count, 2);
    const never = new RuntimeCatalogue(async () => Promise.reject(new Error("401")), { now: () => 0 });
    await never.refresh();
    assert.equal(never.runtimeOf("sleep"), null, "no estimate from a catalogue that cannot be read");
  });

  test("a server without the runtime field, or with a malformed one, gives null", T, () => {
    assert.equal(runtimeFrom(undefined), null);
    assert.equal(runtimeFrom({ p50: "2", p95: 3 }), null);
    assert.deepEqual(runtimeFrom({ p50: 1, p95: 2 }), { p50: 1, p95: 2, runs: 1 });
  });
});

describe("task.eta (in-memory server)", () => {
  /** A client whose GET /tasks says `sleep` runs take 10 s (p50) and counts the calls. */
  function catalogueClient() {
    const calls = { tasks: 0 };
    const client = fakeClient({
      fetch: async (/** @type {string} */ url) => {
        if (new URL(url).pathname === "/tasks") calls.tasks++;
        return new Response(JSON.stringify({ tasks: [{ name: "sleep", runtime: { p50: 10, p95: 20, runs: 4 } }] }));
      },
    });
    return { client, calls };
  }

  test("from runtimes while nothing else tells, then from progress; 'eta' fires on each change", T, async () => {
    const { client, calls } = catalogueClient();
    const task = client.task("s", "tok");
    /** @type {(number | null)[]} */ const etas = [];
    task.on("eta", (eta) => etas.push(eta));
    const [ws] = FakeWebSocket.instances;
    ws.open();
    const now = Date.now() / 1000;
    ws.receive(event("s", 1, "STARTED", { name: "sleep", ts: now - 2 }));
    assert.equal(task.name, "sleep", "the name comes with the first event");
    await until(() => etas.length > 0);
    assert.equal(calls.tasks, 1, "the catalogue was fetched once");
    const fromRuntime = /** @type {number} */ (task.eta);
    assert.ok(fromRuntime > 7.5 && fromRuntime <= 8, `p50 10 s, 2 s in: ${fromRuntime}`);
    /** @type {(number | null)[]} */ const seenByProgress = [];
    task.on("progress", () => seenByProgress.push(task.eta));
    ws.receive(event("s", 2, "PROGRESS", { ts: now, progress: { current: 1, total: 4, message: null } }));
    close(task.eta, 6, "1 of 4 in 2 s: 6 s left");
    assert.deepEqual(seenByProgress, [task.eta], "progress listeners already read the new eta");
    ws.receive(event("s", 3, "SUCCESS", { ts: now + 1, result: 4 }));
    assert.equal(task.eta, null);
    assert.equal(etas.at(-1), null, "the end clears it");
    assert.ok(etas.length >= 3, `from runtimes, from progress, cleared: ${etas}`);
    assert.equal(calls.tasks, 1);
  });

  test("a handle nobody asks an eta of never fetches the catalogue", T, async () => {
    const { client, calls } = catalogueClient();
    const task = client.task("s", "tok");
    const result = task.result();
    const [ws] = FakeWebSocket.instances;
    ws.open();
    ws.receive(event("s", 1, "STARTED", { name: "sleep", ts: Date.now() / 1000 }));
    ws.receive(event("s", 2, "SUCCESS", { ts: Date.now() / 1000, result: 1 }));
    assert.equal(await result, 1);
    await new Promise((done) => setTimeout(done, 10));
    assert.equal(calls.tasks, 0);
  });
});
