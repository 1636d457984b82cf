/**
 * Named sets of listeners, as `task.on()` and `client.on()` keep them. Emitting never throws into the
 * emitter: a listener that throws does not stop the others, and its error is rethrown asynchronously
 * (so it still reaches the console or `unhandledrejection`-style reporting).
 * @module
 */

export class Listeners {
  constructor() {
    /** @private @type {Map<string, Set<Function>>} */
    this._byType = new Map();
  }

  /**
   * Call `listener` on every emit of `type` from now on.
   * @param {string} type
   * @param {Function} listener
   * @returns {() => void} removes the listener (calling it twice is harmless)
   */
  add(type, listener) {
    let listeners = this._byType.get(type);
    if (!listeners) this._byType.set(type, (listeners = new Set()));
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
    };
  }

  /**
   * How many listeners `type` has.
   * @param {string} type
   */
  count(type) {
    return this._byType.get(type)?.size ?? 0;
  }

  /**
   * Call every listener of `type` with `args`, in the order they were added (a listener added or
   * removed meanwhile takes effect at the next emit).
   * @param {string} type
   * @param {...unknown} args
   */
  emit(type, ...args) {
    const listeners = this._byType.get(type);
    if (!listeners || listeners.size === 0) return;
    for (const listener of [...listeners]) {
      try {
        listener(...args);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
