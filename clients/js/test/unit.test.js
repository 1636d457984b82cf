// Unit tests: the backoff policy, the error mapping, and the socket's routing/dedupe/reconnect rules
// against an in-memory WebSocket (the integration suites run the same paths against real servers).

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { FakeWebSocket, fakeClient } from "./fake-websocket.js";
import {
  BACKOFF_DEFAULTS,
  BadRequestError,
  Client,
  ConnectionClosedError,
  ForbiddenError,
  HttpError,
  NetworkError,
  NotFoundError,
  RateLimitedError,
  SubscriptionError,
  TaskFailedError,
  TaskRevokedError,
  UnauthorizedError,
  ValidationError,
  backoffDelay,
  ceiling,
  errorFromResponse,
  parseRetryAfter,
} from "../src/index.js";

const T = { timeout: 10_000 };

describe("backoff", () => {
  test("ceiling doubles from base and stops at cap", T, () => {
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5, 6, 7].map((attempt) => ceiling(attempt)),
      [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000],
    );
    assert.equal(ceiling(10_000), BACKOFF_DEFAULTS.cap, "huge attempts stay at the cap");
    assert.equal(ceiling(3, { base: 100, cap: 500 }), 500);
  });

  test("delays are full jitter: within [0, ceiling) and spread, not constant", T, () => {
    for (let attempt = 0; attempt < 12; attempt++) {
      const delays = Array.from({ length: 200 }, () => backoffDelay(attempt));
      const top = ceiling(attempt);
      assert.ok(delays.every((delay) => delay >= 0 && delay < top), `attempt ${attempt}: ${delays}`);
      assert.ok(new Set(delays).size > 20, `attempt ${attempt} is jittered`);
      assert.ok(Math.max(...delays) > top / 2, `attempt ${attempt} reaches the upper half`);
    }
  });

  test("the random source decides the point in the window", T, () => {
    assert.equal(backoffDelay(2, {}, () => 0), 0);
    assert.equal(backoffDelay(2, {}, () => 0.5), 500);
    assert.equal(backoffDelay(2, {}, () => 0.999999), 999);
  });
});

describe("error mapping", () => {
  /** @param {number} status @param {object} body @param {Record<string, string>} [headers] */
  const problem = (status, body, headers = {}) =>
    new Response(JSON.stringify(body), {
      status,
      headers: { "content-type": "application/problem+json", ...headers },
    });

  test("each problem status becomes its own HttpError subclass carrying the body", T, async () => {
    const cases = [
      [400, BadRequestError],
      [401, UnauthorizedError],
      [403, ForbiddenError],
      [404, NotFoundError],
      [422, ValidationError],
      [429, RateLimitedError],
    ];
    for (const [status, Class] of cases) {
      const body = { type: `https://svc/errors/${status}`, title: "T", status, detail: `d${status}` };
      const error = await errorFromResponse(problem(status, body), "POST", "http://h/tasks/add");
      assert.ok(error instanceof Class, `${status} -> ${error.name}`);
      assert.ok(error instanceof HttpError);
      assert.equal(error.status, status);
      assert.equal(error.detail, `d${status}`);
      assert.equal(error.title, "T");
      assert.equal(error.type, body.type);
      assert.deepEqual(error.problem, body);
      assert.match(error.message, new RegExp(`POST http://h/tasks/add answered ${status}: d${status}`));
    }
  });

  test("429 carries Retry-After in seconds", T, async () => {
    const response = problem(429, { title: "Too Many Requests", status: 429, detail: "slow" }, { "retry-after": "3" });
    const error = await errorFromResponse(response, "POST", "u");
    assert.ok(error instanceof RateLimitedError);
    assert.equal(error.retryAfter, 3);
    assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4_000), 6);
    assert.equal(parseRetryAfter("soon"), null);
  });

  test("a non-JSON error body still gives a typed error with the status", T, async () => {
    const error = await errorFromResponse(new Response("<html>bad gateway</html>", { status: 502 }), "GET", "u");
    assert.ok(error instanceof HttpError);
    assert.equal(error.status, 502);
    assert.deepEqual(error.problem, {});
  });

  test("FAILURE and REVOKED events become task errors with the remote details", T, () => {
    const failed = new TaskFailedError("t1", { state: "FAILURE", error: { type: "ValueError", message: "boom" } });
    assert.equal(failed.type, "ValueError");
    assert.equal(failed.remoteMessage, "boom");
    assert.equal(failed.taskId, "t1");
    assert.equal(failed.name, "TaskFailedError");
    const revoked = new TaskRevokedError("t2", { state: "REVOKED", error: { type: "TaskRevokedError", message: "terminated" } });
    assert.equal(revoked.reason, "terminated");
  });
});

