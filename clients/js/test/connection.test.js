// Connection life (client.on), connectTimeout, token renewal (getToken), the bounded history and the
// events() backlog, against an in-memory WebSocket; and ConflictError's mapping.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { EventBacklog } from "../src/backlog.js";
import { ConflictError, ConnectionClosedError, SubscriptionError, errorFromResponse } from "../src/index.js";
import { FakeWebSocket, event, fakeClient, until } from "./fake-websocket.js";

const T = { timeout: 10_000 };
const EXPIRED = "the token does not open this task, or it has expired";
const tick = (ms = 5) => new Promise((done) => setTimeout(done, ms));

describe("client.on: connected, disconnected, reconnecting", () => {
  test("a lost socket is told as disconnected {code, reason}, each retry as reconnecting {attempt, delay}, then connected", T, async () => {
    const client = fakeClient();
    /** @type {any[]} */ const life = [];
    client.on("connected", () => life.push(["connected"]));
    client.on("disconnected", (info) => life.push(["disconnected", info]));
    const off = client.on("reconnecting", (info) => life.push(["reconnecting", info.attempt, typeof info.delay]));
    client.task("a", "t").on("event", () => {});
    FakeWebSocket.instances[0].open();
    FakeWebSocket.instances[0].drop(1006, "");
    await until(() => FakeWebSocket.instances.length === 2);
    FakeWebSocket.instances[1].drop(1006, ""); // never opened: no disconnected, another retry
    await until(() => FakeWebSocket.instances.length === 3);
    FakeWebSocket.instances[2].open();
    assert.deepEqual(life, [
      ["connected"],
      ["disconnected", { code: 1006, reason: "" }],
      ["reconnecting", 1, "number"],
      ["reconnecting", 2, "number"],
      ["connected"],
    ]);
    off();
    FakeWebSocket.instances[2].drop(1013, "try again later");
    await until(() => FakeWebSocket.instances.length === 4);
    assert.deepEqual(life.at(-1), ["disconnected", { code: 1013, reason: "try again later" }], "off() removed that listener");
    client.close();
  });

  test("the client's own closes (idle, close()) are not disconnections; an unknown event name is a TypeError", T, async () => {
    const client = fakeClient({ idleTimeout: 1 });
    /** @type {string[]} */ const life = [];
    client.on("disconnected", () => life.push("disconnected"));
    client.on("reconnecting", () => life.push("reconnecting"));
    const task = client.task("a", "t");
    task.on("event", () => {});
    const [ws] = FakeWebSocket.instances;
    ws.open();
    ws.receive(event("a", 1, "SUCCESS", { result: 1 }));
    await until(() => ws.closedByClient);
    client.task("b", "t").on("event", () => {});
    FakeWebSocket.instances[1].open();
    client.close();
    await tick();
    assert.deepEqual(life, []);
    assert.throws(() => client.on("open", () => {}), /no connection event "open"/);
  });
});

describe("connectTimeout", () => {
  test("a socket that does not open in time is closed and retried through the backoff", T, async () => {
    const client = fakeClient({ connectTimeout: 20 });
    /** @type {number[]} */ const attempts = [];
    client.on("reconnecting", ({ attempt }) => attempts.push(attempt));
    const result = client.task("a", "t").result();
    await until(() => FakeWebSocket.instances.length === 3);
    assert.ok(FakeWebSocket.instances[0].closedByClient && FakeWebSocket.instances[1].closedByClient);
    assert.deepEqual(attempts.slice(0, 2), [1, 2]);
    FakeWebSocket.instances[0].open(); // a late open of a retired socket changes nothing
    assert.equal(FakeWebSocket.instances[0].sent.length, 0);
    const third = FakeWebSocket.instances[2];
    third.open();
    assert.deepEqual(third.sent, [{ op: "subscribe", task_id: "a", token: "t", since: 0 }]);
    third.receive(event("a", 1, "SUCCESS", { result: 7 }));
    assert.equal(await result, 7);
    await tick(40);
    assert.equal(FakeWebSocket.instances.length, 3, "an open socket is not timed out");
    client.close();
  });
});

