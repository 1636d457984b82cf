/**
 * The page's HTTP calls to the API under its base path, with the API key; an error answer becomes the
 * JS SDK's typed error (../sdk/errors.js: HttpError and its subclasses, from the problem-details body).
 * @module
 */

import { HttpError, UnauthorizedError, errorFromResponse } from "../sdk/errors.js";

export { HttpError, UnauthorizedError };

/**
 * A caller of routes under `base` that shows `key()` as a bearer token and calls `unauthorized()` on a 401.
 * @param {{base: string, key: () => string, unauthorized: () => void}} options
 */
export function createApi({ base, key, unauthorized }) {
  /** The headers of a call: the API key, if any, and `extra`. */
  function headers(extra = {}) {
    const shown = key();
    return shown ? { ...extra, Authorization: `Bearer ${shown}` } : { ...extra };
  }

  /**
   * fetch route `path` (e.g. "/tasks/…") under the base; the JSON body (null if none), or throws the
   * answer's HttpError (or fetch's own error when there was no answer).
   */
  async function call(method, path) {
    const url = base + path;
    const response = await fetch(url, { method, headers: headers() });
    if (!response.ok) {
      if (response.status === 401) unauthorized();
      throw await errorFromResponse(response, method, url);
    }
    return response.json().catch(() => null);
  }

  return { call, headers };
}

/** An error as the page shows it: "404 Not Found: no task …" for an HTTP error, else its message. */
export function describe(error) {
  if (!(error instanceof HttpError)) return error?.message ?? String(error);
  return `${error.status} ${error.title}: ${error.detail || error.title}`.replace(" : ", ": ");
}