/** A fetch that records its calls and answers `answer`. */
function recorder(answer = () => new Response(JSON.stringify({ task_id: "t1", name: "add", token: "tok" }), { status: 202 })) {
  /** @type {{url: string, init: any}[]} */ const calls = [];
  const fetch = async (/** @type {string} */ url, /** @type {any} */ init) => {
    calls.push({ url, init });
    return answer();
  };
  return { calls, fetch };
}

describe("HTTP calls", () => {
  test("submit POSTs the body with the key and the Idempotency-Key; cancel sends the token", T, async () => {
    const { calls, fetch } = recorder();
    const client = new Client({ baseUrl: "http://api.test/", apiKey: "k1", fetch, WebSocket: FakeWebSocket });
    const task = await client.submit("add", { args: [2, 3], options: { countdown: 1 }, idempotencyKey: "i1" });
    assert.equal(task.id, "t1");
    assert.equal(task.token, "tok");
    assert.equal(task.state, "PENDING");
    assert.equal(calls[0].url, "http://api.test/tasks/add");
    assert.equal(calls[0].init.method, "POST");
    assert.deepEqual(JSON.parse(calls[0].init.body), { args: [2, 3], kwargs: {}, options: { countdown: 1 } });
    assert.equal(calls[0].init.headers.authorization, "Bearer k1");
    assert.equal(calls[0].init.headers["Idempotency-Key"], "i1");
    await task.cancel({ terminate: true });
    assert.equal(calls[1].init.method, "DELETE");
    assert.equal(calls[1].url, "http://api.test/tasks/t1?token=tok&terminate=true");
    await client.task("t2", "a b").cancel();
    assert.equal(calls[2].url, "http://api.test/tasks/t2?token=a+b");
  });

  test("an unreachable API is a NetworkError whose message names the URL but not the token", T, async () => {
    const fetch = async () => {
      throw new TypeError("fetch failed");
    };
    const client = new Client({ baseUrl: "http://api.test", fetch, WebSocket: FakeWebSocket });
    await assert.rejects(client.task("t1", "secret-token").fetchState(), (error) => {
      assert.ok(error instanceof NetworkError);
      assert.match(error.message, /GET http:\/\/api.test\/tasks\/t1 failed/);
      assert.doesNotMatch(error.message, /secret-token/);
      return true;
    });
  });
});

const until = async (/** @type {() => boolean} */ predicate) => {
  while (!predicate()) await new Promise((done) => setTimeout(done, 1));
};

const event = (/** @type {string} */ id, /** @type {number} */ seq, state = "STARTED", extra = {}) => ({
  task_id: id, name: "t", seq, state, ts: 0, result: null, error: null, progress: null, retries: 0, worker: null, ...extra,
});

