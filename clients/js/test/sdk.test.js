// The SDK against real svc processes (redis-server, a Celery worker, the API): submit, progress,
// failures, cancel, one shared socket, HTTP errors (also with auth on), workflows, streams.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";

import {
  Client,
  ConflictError,
  ForbiddenError,
  HttpError,
  NotFoundError,
  SubscriptionError,
  TaskFailedError,
  TaskRevokedError,
  UnauthorizedError,
  ValidationError,
} from "../src/index.js";
import { Stack, countingWebSocket } from "./harness.js";

const T = { timeout: 60_000 };
/** @type {Stack} */
let stack;
/** @type {Client} */
let client;

before(async () => {
  stack = await new Stack().start();
  client = new Client({ baseUrl: stack.baseUrl, WebSocket });
}, { timeout: 120_000 });

after(async () => {
  client?.close();
  await stack?.stop();
}, { timeout: 60_000 });

describe("tasks", () => {
  test("add(2, 3) resolves 5 and the handle's state ends SUCCESS", T, async () => {
    const task = await client.submit("add", { args: [2, 3] });
    assert.match(task.id, /^[0-9a-f-]{36}$/);
    assert.equal(task.state, "PENDING");
    assert.equal(typeof task.token, "string");
    /** @type {string[]} */ const states = [];
    task.on("state", (state) => states.push(state));
    assert.equal(await task.result({ timeout: 20_000 }), 5);
    assert.equal(task.state, "SUCCESS");
    assert.equal(states.at(-1), "SUCCESS");
  });

  test("count_to(5) gives progress 1..5 in order, contiguous seqs, and events() ends after SUCCESS", T, async () => {
    const task = await client.submit("count_to", { args: [5], kwargs: { delay: 0.05 } });
    /** @type {number[]} */ const progress = [];
    task.on("progress", (ev) => progress.push(ev.progress.current));
    /** @type {any[]} */ const events = [];
    for await (const ev of task.events()) events.push(ev);
    const seqs = events.map((ev) => ev.seq);
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), `seqs ${seqs}`);
    assert.deepEqual(progress, [1, 2, 3, 4, 5]);
    assert.deepEqual(
      events.filter((ev) => ev.state === "PROGRESS").map((ev) => [ev.progress.current, ev.progress.total]),
      [[1, 5], [2, 5], [3, 5], [4, 5], [5, 5]],
    );
    assert.equal(events.at(-1).state, "SUCCESS");
    assert.equal(events.at(-1).result, 5);
    assert.equal(await task.result(), 5);
  });

  test("fail('boom') rejects with TaskFailedError ValueError: boom", T, async () => {
    const task = await client.submit("fail", { args: ["boom"] });
    await assert.rejects(task.result({ timeout: 20_000 }), (error) => {
      assert.ok(error instanceof TaskFailedError, String(error));
      assert.equal(error.type, "ValueError");
      assert.equal(error.remoteMessage, "boom");
      assert.equal(error.taskId, task.id);
      assert.equal(error.event.state, "FAILURE");
      return true;
    });
    assert.equal(task.state, "FAILURE");
  });

  test("cancel({terminate: true}) of a running sleep(30) rejects result() with TaskRevokedError", T, async () => {
    const task = await client.submit("sleep", { args: [30] });
    const started = new Promise((done) => task.on("state", (state) => state === "STARTED" && done(state)));
    // assert.rejects subscribes at once: REVOKED may arrive before DELETE's answer does
    const revoked = assert.rejects(task.result({ timeout: 20_000 }), (error) => {
      assert.ok(error instanceof TaskRevokedError, String(error));
      assert.equal(error.reason, "terminated");
      return true;
    });
    await started;
    const answer = await task.cancel({ terminate: true });
    assert.equal(answer.revoked, true);
    await revoked;
    assert.equal(task.state, "REVOKED");
  });

  test("a handle made from id and token watches a task someone else submitted", T, async () => {
    const submitted = await client.submit("echo", { kwargs: { value: { a: [1, 2] } } });
    const other = new Client({ baseUrl: stack.baseUrl, WebSocket });
    try {
      assert.deepEqual(await other.task(submitted.id, submitted.token).result({ timeout: 20_000 }), { a: [1, 2] });
    } finally {
      other.close();
    }
  });

  test("an Idempotency-Key repeated returns the same task id", T, async () => {
    const key = `k-${Date.now()}-${Math.random()}`;
    const first = await client.submit("add", { args: [1, 1], idempotencyKey: key });
    const second = await client.submit("add", { args: [1, 1], idempotencyKey: key });
    assert.equal(second.id, first.id);
    assert.equal(await second.result({ timeout: 20_000 }), 2);
  });

  test("an Idempotency-Key reused for other arguments is ConflictError 409, and nothing is enqueued", T, async () => {
    const key = `k-${Date.now()}-${Math.random()}`;
    const first = await client.submit("add", { args: [1, 1], idempotencyKey: key });
    await assert.rejects(client.submit("add", { args: [2, 2], idempotencyKey: key }), (error) => {
      assert.ok(error instanceof ConflictError, String(error));
      assert.equal(error.status, 409);
      assert.match(error.message, /POST http:\/\/127\.0\.0\.1:\d+\/tasks\/add answered 409/);
      return true;
    });
    assert.equal(await first.result({ timeout: 20_000 }), 2);
  });
});

