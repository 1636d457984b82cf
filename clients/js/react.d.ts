// Type declarations for svc-client/react (react/index.js). `npm test` checks them against the source
// (test/types/declarations.ts) and compiles example/typed.ts against them with --strict.

import type { ReactElement, ReactNode } from "react";
import type { Client, Progress, SubmitOptions, Task, TaskEvent, TaskState } from "./index.js";

export interface ClientProviderProps {
  client: Client;
  children?: ReactNode;
}

/** Gives `client` to every svc hook below it that is not passed `{ client }`. */
export declare function ClientProvider(props: ClientProviderProps): ReactElement;

/** The client a hook uses: `client` when given, else the nearest ClientProvider's; throws without either. */
export declare function useClient(client?: Client | null): Client;

/** A task submitted elsewhere, as your backend hands it to the page. */
export interface TaskRef {
  id: string;
  token?: string | null;
}

export interface HookOptions {
  /** Wins over the ClientProvider's. */
  client?: Client | null;
}

/** What useTask returns; a new object whenever the handle changed, the same one otherwise. */
export interface TaskView<Result = unknown> {
  /** The handle (null for no task). */
  task: Task<Result> | null;
  /** The state of its newest event; null for no task. */
  state: TaskState | null;
  /** `progress` of its newest PROGRESS event (kept after the end); null before any. */
  progress: Progress | null;
  /** The result once it ended SUCCESS; undefined before (and after any other end). */
  result: Result | undefined;
  /**
   * TaskFailedError / TaskRevokedError once it ended so; SubscriptionError / ConnectionClosedError /
   * AbortError if it could not be watched; else null.
   */
  error: Error | null;
  /** Its events so far (the handle's `history`: the newest historyLimit), in seq order. */
  events: readonly TaskEvent[];
  /** The "output" stream's text so far ("" before its first chunk). */
  text: string;
  /** Every stream's text so far, by stream name. */
  streams: Readonly<Record<string, string>>;
  /** Seconds left (`task.eta`); null when not running or unknown. */
  eta: number | null;
  /** True once its terminal event arrived. */
  done: boolean;
}

/**
 * A task's live view, re-rendered on each event, stream chunk and eta change. `task`: a handle, `{id,
 * token}` of a task submitted elsewhere (the hook makes the handle and unwatches it when no component
 * shows it), or null/undefined (a view of nothing).
 */
export declare function useTask<Result = unknown>(
  task: Task<Result> | TaskRef | null | undefined,
  options?: HookOptions,
): TaskView<Result>;

/** What useSubmit returns. */
export interface SubmitHandle<Result = unknown> {
  /** POST /tasks/{name} with `init` (as client.submit); resolves the handle, rejects with the error (also in `error`). */
  submit(init?: SubmitOptions): Promise<Task<Result>>;
  /** The newest submit's handle; null before the first. */
  task: Task<Result> | null;
  /** True while a submit is in flight. */
  pending: boolean;
  /** The newest submit's error (HttpError, NetworkError, …) until the next submit. */
  error: Error | null;
}

/** Submit task `name` from a component. */
export declare function useSubmit<Result = unknown>(name: string, options?: HookOptions): SubmitHandle<Result>;
