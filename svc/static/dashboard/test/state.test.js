// The dashboard's pure state (svc/static/dashboard/state.js) and time left (time-left.js), with no DOM:
//   node --test svc/static/dashboard/test/
import assert from "node:assert/strict";
import { register } from "node:module";
import { describe, test } from "node:test";

import {
  QUEUE_SAMPLES, initialState, matches, percentOf, reduce, runtimeOf, runtimeStats, serverNow, touches, withView,
} from "../state.js";

// The modules import the JS SDK as "../sdk/<file>.js" (the API serves clients/js/src there): a resolve
// hook maps that to this checkout's clients/js/src.
const SDK = new URL("../../../../clients/js/src/", import.meta.url).href;
const hook = `export async function resolve(specifier, context, next) {
  if (specifier.startsWith("../sdk/") && (context.parentURL ?? "").includes("/svc/static/dashboard/"))
    return { url: new URL(specifier.slice(7), ${JSON.stringify(SDK)}).href, shortCircuit: true };
  return next(specifier, context);
}`;
register(`data:text/javascript,${encodeURIComponent(hook)}`);
const { formatTimeLeft, timeLeft } = await import("../time-left.js");

const row = (id, fields = {}) => ({ id, name: "count_to", state: "PENDING", seq: 1, submitted: 100, ...fields });
const snapshot = (tasks, extra = {}) => ({ op: "snapshot", tasks, workers: [], rates: {}, queues: {}, now: 1000, ...extra });
const update = (tasks, extra = {}) => ({ op: "update", tasks, workers: [], rates: {}, queues: {}, now: 1001, ...extra });
const apply = (state, ...frames) =>
  frames.reduce((s, frame) => reduce(s, { type: frame.op, frame, now: 990 }), state);

describe("frames", () => {
  test("a snapshot replaces every task and counts itself", () => {
    const first = apply(initialState(), snapshot([row("a"), row("b")]));
    const second = apply(first, snapshot([row("c")]));
    assert.deepEqual([...second.tasks.keys()], ["c"]);
    assert.equal(second.snapshots, 2);
  });

  test("an update adds and replaces rows without touching the previous state", () => {
    const before = apply(initialState(), snapshot([row("a")]));
    const after = apply(before, update([row("a", { seq: 2, state: "STARTED" }), row("b")]));
    assert.equal(after.tasks.get("a").state, "STARTED");
    assert.equal(after.tasks.size, 2);
    assert.equal(before.tasks.get("a").state, "PENDING");
    assert.equal(before.tasks.size, 1);
  });

  test("an older row (lower seq) is not applied, and is recorded as stale", () => {
    const newer = row("a", { seq: 5, state: "PROGRESS" });
    const older = row("a", { seq: 3, state: "STARTED" });
    const state = apply(initialState(), snapshot([newer]), update([older]));
    assert.equal(state.tasks.get("a"), newer);
    assert.deepEqual(state.stale, [[newer, older]]);
  });

  test("every frame sets workers, rates, queues and the clock offset", () => {
    const state = apply(initialState(), snapshot([], { workers: [{ hostname: "w" }], queues: { celery: 3 }, now: 1000 }));
    assert.deepEqual(state.workers, [{ hostname: "w" }]);
    assert.deepEqual(state.queues, { celery: 3 });
    assert.equal(state.clockOffset, 10);
    assert.equal(serverNow(state, 995), 1005);
    const next = apply(state, update([], { now: undefined }));
    assert.equal(next.clockOffset, 10, "a frame without now keeps the offset");
    assert.deepEqual(next.queues, {});
  });

  test("an update without tasks keeps the same tasks map and leaves the view fresh", () => {
    const state = withView(apply(initialState(), snapshot([row("a")])));
    const next = apply(state, update([]));
    assert.equal(next.tasks, state.tasks);
    assert.equal(next.viewStale, false);
  });

  test("touches says whether a frame carries the selected task", () => {
    assert.equal(touches(update([row("a")]), "a"), true);
    assert.equal(touches(update([row("a")]), "b"), false);
    assert.equal(touches(update([row("a")]), null), false);
  });
});

describe("view and filters", () => {
  const tasks = [
    row("a1", { submitted: 1, state: "SUCCESS" }),
    row("b2", { submitted: 3, state: "FAILURE", name: "boom" }),
    row("c3", { submitted: 2, state: "STARTED" }),
    row("d4", { submitted: null, updated: 5, state: "PENDING", name: null }),
  ];
  const base = apply(initialState(), snapshot(tasks));

  test("the view is newest first, with counts per state and sorted names", () => {
    const state = withView(base);
    assert.deepEqual(state.view.map((r) => r.id), ["d4", "b2", "c3", "a1"]);
    assert.deepEqual(state.counts, { SUCCESS: 1, FAILURE: 1, STARTED: 1, PENDING: 1 });
    assert.deepEqual(state.names, ["boom", "count_to"]);
    assert.equal(withView(state), state, "a fresh view is not derived again");
  });

  test("ties in the sort key order by id, descending", () => {
    const state = withView(apply(initialState(), snapshot([row("x", { submitted: 1 }), row("y", { submitted: 1 })])));
    assert.deepEqual(state.view.map((r) => r.id), ["y", "x"]);
  });

  test("a state filter keeps that state; 'active' keeps the unfinished", () => {
    const failed = withView(reduce(base, { type: "filter", state: "FAILURE" }));
    assert.deepEqual(failed.view.map((r) => r.id), ["b2"]);
    const active = withView(reduce(base, { type: "filter", state: "active" }));
    assert.deepEqual(active.view.map((r) => r.id), ["d4", "c3"]);
    assert.equal(active.counts.SUCCESS, 1, "counts are of all tasks, not the view");
  });

  test("the text filter matches part of a name (any case) or the start of an id", () => {
    assert.deepEqual(withView(reduce(base, { type: "filter", text: " BOO " })).view.map((r) => r.id), ["b2"]);
    assert.deepEqual(withView(reduce(base, { type: "filter", text: "c3" })).view.map((r) => r.id), ["c3"]);
    assert.equal(matches(row("zz9"), { state: "", text: "z9" }), false, "an id matches from its start only");
  });

  test("a filter change keeps the other filter", () => {
    const state = reduce(reduce(base, { type: "filter", state: "FAILURE" }), { type: "filter", text: "boom" });
    assert.deepEqual(state.filter, { state: "FAILURE", text: "boom" });
  });
});