describe("getToken: renewing a refused task token", () => {
  test("a refused subscribe that carried a token asks getToken once and subscribes again with the new one", T, async () => {
    /** @type {string[]} */ const asked = [];
    const client = fakeClient({ getToken: async (id) => (asked.push(id), `fresh-${id}`) });
    const task = client.task("a", "old");
    const result = task.result();
    const [ws] = FakeWebSocket.instances;
    ws.open();
    ws.receive({ op: "error", task_id: "a", detail: EXPIRED });
    await until(() => ws.sent.length === 2);
    assert.deepEqual(asked, ["a"]);
    assert.deepEqual(ws.sent[1], { op: "subscribe", task_id: "a", token: "fresh-a", since: 0 });
    assert.equal(task.token, "fresh-a", "the handle keeps the new token (cancel, fetchState)");
    ws.receive(event("a", 1, "SUCCESS", { result: 3 }));
    assert.equal(await result, 3);
  });

  test("once per refusal: refused again, the handle fails; after a frame came, a later expiry renews again", T, async () => {
    let n = 0;
    const client = fakeClient({ getToken: () => `t${++n}` });
    const once = client.task("a", "t0");
    const failed = once.result();
    const [ws] = FakeWebSocket.instances;
    ws.open();
    ws.receive({ op: "error", task_id: "a", detail: EXPIRED });
    await until(() => ws.sent.length === 2);
    ws.receive({ op: "error", task_id: "a", detail: EXPIRED });
    await assert.rejects(failed, (error) => error instanceof SubscriptionError && error.detail === EXPIRED);
    assert.equal(n, 1);

    const lasting = client.task("b", "t0");
    const done = lasting.result();
    ws.receive({ op: "error", task_id: "b", detail: EXPIRED });
    await until(() => ws.sent.some((frame) => frame.task_id === "b" && frame.token === "t2"));
    ws.receive(event("b", 1, "STARTED"));
    ws.drop(1006); // days later the connection drops and the renewed token has expired too
    await until(() => FakeWebSocket.instances.length === 2);
    const second = FakeWebSocket.instances[1];
    second.open();
    second.receive({ op: "error", task_id: "b", detail: EXPIRED });
    await until(() => second.sent.some((frame) => frame.token === "t3"));
    assert.deepEqual(second.sent.at(-1), { op: "subscribe", task_id: "b", token: "t3", since: 1 });
    second.receive(event("b", 2, "SUCCESS", { result: "ok" }));
    assert.equal(await done, "ok");
  });

  test("getToken giving nothing new, or throwing, lets the refusal stand (the throw is the cause)", T, async () => {
    const boom = new Error("backend down");
    const client = fakeClient({ getToken: (id) => (id === "same" ? "tok" : id === "none" ? null : Promise.reject(boom)) });
    const same = client.task("same", "tok").result();
    const none = client.task("none", "tok").result();
    const thrown = client.task("thrown", "tok").result();
    const [ws] = FakeWebSocket.instances;
    ws.open();
    for (const id of ["same", "none", "thrown"]) ws.receive({ op: "error", task_id: id, detail: EXPIRED });
    await assert.rejects(same, SubscriptionError);
    await assert.rejects(none, SubscriptionError);
    await assert.rejects(thrown, (error) => error instanceof SubscriptionError && error.cause === boom);
    assert.equal(ws.sent.length, 3, "no subscribe was retried");
  });

  test("without a token, or without getToken, a refusal fails at once", T, async () => {
    let asked = 0;
    const client = fakeClient({ getToken: () => (asked++, "x") });
    const tokenless = client.task("a", null).result();
    const [ws] = FakeWebSocket.instances;
    ws.open();
    ws.receive({ op: "error", task_id: "a", detail: "an API key or this task's token is required" });
    await assert.rejects(tokenless, SubscriptionError);
    assert.equal(asked, 0);
  });

  test("a handshake refused with 1008 renews the token it carried and connects once more; refused again, it is final", T, async () => {
    /** @type {string[]} */ const asked = [];
    const client = fakeClient({ getToken: (id) => (asked.push(id), `fresh-${asked.length}`) });
    const result = client.task("a", "expired").result();
    const [first] = FakeWebSocket.instances;
    assert.match(first.url, /\?token=expired$/);
    first.open();
    first.drop(1008, "an API key or a task token is required");
    await until(() => FakeWebSocket.instances.length === 2);
    const second = FakeWebSocket.instances[1];
    assert.match(second.url, /\?token=fresh-1$/);
    second.open();
    assert.deepEqual(second.sent, [{ op: "subscribe", task_id: "a", token: "fresh-1", since: 0 }]);
    second.drop(1008, "an API key or a task token is required");
    await assert.rejects(result, (error) => error instanceof ConnectionClosedError && error.code === 1008);
    assert.deepEqual(asked, ["a"]);
    assert.equal(FakeWebSocket.instances.length, 2);
  });
});

