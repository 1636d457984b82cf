/**
 * Task-token renewal, for watchers that outlive their tokens (a token expires after the server's
 * SVC_TOKEN_TTL). When the server refuses something that carried a task's token, the Client's
 * `getToken(taskId)` is asked for a fresh one, and the refused step is tried once more with it.
 *
 * "Once" is per refusal: after a renewal, the next refusal of the same id fails for good, unless a
 * success came in between (`succeeded(id)`: a frame for it arrived), which makes a later expiry
 * renewable again.
 * @module
 */

/**
 * Asked for a fresh token of `taskId` (a task or a workflow id); a string other than the refused
 * token renews it; null, undefined, the same token, or a throw give up (the refusal stands).
 * @typedef {(taskId: string) => string | null | undefined | Promise<string | null | undefined>} GetToken
 */

/** The outcome of one renewal: a fresh token, or null with why not. */
/** @typedef {{token: string, error?: undefined} | {token: null, error?: unknown}} Renewed */

export class TokenRenewal {
  /** @param {GetToken | undefined} getToken */
  constructor(getToken) {
    /** @private */ this._getToken = getToken;
    /** ids renewed since their last success @private @type {Set<string>} */
    this._tried = new Set();
    /** ids whose getToken() is pending @private @type {Set<string>} */
    this._pending = new Set();
  }

  /**
   * Whether a refusal of `id` (that carried a token) may be answered by a renewal now: a getToken is
   * configured, none is pending for `id`, and `id` was not renewed since its last success.
   * @param {string} id
   */
  mayRenew(id) {
    return typeof this._getToken === "function" && !this._pending.has(id) && !this._tried.has(id);
  }

  /**
   * Whether getToken(id) is pending (a refusal meanwhile is the stale token's, not a new one).
   * @param {string} id
   */
  pending(id) {
    return this._pending.has(id);
  }

  /**
   * Ask getToken(id) for a token other than `stale`; never rejects.
   * @param {string} id
   * @param {string} stale  the token that was refused
   * @returns {Promise<Renewed>}
   */
  async renew(id, stale) {
    this._tried.add(id);
    this._pending.add(id);
    try {
      const fresh = await /** @type {GetToken} */ (this._getToken)(id);
      return typeof fresh === "string" && fresh !== "" && fresh !== stale ? { token: fresh } : { token: null };
    } catch (error) {
      return { token: null, error };
    } finally {
      this._pending.delete(id);
    }
  }

  /**
   * `id` works again (a frame for it arrived): its next refusal may be renewed.
   * @param {string} id
   */
  succeeded(id) {
    this._tried.delete(id);
  }

  /** Forget every id (the connection this was about is gone). */
  reset() {
    this._tried.clear();
  }
}