describe("selection, queue samples and runtimes", () => {
  test("select sets and clears the selected task", () => {
    const state = reduce(initialState(), { type: "select", id: "a" });
    assert.equal(state.selected, "a");
    assert.equal(reduce(state, { type: "select", id: null }).selected, null);
  });

  test("a sample appends each queue's depth, keeping the newest QUEUE_SAMPLES", () => {
    let state = apply(initialState(), snapshot([], { queues: { celery: 1 } }));
    for (let i = 0; i < QUEUE_SAMPLES + 5; i += 1) state = reduce(state, { type: "sample" });
    const samples = state.queueHistory.get("celery");
    assert.equal(samples.length, QUEUE_SAMPLES);
    assert.ok(samples.every((depth) => depth === 1));
  });

  test("runtimes come from the catalogue, else from the feed's rates", () => {
    let state = apply(initialState(), snapshot([], { rates: { other: { p50: 2, p95: 4 }, none: {} } }));
    state = reduce(state, { type: "runtimes", tasks: [{ name: "count_to", runtime: { p50: 1, p95: 3, runs: 7 } }, { name: "new" }] });
    assert.deepEqual(runtimeStats(state, "count_to"), { p50: 1, p95: 3, runs: 7 });
    assert.deepEqual(runtimeStats(state, "other"), { p50: 2, p95: 4, runs: 1 });
    assert.equal(runtimeStats(state, "new"), null);
    assert.equal(runtimeStats(state, "none"), null);
    assert.equal(runtimeStats(state, null), null);
  });
});

describe("row figures", () => {
  test("runtime: the final one, else since STARTED; none before", () => {
    assert.equal(runtimeOf(row("a", { runtime: 1.5, started: 10, ended: 20 }), 50), 1.5);
    assert.equal(runtimeOf(row("a", { started: 10 }), 14), 4);
    assert.equal(runtimeOf(row("a", { started: 10, ended: 12 }), 50), 2);
    assert.equal(runtimeOf(row("a"), 50), null);
  });

  test("percent: of a total, clamped; 100 for a success with progress; none without a total", () => {
    assert.equal(percentOf(row("a", { progress: { current: 1, total: 3 } })), 33);
    assert.equal(percentOf(row("a", { progress: { current: 9, total: 3 } })), 100);
    assert.equal(percentOf(row("a", { state: "SUCCESS", progress: { current: 1 } })), 100);
    assert.equal(percentOf(row("a", { progress: { current: 1 } })), null);
    assert.equal(percentOf(row("a")), null);
  });
});

describe("time left", () => {
  const running = (fields) => row("a", { state: "PROGRESS", started: 100, updated: 110, ...fields });
  const runtime = { p50: 30, p95: 60, runs: 5 };

  test("from the task's own rate since STARTED, aged by the time since its progress", () => {
    // 4 of 10 in 10 s: 6 left at 2.5 s each = 15 s at ts 110; 3 s later, 12 s.
    assert.equal(timeLeft(running({ progress: { current: 4, total: 10 } }), runtime, 110), 15);
    assert.equal(timeLeft(running({ progress: { current: 4, total: 10 } }), runtime, 113), 12);
    assert.equal(timeLeft(running({ progress: { current: 4, total: 10 } }), runtime, 200), 0);
  });

  test("from the name's p50 minus elapsed while there is no progress that tells", () => {
    assert.equal(timeLeft(running({ state: "STARTED", updated: 100 }), runtime, 110), 20);
    assert.equal(timeLeft(running({ progress: { current: 4 } }), runtime, 110), 20, "no total");
    assert.equal(timeLeft(running({ progress: { current: 0, total: 10 } }), runtime, 110), 20, "no progress yet");
    assert.equal(timeLeft(running({ state: "STARTED" }), runtime, 140), 20, "past p50: p95 − elapsed");
    assert.equal(timeLeft(running({ state: "STARTED" }), runtime, 170), null, "past p95");
    assert.equal(timeLeft(running({ state: "STARTED" }), null, 110), null, "no runtimes");
  });

  test("none for a task that is not running", () => {
    for (const state of ["PENDING", "RECEIVED", "RETRY", "SUCCESS", "FAILURE", "REVOKED"]) {
      assert.equal(timeLeft(running({ state, progress: { current: 4, total: 10 } }), runtime, 110), null, state);
    }
    assert.equal(timeLeft(running({ started: null }), runtime, 110), null);
  });

  test("formatted as ~N s left, minutes from 2 min", () => {
    assert.equal(formatTimeLeft(12.4), "~12 s left");
    assert.equal(formatTimeLeft(0), "~0 s left");
    assert.equal(formatTimeLeft(150), "~3 min left");
    assert.equal(formatTimeLeft(9000), "~3 h left");
    assert.equal(formatTimeLeft(null), "");
  });
});