describe("socket rules (in-memory server)", () => {
  test("events are deduplicated by seq, and a reconnect resubscribes with since = last seq", T, async () => {
    const client = fakeClient();
    const task = client.task("a", "tok-a");
    /** @type {number[]} */ const seen = [];
    task.on("event", (ev) => seen.push(ev.seq));
    const result = task.result();
    const [first] = FakeWebSocket.instances;
    assert.equal(first.url, "ws://127.0.0.1:1/ws?token=tok-a");
    first.open();
    assert.deepEqual(first.sent, [{ op: "subscribe", task_id: "a", token: "tok-a", since: 0 }]);
    first.receive(event("a", 1, "PENDING"));
    first.receive(event("a", 2, "RECEIVED"));
    first.receive(event("a", 2, "RECEIVED")); // duplicate
    first.drop(1006);
    await until(() => FakeWebSocket.instances.length === 2);
    const second = FakeWebSocket.instances[1];
    second.open();
    assert.deepEqual(second.sent, [{ op: "subscribe", task_id: "a", token: "tok-a", since: 2 }]);
    second.receive(event("a", 1, "PENDING")); // stale
    second.receive(event("a", 3, "SUCCESS", { result: 42 }));
    assert.equal(await result, 42);
    assert.deepEqual(seen, [1, 2, 3]);
    assert.equal(task.state, "SUCCESS");
    assert.deepEqual(second.sent.at(-1), { op: "unsubscribe", task_id: "a" });
  });

  test("frames with step_seq go to the workflow's stream; only its own event settles it", T, async () => {
    const client = fakeClient();
    const wf = client.workflowHandle("wf", "tok", ["s0", "s1"]);
    /** @type {any[]} */ const steps = [];
    wf.on("event", (ev) => steps.push([ev.task_id, ev.seq]));
    const result = wf.result();
    const [ws] = FakeWebSocket.instances;
    ws.open();
    ws.receive(event("wf", 1, "PENDING"));
    ws.receive(event("s0", 2, "SUCCESS", { workflow_id: "wf", step: 0, step_seq: 4, result: 1 }));
    ws.receive(event("s0", 9, "SUCCESS")); // a frame of the step's own stream: not watched, dropped
    assert.equal(wf.done, false, "a step's SUCCESS does not end the workflow");
    ws.receive(event("wf", 3, "SUCCESS", { result: "all done" }));
    assert.equal(await result, "all done");
    assert.deepEqual(steps, [["wf", 1], ["s0", 2], ["wf", 3]]);
  });

  test("an op:error frame rejects that task only, with the server's detail", T, async () => {
    const client = fakeClient();
    const refused = client.task("x", "bad");
    const fine = client.task("y", "good");
    const refusedResult = refused.result();
    const fineResult = fine.result();
    const [ws] = FakeWebSocket.instances;
    ws.open();
    ws.receive({ op: "error", task_id: "x", detail: "the token does not open this task" });
    await assert.rejects(refusedResult, (error) => {
      assert.ok(error instanceof SubscriptionError);
      assert.equal(error.detail, "the token does not open this task");
      return true;
    });
    ws.receive(event("y", 1, "FAILURE", { error: { type: "KeyError", message: "k" } }));
    await assert.rejects(fineResult, TaskFailedError);
  });

  test("close 1008 rejects every watcher and does not reconnect; 1001 reconnects", T, async () => {
    const client = fakeClient();
    const task = client.task("a", "t");
    const result = task.result();
    FakeWebSocket.instances[0].open();
    FakeWebSocket.instances[0].drop(1001, "server shutting down");
    await until(() => FakeWebSocket.instances.length === 2);
    FakeWebSocket.instances[1].open();
    FakeWebSocket.instances[1].drop(1008, "an API key or a task token is required");
    await assert.rejects(result, (error) => error instanceof ConnectionClosedError && error.code === 1008);
    await new Promise((done) => setTimeout(done, 30));
    assert.equal(FakeWebSocket.instances.length, 2, "no reconnect after 1008");
  });

  test("a terminal event that arrived before result() was called still settles it", T, async () => {
    const client = fakeClient();
    const task = client.task("a", "t");
    task.on("progress", () => {});
    const [ws] = FakeWebSocket.instances;
    ws.open();
    ws.receive(event("a", 1, "REVOKED", { error: { type: "TaskRevokedError", message: "revoked" } }));
    await assert.rejects(task.result(), TaskRevokedError);
    /** @type {number[]} */ const replayed = [];
    for await (const ev of task.events()) replayed.push(ev.seq);
    assert.deepEqual(replayed, [1], "events() replays what came before it and ends");
  });

  test("result() honours an AbortSignal and a timeout", T, async () => {
    const client = fakeClient();
    const task = client.task("a", "t");
    const controller = new AbortController();
    const aborted = task.result({ signal: controller.signal });
    controller.abort();
    await assert.rejects(aborted, { name: "AbortError" });
    await assert.rejects(task.result({ timeout: 5 }), { name: "TimeoutError" });
    client.close();
    await assert.rejects(task.result(), { name: "AbortError" });
  });

  test("no WebSocket implementation is a clear error", T, () => {
    const saved = globalThis.WebSocket;
    // @ts-ignore Node 20 has none; make sure of it for newer Nodes too
    delete globalThis.WebSocket;
    try {
      assert.throws(() => new Client({ baseUrl: "http://h" }), /no WebSocket available: pass \{ WebSocket \}/);
    } finally {
      if (saved) globalThis.WebSocket = saved;
    }
  });
});

