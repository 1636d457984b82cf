/**
 * The detail drawer: the selected task's fields (as the live table knows them), its whole history
 * (GET /tasks/{id}/events), Cancel and Retry, and its streams live as server-sent events.
 * @module
 */

import { backoffDelay, BACKOFF_DEFAULTS } from "../sdk/backoff.js";
import { describe } from "./api.js";
import { $, el, seconds, when } from "./dom.js";
import { RETRYABLE, TERMINAL, runtimeOf } from "./state.js";

/**
 * Lines of server-sent events from a fetch response's body: each message's `data`, in order.
 * @param {ReadableStream<Uint8Array>} body
 */
export async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const blocks = buffer.replace(/\r\n?/g, "\n").split("\n\n");
      buffer = blocks.pop();   // an incomplete message waits for the rest
      for (const block of blocks) {
        const data = block.split("\n").filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
        if (data) yield data;   // comments (": ping") and id-only blocks carry none
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * The drawer over the page's #detail.
 * @param {{api: ReturnType<typeof import("./api.js").createApi>, base: string,
 *   row: (id: string) => Record<string, any> | undefined, now: () => number, select: (id: string | null) => void,
 *   unauthorized: () => void, scrollToTask: (id: string) => void}} options
 *   row: the live table's row of a task; now: the server's clock (unix s); select: the selection changed.
 */
export function createDetail({ api, base, row: rowOf, now, select, unauthorized, scrollToTask }) {
  const panel = $("detail");
  const streams = createStreams({ api, base, unauthorized });
  let id = null;
  let fetching = false;
  let again = false;

  function note(text, bad = false, testid = "detail-note") {
    const box = $("detail-note");
    box.textContent = text;
    box.className = bad ? "note bad" : "note";
    box.dataset.testid = testid;
  }

  function open(taskId) {
    id = taskId;
    select(taskId);
    panel.hidden = false;
    $("detail-note").textContent = "";
    $("detail-note").className = "note";
    $("detail-events").replaceChildren();
    $("detail-outcome").textContent = "";
    show();
    refresh();
    streams.start(taskId);
  }

  function close() {
    panel.hidden = true;
    streams.stop();
    id = null;
    select(null);
  }

  /** The row's fields, as the live table knows them. */
  function show() {
    const row = rowOf(id) ?? { id, state: "PENDING" };
    panel.dataset.taskId = id;
    panel.dataset.state = row.state;
    $("detail-name").textContent = row.name ?? "task";
    $("detail-id").textContent = id;
    $("detail-state").textContent = row.state;
    $("detail-state").className = `state ${row.state}`;
    const meta = [["worker", row.worker], ["args", row.args], ["retries", row.retries], ["submitted", when(row.submitted)],
                  ["started", when(row.started)], ["ended", when(row.ended)], ["runtime", seconds(runtimeOf(row, now()))],
                  ["workflow", row.workflow_id]];
    $("detail-meta").replaceChildren(...meta.filter(([, value]) => value != null && value !== "")
      .flatMap(([label, value]) => [el("dt", { textContent: label }), el("dd", { textContent: String(value) })]));
    $("detail-cancel").hidden = TERMINAL.has(row.state);
    $("detail-retry").hidden = !RETRYABLE.has(row.state);
    const outcome = $("detail-outcome");
    outcome.textContent = row.error ?? row.result ?? "";
    outcome.className = row.error ? "outcome bad" : "outcome";
  }

  /** Fetch the task's events (again, if the task changed while a fetch was running). */
  async function refresh() {
    if (panel.hidden) return;
    show();
    if (fetching) { again = true; return; }
    fetching = true;
    const asked = id;
    try {
      const events = await api.call("GET", `/tasks/${encodeURIComponent(asked)}/events`);
      if (asked === id) showEvents(events);
    } catch (error) {
      if (asked === id) note(describe(error), true);
    } finally {
      fetching = false;
      if (again) { again = false; refresh(); }
    }
  }

  function showEvents(frames) {
    const events = frames.filter((frame) => frame.op == null);  // events only (chunks: the streams)
    const first = events[0]?.ts;
    $("detail-events").replaceChildren(...events.map((event) => {
      const parts = [];
      if (event.progress) parts.push(`${event.progress.current}${event.progress.total != null ? `/${event.progress.total}` : ""}${event.progress.message ? ` — ${event.progress.message}` : ""}`);
      if (event.error) parts.push(`${event.error.type}: ${event.error.message}`);
      if (event.state === "SUCCESS" && event.result !== undefined) parts.push(`→ ${JSON.stringify(event.result)}`);
      if (event.worker && (event.state === "RECEIVED" || event.state === "STARTED")) parts.push(event.worker);
      if (event.retries) parts.push(`retry ${event.retries}`);
      const tr = el("tr", {},
        el("td", { textContent: String(event.seq) }),
        el("td", {}, el("span", { className: `state ${event.state}`, textContent: event.state })),
        el("td", { className: "when", textContent: `${when(event.ts)}${first != null ? ` +${(event.ts - first).toFixed(2)}s` : ""}` }),
        el("td", { className: "what", textContent: parts.join(" · ") }));
      tr.dataset.testid = "event";
      tr.dataset.state = event.state;
      return tr;
    }));
    const last = events.at(-1);
    if (last?.error && !$("detail-outcome").textContent) {
      $("detail-outcome").textContent = `${last.error.type}: ${last.error.message}`;
      $("detail-outcome").className = "outcome bad";
    }
  }

  async function cancel() {
    const button = $("detail-cancel");
    button.disabled = true;
    try {
      await api.call("DELETE", `/tasks/${encodeURIComponent(id)}?terminate=true`);
      note("Cancel sent: the task is revoked (terminated if it was running).");
    } catch (error) {
      note(describe(error), true);
    } finally {
      button.disabled = false;
    }
  }

  async function retry() {
    const button = $("detail-retry");
    button.disabled = true;
    const old = id;
    try {
      const accepted = await api.call("POST", `/tasks/${encodeURIComponent(old)}/retry`);
      open(accepted.task_id);
      const box = $("detail-note");
      box.className = "note";
      box.replaceChildren(`Retry of ${old.slice(0, 8)} submitted as `, el("code", { textContent: accepted.task_id }));
      box.dataset.testid = "retried-as";
      box.dataset.taskId = accepted.task_id;
      box.dataset.retryOf = old;
      scrollToTask(accepted.task_id);
    } catch (error) {
      note(describe(error), true);
    } finally {
      button.disabled = false;
    }
  }

  $("detail-close").addEventListener("click", close);
  $("detail-cancel").addEventListener("click", cancel);
  $("detail-retry").addEventListener("click", retry);
  document.addEventListener("keydown", (event) => { if (event.key === "Escape" && !panel.hidden) close(); });

  return {
    open,
    close,
    refresh,
    /** Show the row's fields again if the drawer is open (once a second: a running task's runtime). */
    tick() { if (!panel.hidden) show(); },
  };
}

/**
 * The selected task's streams, live: its frames as server-sent events (GET /tasks/{id}/events with
 * Accept: text/event-stream and the API key in a header, like this page's other calls, which a
 * browser's WebSocket cannot send). Each stream's text grows in its own box. The response ends after
 * the terminal event; one that ends early (a restart, a reader too slow) is resumed after the last
 * seq seen (Last-Event-ID), with the SDK's backoff, so each chunk shows once, in order.
 */
function createStreams({ api, base, unauthorized }) {
  const section = $("detail-streams");
  const boxes = new Map();   // stream name → {wrap, box, count, chunks}
  let id = null;
  let controller = null;
  let timer = null;
  let lastSeq = 0;
  let attempt = 0;

  function start(taskId) {
    stop();
    id = taskId;
    lastSeq = 0;
    attempt = 0;
    section.hidden = true;
    for (const { wrap } of boxes.values()) wrap.remove();
    boxes.clear();
    run();
  }

  function stop() {
    id = null;
    controller?.abort();
    controller = null;
    clearTimeout(timer);
    timer = null;
  }

  async function run() {
    const watched = id;
    const mine = (controller = new AbortController());
    const headers = api.headers({ Accept: "text/event-stream" });
    if (lastSeq) headers["Last-Event-ID"] = String(lastSeq);
    let ended = false;
    try {
      const response = await fetch(`${base}/tasks/${encodeURIComponent(watched)}/events`, { headers, signal: mine.signal });
      if (!response.ok) {
        if (response.status === 401) unauthorized();
        if (response.status < 500 && response.status !== 429) return;   // retrying cannot fix it
      } else {
        const opened = Date.now();
        for await (const data of sseData(response.body)) {
          if (id !== watched) return;
          let frame;
          try { frame = JSON.parse(data); } catch { continue; }
          ended = take(watched, frame) || ended;
        }
        if (Date.now() - opened >= BACKOFF_DEFAULTS.stableAfter) attempt = 0;
      }
    } catch {
      // a network error, or aborted (then id moved on, below)
    }
    if (ended || id !== watched || mine.signal.aborted) return;
    timer = setTimeout(run, backoffDelay(attempt++));
  }

  /** One frame of the selected task; true for its terminal event. */
  function take(watched, frame) {
    if (typeof frame.seq === "number") {
      if (frame.seq <= lastSeq && frame.recovered !== false) return false;  // seen before a resume
      lastSeq = Math.max(lastSeq, frame.seq);
    }
    if (frame.op === "stream") { append(frame); return false; }
    return frame.op == null && frame.task_id === watched && frame.step_seq == null && TERMINAL.has(frame.state);
  }

  function append(frame) {
    const name = typeof frame.stream === "string" ? frame.stream : "output";
    let entry = boxes.get(name);
    if (!entry) {
      const label = el("span", { textContent: name });
      const count = el("span");
      const box = el("pre", { className: "stream" });
      box.dataset.testid = "detail-stream";
      box.dataset.stream = name;
      const wrap = el("div", {}, el("div", { className: "stream-name" }, label, count), box);
      entry = { wrap, box, count, chunks: 0 };
      boxes.set(name, entry);
      section.append(wrap);
      section.hidden = false;
    }
    if (frame.recovered === false && !entry.box.dataset.gap) {
      entry.box.dataset.gap = "true";
      entry.count.before(el("span", { className: "gap", textContent: "chunks cut by the server before this point" }));
    }
    const follow = entry.box.scrollTop + entry.box.clientHeight >= entry.box.scrollHeight - 4;
    entry.box.append(typeof frame.data === "string" ? frame.data : JSON.stringify(frame.data));
    entry.chunks += 1;
    entry.box.dataset.chunks = String(entry.chunks);
    entry.count.textContent = `${entry.chunks} chunk${entry.chunks === 1 ? "" : "s"}`;
    if (follow) entry.box.scrollTop = entry.box.scrollHeight;
  }

  return { start, stop };
}