describe("time left (eta)", () => {
  test("count_to's eta follows its own rate down to 0 with each progress event, and is null once it ended", T, async () => {
    const task = await client.submit("count_to", { args: [10], kwargs: { delay: 0.1 } });
    /** @type {(number | null)[]} */ const atProgress = [];
    task.on("progress", () => atProgress.push(task.eta));
    assert.equal(await task.result({ timeout: 20_000 }), 10);
    const known = atProgress.slice(1).map((eta) => /** @type {number} */ (eta));
    assert.equal(atProgress.length, 10);
    assert.ok(known.every((eta) => typeof eta === "number" && eta >= 0 && eta < 2), `plausible for 10 × 0.1 s: ${atProgress}`);
    assert.ok(known.at(-3) > known.at(-1), `shrinking: ${atProgress}`);
    assert.equal(known.at(-1), 0, "0 at 10/10");
    assert.equal(task.eta, null);
  });

  test("before any progress, a task's eta comes from the catalogue's runtimes of its name (GET /tasks)", T, async () => {
    for (let i = 0; i < 3; i++) await (await client.submit("sleep", { args: [0.4] })).result({ timeout: 20_000 });
    /** @type {any} */ const catalogue = await client.request("GET", "/tasks");
    const runtime = catalogue.tasks.find((entry) => entry.name === "sleep")?.runtime;
    assert.ok(runtime && runtime.runs >= 3 && runtime.p50 >= 0.4 && runtime.p50 < 2, `GET /tasks: ${JSON.stringify(runtime)}`);
    // A fresh client (its catalogue not fetched yet) watching a sleep that reports no progress.
    const watcher = new Client({ baseUrl: stack.baseUrl, WebSocket });
    try {
      const task = await watcher.submit("sleep", { args: [0.4] });
      /** @type {(number | null)[]} */ const etas = [];
      task.on("eta", (eta) => etas.push(eta));
      await task.result({ timeout: 20_000 });
      const fromRuntime = etas.find((eta) => eta !== null);
      assert.ok(fromRuntime !== undefined && fromRuntime > 0 && fromRuntime <= runtime.p95, `from p50 ${runtime.p50}: ${etas}`);
      assert.equal(etas.at(-1), null);
    } finally {
      watcher.close();
    }
  });
});