describe("a base URL with a path (svc mounted under a prefix)", () => {
  /**
   * The URLs one client builds: submit, state, cancel, a workflow, a raw request, and the socket.
   * @param {import("../src/index.js").Client} client @param {{url: string}[]} calls
   */
  async function urlsOf(client, calls) {
    FakeWebSocket.instances = [];
    calls.length = 0;
    const task = await client.submit("add", { args: [2, 3] });
    await task.fetchState();
    await task.cancel();
    await client.workflow({ chain: [] });
    await client.request("GET", "/tasks", { query: { limit: 5 } });
    task.on("event", () => {});
    const socket = FakeWebSocket.instances[0].url;
    client.close();
    return [...calls.map((call) => call.url), socket];
  }

  test("every HTTP and WebSocket URL stays under the base's path; trailing slashes are ignored", T, async () => {
    const { calls, fetch } = recorder();
    for (const baseUrl of ["http://api.test/svc", "http://api.test/svc/", "http://api.test/svc//"]) {
      const client = new Client({ baseUrl, fetch, WebSocket: FakeWebSocket, idleTimeout: 0 });
      assert.equal(client.baseUrl, "http://api.test/svc", baseUrl);
      assert.deepEqual(await urlsOf(client, calls), [
        "http://api.test/svc/tasks/add",
        "http://api.test/svc/tasks/t1?token=tok",
        "http://api.test/svc/tasks/t1?token=tok",
        "http://api.test/svc/workflows",
        "http://api.test/svc/tasks?limit=5",
        "ws://api.test/svc/ws?token=tok",
      ], baseUrl);
    }
    const deep = new Client({ baseUrl: "https://api.test/a/b/", fetch, WebSocket: FakeWebSocket, idleTimeout: 0 });
    const urls = await urlsOf(deep, calls);
    assert.equal(urls[0], "https://api.test/a/b/tasks/add");
    assert.equal(urls.at(-1), "wss://api.test/a/b/ws?token=tok");
  });

  test("in a page a relative base resolves against location; no base is the page's origin", T, async () => {
    const { calls, fetch } = recorder();
    // @ts-ignore Node has no location: play a page served at <prefix>/dashboard
    globalThis.location = new URL("https://app.test/svc/dashboard?x=1#top");
    try {
      const prefixed = new Client({ baseUrl: "/svc/", fetch, WebSocket: FakeWebSocket, idleTimeout: 0 });
      assert.equal(prefixed.baseUrl, "https://app.test/svc");
      const urls = await urlsOf(prefixed, calls);
      assert.equal(urls[0], "https://app.test/svc/tasks/add");
      assert.equal(urls.at(-1), "wss://app.test/svc/ws?token=tok");
      for (const baseUrl of [undefined, ""]) {
        const root = new Client({ baseUrl, fetch, WebSocket: FakeWebSocket, idleTimeout: 0 });
        assert.equal(root.baseUrl, "https://app.test");
        const rootUrls = await urlsOf(root, calls);
        assert.equal(rootUrls[0], "https://app.test/tasks/add");
        assert.equal(rootUrls.at(-1), "wss://app.test/ws?token=tok");
      }
    } finally {
      // @ts-ignore
      delete globalThis.location;
    }
  });

  test("a relative base outside a page is a clear error", T, () => {
    const { fetch } = recorder();
    assert.throws(
      () => new Client({ baseUrl: "/svc", fetch, WebSocket: FakeWebSocket }),
      /baseUrl "\/svc" is not a URL \(a relative one needs a browser page/,
    );
    assert.throws(() => new Client({ fetch, WebSocket: FakeWebSocket }), /baseUrl is required outside a browser page/);
  });
});

const chunk = (/** @type {string} */ id, /** @type {number} */ seq, /** @type {unknown} */ data, extra = {}) => ({
  seq, op: "stream", task_id: id, stream: "output", data, ...extra,
});

describe("streams (in-memory server)", () => {
  test("chunks interleave with events in seq order, reach only 'stream' listeners, and leave state alone", T, async () => {
    const client = fakeClient();
    const task = client.task("a", "t");
    /** @type {any[]} */ const order = [];
    task.on("event", (ev) => order.push(["event", ev.seq, ev.state]));
    task.on("stream", (c) => order.push(["stream", c.seq, c.data]));
    /** @type {string[]} */ const states = [];
    task.on("state", (state) => states.push(state));
    const [ws] = FakeWebSocket.instances;
    ws.open();
    ws.receive(event("a", 1, "STARTED"));
    ws.receive(chunk("a", 2, "Hello "));
    assert.equal(task.state, "STARTED", "a chunk has no state and changes none");
    assert.equal(task.done, false);
    ws.receive(chunk("a", 3, "world"));
    assert.equal(task.lastSeq, 3, "chunks advance the handle's seq");
    assert.equal(task.latest.seq, 1, "latest is the newest event, never a chunk");
    ws.receive(event("a", 4, "SUCCESS", { result: "Hello world" }));
    assert.equal(await task.result(), "Hello world");
    assert.deepEqual(order, [
      ["event", 1, "STARTED"], ["stream", 2, "Hello "], ["stream", 3, "world"], ["event", 4, "SUCCESS"],
    ]);
    assert.deepEqual(states, ["STARTED", "SUCCESS"]);
    assert.deepEqual(task.history.map((ev) => ev.seq), [1, 4], "history holds events only");
    assert.deepEqual(task.chunks(), [
      { stream: "output", data: "Hello ", seq: 2, taskId: "a" },
      { stream: "output", data: "world", seq: 3, taskId: "a" },
    ]);
  });

  test("after a drop, the resubscribe's since covers chunks and every chunk arrives once, in order", T, async () => {
    const client = fakeClient();
    const task = client.task("a", "t");
    /** @type {number[]} */ const seen = [];
    task.on("stream", (c) => seen.push(c.seq));
    const [first] = FakeWebSocket.instances;
    first.open();
    first.receive(event("a", 1, "STARTED"));
    first.receive(chunk("a", 2, "one "));
    first.receive(chunk("a", 3, "two "));
    first.receive(chunk("a", 3, "two ")); // a duplicate on the same connection
    first.drop(1013, "try again later");
    await until(() => FakeWebSocket.instances.length === 2);
    const second = FakeWebSocket.instances[1];
    second.open();
    assert.deepEqual(second.sent, [{ op: "subscribe", task_id: "a", token: "t", since: 3 }]);
    // a server that replays a little too much: what is at or below since is dropped
    second.receive(chunk("a", 2, "one "));
    second.receive(chunk("a", 3, "two ", { recovered: false }));
    second.receive(chunk("a", 4, "three"));
    second.receive(event("a", 5, "SUCCESS", { result: "one two three" }));
    assert.equal(await task.text(), "one two three");
    assert.equal(await task.text(), await task.result());
    assert.deepEqual(seen, [2, 3, 4]);
  });

  test("text() concatenates one stream's chunks (others apart, non-strings as JSON) and resolves at any end", T, async () => {
    const client = fakeClient();
    const task = client.task("a", "t");
    const text = task.text();
    const log = task.text("log");
    const [ws] = FakeWebSocket.instances;
    ws.open();
    ws.receive(chunk("a", 1, "n="));
    ws.receive(chunk("a", 2, "line 1\n", { stream: "log" }));
    ws.receive(chunk("a", 3, 42));
    ws.receive(chunk("a", 4, { k: [1, null] }));
    ws.receive(chunk("a", 5, "line 2\n", { stream: "log" }));
    let settled = false;
    text.then(() => (settled = true));
    await new Promise((done) => setTimeout(done, 5));
    assert.equal(settled, false, "text() waits for the task's end");
    ws.receive(event("a", 6, "FAILURE", { error: { type: "ValueError", message: "late" } }));
    assert.equal(await text, 'n=42{"k":[1,null]}');
    assert.equal(await log, "line 1\nline 2\n");
    assert.deepEqual(task.streamNames, ["output", "log"]);
    assert.equal(await task.text("nothing"), "", "a stream that never wrote is empty");
    await assert.rejects(task.result(), TaskFailedError, "the failure surfaces in result()");
  });

  test("text() honours a timeout and an AbortSignal, and rejects when the handle cannot watch", T, async () => {
    const client = fakeClient();
    const task = client.task("a", "t");
    await assert.rejects(task.text("output", { timeout: 5 }), { name: "TimeoutError" });
    const controller = new AbortController();
    const aborted = task.text("output", { signal: controller.signal });
    controller.abort();
    await assert.rejects(aborted, { name: "AbortError" });
    const refused = task.text();
    const [ws] = FakeWebSocket.instances;
    ws.open();
    ws.receive({ op: "error", task_id: "a", detail: "no" });
    await assert.rejects(refused, SubscriptionError);
  });

  test("stream() yields chunks that came before it, then live ones, and ends at the terminal event", T, async () => {
    const client = fakeClient();
    const task = client.task("a", "t");
    task.on("event", () => {});
    const [ws] = FakeWebSocket.instances;
    ws.open();
    ws.receive(chunk("a", 1, "early "));
    ws.receive(chunk("a", 2, "other", { stream: "log" }));
    ws.receive(chunk("a", 3, "bird "));
    /** @type {unknown[]} */ const got = [];
    const reading = (async () => {
      for await (const data of task.stream("output")) {
        got.push(data);
        if (got.length === 2) ws.receive(chunk("a", 4, "gets"));
        if (got.length === 3) ws.receive(event("a", 5, "REVOKED", { error: { type: "TaskRevokedError", message: "revoked" } }));
      }
    })();
    await reading;
    assert.deepEqual(got, ["early ", "bird ", "gets"]);
    /** @type {unknown[]} */ const late = [];
    for await (const data of task.stream()) late.push(data);
    assert.deepEqual(late, got, "an iterator made after the end replays the whole stream and ends");
    /** @type {unknown[]} */ const log = [];
    for await (const data of task.stream("log")) log.push(data);
    assert.deepEqual(log, ["other"]);
  });

  test("stream() waits for its first chunk, throws the signal's reason on abort, and ends on unwatch()", T, async () => {
    const client = fakeClient();
    const task = client.task("a", "t");
    const controller = new AbortController();
    /** @type {unknown[]} */ const got = [];
    const aborted = (async () => {
      for await (const data of task.stream("output", { signal: controller.signal })) {
        got.push(data);
        controller.abort();
      }
    })();
    const ended = (async () => {
      const all = [];
      for await (const data of task.stream()) all.push(data);
      return all;
    })();
    await until(() => FakeWebSocket.instances.length === 1);
    const [ws] = FakeWebSocket.instances;
    ws.open();
    ws.receive(chunk("a", 1, "x"));
    ws.receive(chunk("a", 2, "y"));
    await assert.rejects(aborted, { name: "AbortError" });
    assert.deepEqual(got, ["x"], "nothing is yielded after the abort");
    task.unwatch();
    assert.deepEqual(await ended, ["x", "y"]);
  });

  test("a chunk with recovered: false is surfaced: the gap is on the chunk, and the text is what arrived", T, async () => {
    const client = fakeClient();
    const task = client.task("a", "t");
    /** @type {any[]} */ const chunks = [];
    task.on("stream", (c) => chunks.push(c));
    const [ws] = FakeWebSocket.instances;
    ws.open();
    ws.receive(chunk("a", 1, "a "));
    ws.receive(chunk("a", 7, "g ", { recovered: false })); // 2..6 were cut by the server's cap
    ws.receive(chunk("a", 8, "h"));
    ws.receive(event("a", 9, "SUCCESS", { result: "a b c d e f g h" }));
    assert.equal(chunks[0].recovered, undefined);
    assert.equal(chunks[1].recovered, false);
    assert.equal("recovered" in chunks[2], false);
    assert.deepEqual(task.chunks().filter((c) => c.recovered === false).map((c) => c.seq), [7]);
    assert.equal(await task.text(), "a g h");
  });

  test("a workflow's handle gets its steps' chunks with the step's id, index and own seq", T, async () => {
    const client = fakeClient();
    const wf = client.workflowHandle("wf", "tok", ["s0", "s1"]);
    /** @type {any[]} */ const chunks = [];
    wf.on("stream", (c) => chunks.push(c));
    const [ws] = FakeWebSocket.instances;
    ws.open();
    ws.receive(event("wf", 1, "PENDING"));
    ws.receive(chunk("s0", 2, "zero ", { workflow_id: "wf", step: 0, step_seq: 3 }));
    ws.receive(chunk("s0", 9, "own stream")); // the step's own stream: not watched, dropped
    ws.receive(chunk("s1", 3, "one", { workflow_id: "wf", step: 1, step_seq: 2 }));
    ws.receive(event("wf", 4, "SUCCESS", { result: "done" }));
    assert.equal(await wf.result(), "done");
    assert.deepEqual(chunks, [
      { stream: "output", data: "zero ", seq: 2, taskId: "s0", step: 0, stepSeq: 3 },
      { stream: "output", data: "one", seq: 3, taskId: "s1", step: 1, stepSeq: 2 },
    ]);
    assert.equal(await wf.text(), "zero one");
  });

  test("a frame with an op this SDK does not know is neither an event nor a chunk", T, async () => {
    const client = fakeClient();
    const task = client.task("a", "t");
    /** @type {any[]} */ const seen = [];
    task.on("event", (ev) => seen.push(ev));
    task.on("stream", (c) => seen.push(c));
    const [ws] = FakeWebSocket.instances;
    ws.open();
    ws.receive({ op: "something-new", task_id: "a", seq: 5 });
    assert.deepEqual(seen, []);
    assert.equal(task.lastSeq, 0);
  });
});
