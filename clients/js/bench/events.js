// One Client watching many count_to tasks at once over its single WebSocket, against real processes
// (a private redis-server, a worker, the API, started by test/harness.js).
//
//   node bench/events.js                 # 1,000 tasks of count_to(n=10, delay=0)
//   TASKS=200 N=50 CONCURRENCY=8 node bench/events.js
//
// Prints the submit rate, the events/second the client received, and the time until every task
// was terminal. "gaps" counts seq jumps (PROGRESS events coalesced by the server for a slow reader).

import { WebSocket } from "ws";

import { Client } from "../src/index.js";
import { Stack } from "../test/harness.js";

const TASKS = Number(process.env.TASKS ?? 1000);
const N = Number(process.env.N ?? 10);
const DELAY = Number(process.env.DELAY ?? 0);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 4);
const SUBMIT_PARALLEL = 50;

const stack = new Stack({ workerConcurrency: CONCURRENCY });
try {
  await stack.start();
  const client = new Client({ baseUrl: stack.baseUrl, WebSocket });
  let events = 0;
  let gaps = 0;
  let firstEvent = 0;
  let lastEvent = 0;
  const t0 = performance.now();

  /** @type {Promise<unknown>[]} */
  const results = [];
  let next = 0;
  const submitter = async () => {
    while (next < TASKS) {
      next++;
      const task = await client.submit("count_to", { kwargs: { n: N, delay: DELAY } });
      let previous = 0;
      task.on("event", (event) => {
        const now = performance.now();
        if (!firstEvent) firstEvent = now;
        lastEvent = now;
        events++;
        if (event.seq !== previous + 1) gaps++;
        previous = event.seq;
      });
      results.push(task.result({ timeout: 120_000 }));
    }
  };
  await Promise.all(Array.from({ length: SUBMIT_PARALLEL }, submitter));
  const submitted = performance.now();
  const values = await Promise.all(results);
  const done = performance.now();
  client.close();

  const wrong = values.filter((value) => value !== N).length;
  const expected = TASKS * (N + 4); // PENDING, RECEIVED, STARTED, N × PROGRESS, SUCCESS
  const seconds = (ms) => (ms / 1000).toFixed(2);
  console.log(`tasks                 ${TASKS} × count_to(n=${N}, delay=${DELAY}), worker concurrency ${CONCURRENCY}`);
  console.log(`submitted in          ${seconds(submitted - t0)} s (${Math.round(TASKS / ((submitted - t0) / 1000))} submits/s)`);
  console.log(`all terminal after    ${seconds(done - t0)} s`);
  console.log(`events received       ${events} of ${expected} emitted (${gaps} seq gaps from coalescing)`);
  console.log(`events/s received     ${Math.round(events / ((lastEvent - firstEvent) / 1000))}`);
  console.log(`wrong results         ${wrong}`);
  if (wrong) process.exitCode = 1;
} finally {
  await stack.stop();
}
