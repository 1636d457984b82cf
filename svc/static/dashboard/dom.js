/**
 * Small DOM and text helpers shared by the dashboard's views.
 * @module
 */

/** The element with id `id`. */
export const $ = (id) => document.getElementById(id);

/** A new `tag` element with `props` assigned and `children` appended. */
export function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

/** Set `node`'s text only when it differs (no layout work for an unchanged cell). */
export function set(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** A duration in seconds as the table shows it ("" for none). */
export function seconds(value) {
  if (value == null) return "";
  if (value < 10) return `${value.toFixed(2)} s`;
  if (value < 600) return `${value.toFixed(1)} s`;
  return `${Math.round(value / 60)} min`;
}

/** How long ago `epoch` (unix seconds) was at `now`, coarsely ("never" for none). */
export function ago(epoch, now) {
  if (!epoch) return "never";
  const s = Math.max(0, Math.round(now - epoch));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

/** A unix time as a wall-clock time with milliseconds ("—" for none). */
export function when(epoch) {
  if (epoch == null) return "—";
  const ms = String(Math.floor((epoch % 1) * 1000)).padStart(3, "0");
  return `${new Date(epoch * 1000).toLocaleTimeString("en-GB", { hour12: false })}.${ms}`;
}

/** Replace `box`'s children with `cards` (or an empty note), touching the DOM only when the order changed. */
export function showCards(box, cards, emptyText) {
  if (cards.length === 0) {
    if (!box.querySelector(".empty")) box.replaceChildren(el("p", { className: "empty", textContent: emptyText }));
  } else if (box.children.length !== cards.length || cards.some((card, i) => box.children[i] !== card)) {
    box.replaceChildren(...cards);
  }
}
