// The public API as a TypeScript user sees it, compiled with `tsc --strict` in `npm test` (through the
// package's own export map: "svc-client" and "svc-client/react"). Not run: it only has to type-check.

import {
  Client,
  ConflictError,
  TaskFailedError,
  type CatalogueEntry,
  type Progress,
  type RuntimeStats,
  type Task,
} from "svc-client";
import { useSubmit, useTask, type TaskView } from "svc-client/react";

export async function submitAndWatch(baseUrl: string, getFreshToken: (id: string) => Promise<string | null>): Promise<number> {
  const client = new Client({
    baseUrl,
    connectTimeout: 5_000,
    historyLimit: 200,
    backoff: { base: 250, cap: 10_000, stableAfter: 5_000 },
    getToken: getFreshToken,
  });
  const offConnected = client.on("connected", () => console.log("live"));
  client.on("disconnected", ({ code, reason }) => console.log(`lost: ${code} ${reason}`));
  client.on("reconnecting", ({ attempt, delay }) => console.log(`retry ${attempt} in ${delay} ms`));

  const task: Task<number> = await client.submit<number>("count_to", { args: [5], kwargs: { delay: 0.1 } });
  task.on("progress", (event) => {
    const progress: Progress = event.progress;
    const total: number | null = progress.total; // null when the task does not say
    const message: string | null = progress.message;
    const percent = total === null ? null : Math.round((100 * progress.current) / total);
    const eta: number | null = task.eta;
    console.log(percent, message, eta === null ? "" : `~${Math.ceil(eta)} s left`);
  });
  task.on("eta", (eta) => console.log(eta?.toFixed(1)));
  task.on("stream", (chunk) => console.log(chunk.stream, chunk.data));

  let value: number;
  try {
    value = await task.result({ timeout: 30_000 });
  } catch (error) {
    if (error instanceof TaskFailedError) console.log(error.type, error.remoteMessage);
    throw error;
  }
  const outcome = task.outcome;
  if (outcome?.ok) value = outcome.value;

  const story = await client.submit("stream_text", { kwargs: { words: 5 }, idempotencyKey: "story-1" }).catch((error: unknown) => {
    if (error instanceof ConflictError) console.log("that key was used for another request:", error.detail);
    throw error;
  });
  for await (const word of story.stream<string>("output")) console.log(word.toUpperCase());
  const text: string = await story.text();
  const { tasks } = await client.request<{ tasks: CatalogueEntry[] }>("GET", "/tasks");
  const runtime: RuntimeStats | null = tasks.find((entry) => entry.name === "stream_text")?.runtime ?? null;
  console.log(text, runtime?.p50);
  offConnected();
  client.close();
  return value;
}

/** A component body (no JSX here): a progress line with its eta, and a streamed text. */
export function useCountAndStory(client: Client): string {
  const counting = useSubmit<number>("count_to", { client });
  const view: TaskView<number> = useTask(counting.task, { client });
  const story = useTask<string>({ id: "a-task-id", token: "its-token" }, { client });
  const percent = view.progress?.total ? Math.round((100 * view.progress.current) / view.progress.total) : 0;
  const result: number | undefined = view.result;
  if (!counting.pending && !counting.task) void counting.submit({ args: [10] }).catch(() => {});
  return `${view.state ?? "idle"} ${percent}% ${view.eta ?? "?"} ${result ?? ""} | ${story.text} ${story.streams.output ?? ""} ${view.events.length} ${view.error?.message ?? ""}`;
}