describe("historyLimit", () => {
  const progress = (/** @type {string} */ id, /** @type {number} */ seq) =>
    event(id, seq, "PROGRESS", { progress: { current: seq, total: null, message: null } });

  test("history keeps the newest events; a late iterator replays what it holds; a consuming one gets every event", T, async () => {
    const client = fakeClient({ historyLimit: 3 });
    const task = client.task("a", "t");
    /** @type {number[]} */ const consumed = [];
    const consuming = (async () => {
      for await (const ev of task.events()) consumed.push(ev.seq);
    })();
    await until(() => FakeWebSocket.instances.length === 1);
    const [ws] = FakeWebSocket.instances;
    ws.open();
    ws.receive(event("a", 1, "STARTED"));
    for (let seq = 2; seq <= 9; seq++) {
      ws.receive(progress("a", seq));
      await tick(0);
    }
    assert.deepEqual(task.history.map((ev) => ev.seq), [7, 8, 9]);
    /** @type {number[]} */ const late = [];
    const lateReader = (async () => {
      for await (const ev of task.events()) late.push(ev.seq);
    })();
    await tick();
    ws.receive(event("a", 10, "SUCCESS", { result: 1 }));
    await Promise.all([consuming, lateReader]);
    assert.deepEqual(consumed, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "every event, whatever the bound");
    assert.deepEqual(late, [7, 8, 9, 10], "the newest 3 then what followed");
  });

  test("an iterator that lags past the bound has its unread PROGRESS coalesced, never a state or the end", T, async () => {
    const client = fakeClient({ historyLimit: 4 });
    const task = client.task("a", "t");
    const iterator = task.events();
    const firstNext = iterator.next(); // starts watching
    await until(() => FakeWebSocket.instances.length === 1);
    FakeWebSocket.instances[0].open();
    FakeWebSocket.instances[0].receive(event("a", 1, "STARTED"));
    assert.equal((await firstNext).value.seq, 1);
    const [ws] = FakeWebSocket.instances;
    // the consumer is busy: 20 events arrive before it asks for the next
    for (let seq = 2; seq <= 20; seq++) ws.receive(progress("a", seq));
    ws.receive(event("a", 21, "RETRY"));
    ws.receive(progress("a", 22));
    ws.receive(event("a", 23, "SUCCESS", { result: 1 }));
    /** @type {string[]} */ const rest = [];
    for await (const ev of iterator) rest.push(`${ev.seq}:${ev.state}`);
    assert.equal(rest.at(-1), "23:SUCCESS");
    assert.ok(rest.includes("21:RETRY"));
    assert.ok(rest.length <= 8, `bounded: ${rest}`);
    const seqs = rest.map((item) => Number(item.split(":")[0]));
    assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), "in order");
  });

  test("EventBacklog coalesces per task id, keeps the newest PROGRESS of each and every other event, in order", T, () => {
    const backlog = new EventBacklog(4);
    let n = 0;
    const push = (/** @type {string} */ id, state = "PROGRESS") => backlog.push({ task_id: id, state, n: ++n });
    for (let i = 0; i < 10; i++) push("s0");
    push("s1", "STARTED");
    for (let i = 0; i < 10; i++) push(i % 3 ? "s0" : "s1");
    /** @type {{task_id: string, state: string, n: number}[]} */ const out = [];
    for (let item = backlog.shift(); item; item = backlog.shift()) out.push(item);
    assert.ok(out.length <= 8, `bounded: ${out.map((item) => item.n)}`);
    assert.equal(backlog.coalesced, n - out.length);
    assert.ok(out.some((item) => item.state === "STARTED"), "a state is never dropped");
    assert.equal(out.at(-1)?.n, n, "the newest stays");
    assert.ok(out.some((item) => item.task_id === "s0" && item.n === 20), "and the newest of s0");
    assert.deepEqual(out.map((item) => item.n), out.map((item) => item.n).sort((x, y) => x - y), "in order");
  });

  test("historyLimit below 1 is refused", T, () => {
    assert.throws(() => fakeClient({ historyLimit: 0 }), RangeError);
  });
});

test("409 (an Idempotency-Key reused for another request) is a ConflictError", T, async () => {
  const response = new Response(JSON.stringify({ title: "Conflict", status: 409, detail: "key used" }), { status: 409 });
  const error = await errorFromResponse(response, "POST", "http://h/tasks/add");
  assert.ok(error instanceof ConflictError);
  assert.equal(error.status, 409);
  assert.equal(error.detail, "key used");
});
