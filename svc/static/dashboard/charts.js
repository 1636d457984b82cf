/**
 * The rate cards (per task name: succeeded, failed and retried per minute, stacked bars) and the queue
 * cards (depth over the last samples, a filled line), drawn on <canvas> in the page's colours.
 * @module
 */

import { $, el, set, seconds, showCards } from "./dom.js";
import { QUEUE_SAMPLES } from "./state.js";

function colours() {
  const css = getComputedStyle(document.documentElement);
  const get = (name) => css.getPropertyValue(name).trim();
  return { ok: get("--ok"), bad: get("--bad"), warn: get("--warn"), line: get("--line"), accent: get("--accent"), muted: get("--muted") };
}

/** A canvas sized for the device's pixels; returns its 2D context in CSS pixels, or null if not laid out. */
function sizedContext(canvas) {
  const width = canvas.clientWidth, height = canvas.clientHeight, ratio = window.devicePixelRatio || 1;
  if (!width || !height) return null;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height };
}

/** Stacked bars, one per minute: succeeded (bottom), failed, retried. */
function drawRates(canvas, perMinute, palette) {
  const sized = sizedContext(canvas);
  if (!sized) return;
  const { ctx, width, height } = sized;
  const series = [[perMinute.SUCCESS ?? [], palette.ok], [perMinute.FAILURE ?? [], palette.bad], [perMinute.RETRY ?? [], palette.warn]];
  const minutes = Math.max(...series.map(([values]) => values.length), 1);
  let peak = 1;
  for (let m = 0; m < minutes; m += 1) peak = Math.max(peak, series.reduce((sum, [values]) => sum + (values[m] ?? 0), 0));
  const slot = width / minutes, bar = Math.max(1, slot - 2);
  ctx.fillStyle = palette.line;
  ctx.fillRect(0, height - 1, width, 1);
  for (let m = 0; m < minutes; m += 1) {
    let y = height - 1;
    for (const [values, colour] of series) {
      const h = ((values[m] ?? 0) / peak) * (height - 4);
      if (h <= 0) continue;
      ctx.fillStyle = colour;
      ctx.fillRect(m * slot + 1, y - h, bar, h);
      y -= h;
    }
  }
}

/** A line of the queue's depth samples, filled below. */
function drawDepth(canvas, samples, palette) {
  const sized = sizedContext(canvas);
  if (!sized) return;
  const { ctx, width, height } = sized;
  ctx.fillStyle = palette.line;
  ctx.fillRect(0, height - 1, width, 1);
  if (samples.length < 2) return;
  const peak = Math.max(1, ...samples);
  const step = width / (QUEUE_SAMPLES - 1);
  const x0 = width - (samples.length - 1) * step;
  ctx.beginPath();
  samples.forEach((value, i) => {
    const x = x0 + i * step, y = height - 2 - (value / peak) * (height - 6);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.strokeStyle = palette.accent;
  ctx.lineWidth = 1.5;
  ctx.stroke();
  ctx.lineTo(width, height);
  ctx.lineTo(x0, height);
  ctx.closePath();
  ctx.globalAlpha = 0.15;
  ctx.fillStyle = palette.accent;
  ctx.fill();
  ctx.globalAlpha = 1;
}

/** The cards of `keys`, in order: kept ones reused, new ones made, gone ones removed; shown in `box`. */
function keyedCards(box, cards, keys, make, emptyText) {
  for (const [key, card] of cards) if (!keys.includes(key)) { card.remove(); cards.delete(key); }
  const wanted = keys.map((key) => cards.get(key) ?? cards.set(key, make(key)).get(key));
  showCards(box, wanted, emptyText);
  return wanted;
}

function rateCard(name) {
  const card = el("article", { className: "card" });
  card.dataset.testid = "rate";
  card.dataset.taskName = name;
  card.canvas = el("canvas", { width: 300, height: 48 });
  card.canvas.setAttribute("role", "img");
  card.legend = el("div", { className: "legend" });
  card.runtimes = el("div", { className: "legend" });
  card.append(el("div", { className: "top" }, el("span", { className: "title", textContent: name })), card.canvas, card.legend, card.runtimes);
  return card;
}

function queueCard(name) {
  const card = el("article", { className: "card" });
  card.dataset.testid = "queue";
  card.dataset.queue = name;
  card.depth = el("span", { className: "depth" });
  card.depth.dataset.testid = "queue-depth";
  card.canvas = el("canvas", { width: 300, height: 48 });
  card.append(el("div", { className: "top" }, el("span", { className: "title", textContent: name }), card.depth), card.canvas);
  return card;
}

/** The rate and queue cards over the page's #rates and #queues. */
export function createCharts() {
  const ratesBox = $("rates");
  const queuesBox = $("queues");
  const rateCards = new Map();
  const queueCards = new Map();

  /** @param {Record<string, any>} rates  task name → {per_minute, totals, p50, p95} */
  function renderRates(rates) {
    const palette = colours();
    const names = Object.keys(rates).sort();
    keyedCards(ratesBox, rateCards, names, rateCard, "No task has finished yet.");
    for (const name of names) {
      const card = rateCards.get(name);
      const rate = rates[name];
      const pm = rate.per_minute ?? {};
      const totals = rate.totals ?? {};
      const now = (key) => (pm[key] ?? []).at(-1) ?? 0;
      drawRates(card.canvas, pm, palette);
      card.canvas.setAttribute("aria-label", `${name}: per minute, succeeded ${(pm.SUCCESS ?? []).join(" ")}; failed ${(pm.FAILURE ?? []).join(" ")}; retried ${(pm.RETRY ?? []).join(" ")}`);
      card.legend.replaceChildren(
        el("span", { className: "ok", textContent: `✓ ${totals.SUCCESS ?? 0} (${now("SUCCESS")}/min)` }),
        el("span", { className: "bad", textContent: `✗ ${totals.FAILURE ?? 0} (${now("FAILURE")}/min)` }),
        el("span", { className: "warn", textContent: `↻ ${totals.RETRY ?? 0} (${now("RETRY")}/min)` }),
      );
      card.runtimes.textContent = `p50 ${rate.p50 == null ? "—" : seconds(rate.p50)} · p95 ${rate.p95 == null ? "—" : seconds(rate.p95)}`;
    }
  }

  /** @param {Record<string, number>} queues @param {Map<string, number[]>} history */
  function renderQueues(queues, history) {
    const palette = colours();
    const names = Object.keys(queues).sort();
    keyedCards(queuesBox, queueCards, names, queueCard, "No queue yet.");
    for (const name of names) {
      const card = queueCards.get(name);
      set(card.depth, String(queues[name]));
      drawDepth(card.canvas, history.get(name) ?? [], palette);
    }
  }

  return { renderRates, renderQueues };
}
