/**
 * The events one `events()` iterator has yet to yield, bounded for a consumer slower than the task.
 *
 * Policy when it holds more than `limit` events (the Client's `historyLimit`): PROGRESS events that a
 * newer PROGRESS of the same task id follows are dropped (coalesced to the latest, as the server does
 * for a slow socket). Every other event (states, retries, the terminal one) is kept, whatever the
 * bound, and order is never changed; a task's non-PROGRESS events are few, so memory stays bounded.
 * @module
 */

/** @typedef {{task_id?: unknown, state?: unknown}} EventLike */

/** @template {EventLike} E */
export class EventBacklog {
  /** @param {number} limit  the most events held before PROGRESS is coalesced (≥ 1; Infinity: no bound) */
  constructor(limit) {
    /** @private @type {E[]} */ this._items = [];
    /** @private */ this._head = 0;
    /** @private */ this._limit = limit;
    /** Coalesce again only once the backlog grew past this (keeps compaction amortised O(1)). @private */
    this._compactAt = limit;
    /** How many PROGRESS events were coalesced away so far. */
    this.coalesced = 0;
  }

  /** How many events wait. */
  get length() {
    return this._items.length - this._head;
  }

  /** @param {E} event */
  push(event) {
    this._items.push(event);
    if (this.length > this._compactAt) this._compact();
  }

  /** The oldest waiting event, removed; undefined when none waits. @returns {E | undefined} */
  shift() {
    if (this._head >= this._items.length) return undefined;
    const event = this._items[this._head];
    this._items[this._head++] = /** @type {any} */ (undefined);
    if (this._head === this._items.length) {
      this._items = [];
      this._head = 0;
    } else if (this._head > 1024 && this._head * 2 > this._items.length) {
      this._items = this._items.slice(this._head);
      this._head = 0;
    }
    return event;
  }

  /** @private Drop every PROGRESS event a newer PROGRESS of the same task id follows. */
  _compact() {
    const waiting = this._items.slice(this._head);
    /** @type {Set<unknown>} */
    const newerProgress = new Set();
    /** @type {E[]} */
    const kept = [];
    for (let i = waiting.length - 1; i >= 0; i--) {
      const event = waiting[i];
      if (event.state === "PROGRESS") {
        if (newerProgress.has(event.task_id)) {
          this.coalesced++;
          continue;
        }
        newerProgress.add(event.task_id);
      }
      kept.push(event);
    }
    this._items = kept.reverse();
    this._head = 0;
    this._compactAt = Math.max(this._limit, 2 * this._items.length);
  }
}
