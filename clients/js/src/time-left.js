/**
 * One handle's time left (`task.eta`): the estimator of eta.js fed with the handle's own events, and
 * the Client's catalogue asked for runtimes only once someone wants an eta (reads `task.eta` or
 * listens to "eta") and the task runs without progress that tells.
 * @module
 */

import { EtaEstimator } from "./eta.js";

/**
 * What a TimeLeft needs of the Client.
 * @typedef {object} TimeLeftSource
 * @property {import("./catalogue.js").RuntimeCatalogue} [catalogue]  runtimes by task name (none: no fallback)
 * @property {() => number} [now]  unix time, seconds (default: Date.now() / 1000)
 */

export class TimeLeft {
  /**
   * @param {TimeLeftSource} source
   * @param {() => string | null} nameOf  the task's name, when known
   * @param {(eta: number | null) => void} changed  called when the estimate changes (not at update())
   */
  constructor(source, nameOf, changed) {
    /** @private */ this._catalogue = source.catalogue ?? null;
    /** @private */ this._now = source.now ?? (() => Date.now() / 1000);
    /** @private */ this._nameOf = nameOf;
    /** @private */ this._changed = changed;
    /** @private */ this._estimator = new EtaEstimator();
    /** @private */ this._wanted = false;
    /** The current estimate, seconds, or null. @type {number | null} */
    this.value = null;
  }

  /**
   * Someone wants an eta: from now on, fetch runtimes when the estimate needs them. Re-estimates
   * without calling `changed` (the caller is about to read `value`).
   */
  want() {
    if (this._wanted) return;
    this._wanted = true;
    this._reestimate();
    this._askRuntimes();
  }

  /**
   * Take the handle's next own event and re-estimate; returns whether the estimate changed (the
   * caller emits, so that "progress" listeners already read the new value).
   * @param {Record<string, any>} event
   * @returns {boolean}
   */
  update(event) {
    this._estimator.observe(event);
    this._askRuntimes();
    return this._reestimate();
  }

  /** @private @returns {boolean} */
  _reestimate() {
    const runtime = this._catalogue?.runtimeOf(this._nameOf()) ?? null;
    const next = this._estimator.estimate(runtime, this._now());
    if (next === this.value) return false;
    this.value = next;
    return true;
  }

  /** @private */
  _askRuntimes() {
    if (!this._wanted || !this._catalogue || !this._estimator.needsRuntime) return;
    this._catalogue.refresh()?.then(() => {
      if (this._estimator.needsRuntime && this._reestimate()) this._changed(this.value);
    });
  }
}