describe("one socket", () => {
  test("100 tasks share one WebSocket, all resolve, and the socket closes once they are done", T, async () => {
    const { WebSocket: Counting, instances } = countingWebSocket(WebSocket);
    const shared = new Client({ baseUrl: stack.baseUrl, WebSocket: Counting, idleTimeout: 100 });
    try {
      const tasks = await Promise.all(
        Array.from({ length: 100 }, (_, i) => shared.submit("add", { args: [i, 1000] })),
      );
      const results = await Promise.all(tasks.map((task) => task.result({ timeout: 45_000 })));
      assert.deepEqual(results, tasks.map((_, i) => i + 1000));
      assert.equal(instances.length, 1, "one socket for all 100 tasks");
      await instances[0].closed;
      assert.equal(shared.connected, false);
      assert.ok(tasks.every((task) => task.state === "SUCCESS"));
    } finally {
      shared.close();
    }
  });
});

describe("HTTP errors", () => {
  test("an unknown task id is NotFoundError 404 and an unknown task name too", T, async () => {
    await assert.rejects(client.task("00000000-0000-0000-0000-000000000000").fetchState(), (error) => {
      assert.ok(error instanceof NotFoundError);
      assert.ok(error instanceof HttpError);
      assert.equal(error.status, 404);
      assert.equal(error.problem.status, 404);
      return true;
    });
    await assert.rejects(client.submit("no_such_task"), { name: "NotFoundError", status: 404 });
  });

  test("arguments that fail the schema are ValidationError 422 with the problem's detail", T, async () => {
    await assert.rejects(client.submit("add", { args: ["two", 3] }), (error) => {
      assert.ok(error instanceof ValidationError, String(error));
      assert.equal(error.status, 422);
      assert.ok(error.detail.length > 0);
      assert.equal(error.title.length > 0, true);
      return true;
    });
  });

  describe("with auth on", () => {
    /** @type {any} */ let api;
    before(async () => {
      api = await stack.startApi({
        name: "api-auth",
        env: { SVC_API_KEYS: "js-key-1", SVC_SECRET_KEY: "js-secret" },
      });
    }, { timeout: 60_000 });
    after(() => api?.stop(), { timeout: 30_000 });

    test("no API key is UnauthorizedError 401; the key submits and watches", T, async () => {
      const anonymous = new Client({ baseUrl: api.baseUrl, WebSocket });
      await assert.rejects(anonymous.submit("add", { args: [1, 2] }), (error) => {
        assert.ok(error instanceof UnauthorizedError, String(error));
        assert.equal(error.status, 401);
        return true;
      });
      const keyed = new Client({ baseUrl: api.baseUrl, apiKey: "js-key-1", WebSocket });
      try {
        const task = await keyed.submit("add", { args: [20, 22] });
        assert.equal(await task.result({ timeout: 20_000 }), 42);
        // A browser-like client (no key, only the task's token) may watch it, but not read another.
        assert.equal(await anonymous.task(task.id, task.token).result({ timeout: 20_000 }), 42);
        const other = await keyed.submit("add", { args: [1, 1] });
        await assert.rejects(
          anonymous.task(other.id, task.token).result({ timeout: 20_000 }),
          (error) => error instanceof SubscriptionError && error.detail.length > 0,
        );
        await assert.rejects(anonymous.task(other.id, task.token).fetchState(), ForbiddenError);
      } finally {
        keyed.close();
        anonymous.close();
      }
    });
  });
});

