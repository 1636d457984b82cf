/**
 * The worker cards: one per hostname the feed reports, with its heartbeat's age, load and counts.
 * @module
 */

import { $, ago, el, set, showCards } from "./dom.js";

const FIELDS = [["heartbeat", "heartbeat"], ["active", "active"], ["processed", "processed"],
                ["outcomes", "succeeded / failed"], ["pool", "pool"], ["queues", "queues"],
                ["load", "load avg"], ["proc", "pid · version"]];

function workerCard(hostname) {
  const fields = {};
  const dl = el("dl");
  for (const [key, label] of FIELDS) {
    fields[key] = el("dd");
    fields[key].dataset.testid = `worker-${key}`;
    dl.append(el("dt", { textContent: label }), fields[key]);
  }
  fields.badge = el("span", { className: "state" });
  fields.badge.dataset.testid = "worker-status";
  const card = el("article", { className: "card" },
    el("div", { className: "top" }, el("span", { className: "title", textContent: hostname, title: hostname }), fields.badge), dl);
  card.dataset.testid = "worker";
  card.dataset.hostname = hostname;
  card.fields = fields;
  return card;
}

/** The worker cards over the page's #workers; `now` is the server's clock (unix s). */
export function createWorkers(now) {
  const box = $("workers");
  const summary = $("workers-summary");
  const cards = new Map(); // hostname → card

  /** @param {Record<string, any>[]} workers  as the feed sends them */
  function render(workers) {
    const seen = new Set();
    const online = workers.filter((worker) => worker.online).length;
    summary.textContent = workers.length ? `${online} of ${workers.length} online` : "";
    for (const worker of workers) {
      seen.add(worker.hostname);
      let card = cards.get(worker.hostname);
      if (!card) {
        card = workerCard(worker.hostname);
        cards.set(worker.hostname, card);
      }
      card.worker = worker;
      const f = card.fields;
      card.dataset.online = String(worker.online);
      set(f.badge, worker.online ? "online" : "offline");
      f.badge.className = `state ${worker.online ? "online" : "offline"}`;
      set(f.heartbeat, ago(worker.last_heartbeat, now()));
      set(f.active, String(worker.active));
      set(f.processed, String(worker.processed));
      set(f.outcomes, `${worker.succeeded} / ${worker.failed}`);
      set(f.pool, worker.pool == null ? "?" : String(worker.pool));
      set(f.queues, (worker.queues ?? []).join(", ") || "—");
      set(f.load, (worker.loadavg ?? []).map((value) => Number(value).toFixed(2)).join("  ") || "—");
      set(f.proc, `${worker.pid ?? "?"} · ${worker.version ?? "?"}`);
    }
    for (const [hostname, card] of cards) {
      if (!seen.has(hostname)) { card.remove(); cards.delete(hostname); }
    }
    showCards(box, workers.map((worker) => cards.get(worker.hostname)), "No worker seen yet.");
  }

  /** Age the heartbeats shown (once a second). */
  function tick() {
    for (const card of cards.values()) set(card.fields.heartbeat, ago(card.worker?.last_heartbeat, now()));
  }

  return { render, tick };
}