describe("workflows", () => {
  test("a chain resolves with the last step's result after every step's events", T, async () => {
    const wf = await client.workflow({
      chain: [{ task: "fetch_data", args: ["crm"], kwargs: {} }, { task: "process_data" }, { task: "save_data" }],
    });
    assert.equal(wf.kind, "chain");
    assert.equal(wf.taskIds.length, 3);
    /** @type {any[]} */ const events = [];
    wf.on("event", (ev) => events.push(ev));
    const value = await wf.result({ timeout: 30_000 });
    const stepSuccesses = events.filter((ev) => ev.step_seq != null && ev.state === "SUCCESS");
    assert.deepEqual(stepSuccesses.map((ev) => ev.step), [0, 1, 2]);
    assert.deepEqual(stepSuccesses.map((ev) => ev.task_id), wf.taskIds);
    assert.equal(value, stepSuccesses.at(-1).result);
    assert.equal(typeof value, "string");
    const seqs = events.map((ev) => ev.seq);
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), "one stream, contiguous seqs");
    assert.equal(events.at(-1).task_id, wf.id);
    assert.equal(wf.state, "SUCCESS");
  });

  test("a chain whose second step fails rejects naming that step; later steps never run", T, async () => {
    const wf = await client.workflow({
      chain: [{ task: "echo", args: ["boom"] }, { task: "fail" }, { task: "save_data" }],
    });
    /** @type {any[]} */ const events = [];
    for await (const ev of wf.events()) events.push(ev);
    await assert.rejects(wf.result(), (error) => {
      assert.ok(error instanceof TaskFailedError, String(error));
      assert.equal(error.type, "ValueError");
      assert.equal(error.remoteMessage, "boom");
      assert.equal(error.step, 1);
      assert.equal(error.failedTaskId, wf.taskIds[1]);
      return true;
    });
    assert.equal(events.at(-1).state, "FAILURE");
    assert.ok(!events.some((ev) => ev.step === 2 && ev.state === "STARTED"), "step 2 never started");
  });

  test("a group resolves with every step's result, in order", T, async () => {
    const wf = await client.workflow({
      group: [{ task: "add", args: [1, 1] }, { task: "add", args: [2, 2] }, { task: "add", args: [3, 3] }],
    });
    assert.deepEqual(await wf.result({ timeout: 30_000 }), [2, 4, 6]);
  });
});

describe("streams", () => {
  /**
   * Check what stream_text(words) sent: `words` chunks, each a word and its space (the last without),
   * in strictly increasing seq.
   * @param {import("../src/index.js").StreamChunk[]} chunks @param {number} words
   */
  function assertWords(chunks, words) {
    assert.equal(chunks.length, words, `${words} chunks, one a word`);
    assert.ok(chunks.every((c) => c.stream === "output" && typeof c.data === "string"));
    assert.ok(chunks.slice(0, -1).every((c) => /^\S+ $/.test(/** @type {string} */ (c.data))), "a word and its space");
    assert.match(/** @type {string} */ (chunks.at(-1)?.data), /^\S+$/, "the last word has no space");
    const seqs = chunks.map((c) => c.seq);
    assert.ok(seqs.every((seq, i) => i === 0 || seq > seqs[i - 1]), `increasing seqs ${seqs}`);
  }

  test("stream_text(40) gives every chunk once, in order, between its events; text() equals result()", T, async () => {
    const task = await client.submit("stream_text", { kwargs: { words: 40, delay: 0.01 } });
    /** @type {any[]} */ const frames = [];
    task.on("event", (ev) => frames.push(["event", ev.seq, ev.state]));
    task.on("stream", (c) => frames.push(["stream", c.seq, c.data]));
    /** @type {unknown[]} */ const iterated = [];
    const iterating = (async () => {
      for await (const data of task.stream("output")) iterated.push(data);
    })();
    const [text, result] = await Promise.all([task.text("output", { timeout: 30_000 }), task.result({ timeout: 30_000 })]);
    await iterating;
    assert.equal(typeof result, "string");
    assert.equal(text, result);
    assertWords(task.chunks(), 40);
    assert.deepEqual(iterated, task.chunks().map((c) => c.data), "stream() yields every chunk's data, then ends");
    const seqs = frames.map(([, seq]) => seq);
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), "events and chunks share one contiguous seq");
    const started = frames.findIndex(([kind, , state]) => kind === "event" && state === "STARTED");
    const firstChunk = frames.findIndex(([kind]) => kind === "stream");
    assert.ok(started >= 0 && started < firstChunk, "chunks come after STARTED");
    const [lastKind, , lastState] = frames.at(-1);
    assert.deepEqual([lastKind, lastState], ["event", "SUCCESS"], "SUCCESS comes last");
    assert.equal(task.state, "SUCCESS");
    assert.deepEqual(task.streamNames, ["output"]);
  });

  test("a handle made after the task ended replays the whole stream from the server's history", T, async () => {
    const submitted = await client.submit("stream_text", { kwargs: { words: 12, delay: 0 } });
    const expected = await submitted.result({ timeout: 30_000 });
    const other = new Client({ baseUrl: stack.baseUrl, WebSocket });
    try {
      const late = other.task(submitted.id, submitted.token);
      assert.equal(await late.text("output", { timeout: 20_000 }), expected);
      assertWords(late.chunks(), 12);
      assert.deepEqual(late.chunks().map((c) => c.seq), submitted.chunks().map((c) => c.seq));
    } finally {
      other.close();
    }
  });

  test("a connection dropped mid-stream, twice, still gives the whole text, each chunk once, in order", T, async () => {
    /** @type {any[]} */ const sockets = [];
    /** @type {[number, number][]} */ const wire = []; // [socket index, seq] of every stream frame received
    class Recording extends WebSocket {
      /** @param {...any} args */
      constructor(...args) {
        // @ts-ignore ws's constructor overloads
        super(...args);
        const index = sockets.push(this) - 1;
        this.addEventListener("message", (/** @type {any} */ message) => {
          const frame = JSON.parse(String(message.data));
          if (frame.op === "stream") wire.push([index, frame.seq]);
        });
      }
    }
    const dropping = new Client({ baseUrl: stack.baseUrl, WebSocket: Recording, backoff: { base: 20, cap: 100 } });
    try {
      const words = 60;
      const task = await dropping.submit("stream_text", { kwargs: { words, delay: 0.02 } });
      /** @type {number[]} */ const seen = [];
      /** @type {number[]} */ const droppedAt = [];
      task.on("stream", (c) => {
        seen.push(c.seq);
        if (seen.length === 10 || seen.length === 30) {
          droppedAt.push(seen.length);
          sockets.at(-1).terminate(); // no close frame: the client sees 1006, as on a network failure
        }
      });
      const [text, result] = await Promise.all([task.text("output", { timeout: 45_000 }), task.result({ timeout: 45_000 })]);
      assert.equal(text, result);
      assertWords(task.chunks(), words);
      assert.deepEqual(seen, task.chunks().map((c) => c.seq), "each chunk once, in order");
      assert.deepEqual(droppedAt, [10, 30]);
      assert.ok(sockets.length >= 3, `reconnected twice (${sockets.length} sockets)`);
      const afterDrops = wire.filter(([index]) => index >= 2).length;
      assert.ok(afterDrops > 0, "chunks kept coming on the third connection: the drops were mid-stream");
    } finally {
      dropping.close();
    }
  });

  test("a group of two stream_text steps: the workflow's handle gets each step's chunks, with its id and index", T, async () => {
    const wf = await client.workflow({
      group: [{ task: "stream_text", kwargs: { words: 5, delay: 0.01 } }, { task: "stream_text", kwargs: { words: 7, delay: 0.01 } }],
    });
    /** @type {import("../src/index.js").StreamChunk[]} */ const chunks = [];
    wf.on("stream", (c) => chunks.push(c));
    const results = /** @type {string[]} */ (await wf.result({ timeout: 30_000 }));
    assert.equal(results.length, 2);
    for (const [step, words] of [[0, 5], [1, 7]]) {
      const mine = chunks.filter((c) => c.step === step);
      assert.ok(mine.every((c) => c.taskId === wf.taskIds[step] && typeof c.stepSeq === "number"), `step ${step}'s chunks`);
      assertWords(mine, words);
      assert.equal(mine.map((c) => c.data).join(""), results[step]);
    }
    assert.equal(chunks.length, 12);
    assert.equal((await wf.text()).length, results[0].length + results[1].length);
  });
});
