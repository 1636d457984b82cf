// A small React app on svc-client/react: count_to with a progress bar and its time left, and
// stream_text with its text growing word by word (also watched a second time by id and token, as a
// page that was handed a task by its backend would). Served on the API's origin; run in StrictMode,
// so every effect mounts, unmounts and mounts again. Bundled with esbuild by test/react.test.js.

import { StrictMode, useMemo, useState } from "react";
import { createRoot } from "react-dom/client";
import { Client } from "svc-client";
import { ClientProvider, useSubmit, useTask } from "svc-client/react";

function percentOf(progress, done) {
  if (done) return 100;
  if (!progress?.total) return 0;
  return Math.round((100 * progress.current) / progress.total);
}

function timeLeft(eta) {
  return eta === null ? "" : `~${Math.ceil(eta)} s left`;
}

function Outcome({ view }) {
  if (view.error) return <pre className="outcome error" data-testid="error">{view.error.message}</pre>;
  if (view.state !== "SUCCESS") return null;
  const shown = typeof view.result === "string" ? view.result : JSON.stringify(view.result);
  return <pre className="outcome" data-testid="result">{shown}</pre>;
}

function CountCard() {
  const [n, setN] = useState(20);
  const counting = useSubmit("count_to");
  const view = useTask(counting.task);
  const percent = percentOf(view.progress, view.state === "SUCCESS");
  return (
    <section className="card" data-testid="count-card" data-state={view.state ?? "idle"} data-task-id={view.task?.id}>
      <h2>count_to</h2>
      <label>
        n <input id="count-n" type="number" value={n} onChange={(event) => setN(Number(event.target.value))} />
      </label>
      <button id="count-submit" disabled={counting.pending} onClick={() => counting.submit({ kwargs: { n, delay: 0.15 } }).catch(() => {})}>
        Count
      </button>
      {counting.error && <p className="error" data-testid="submit-error">{counting.error.message}</p>}
      {view.task && (
        <>
          <p>
            <span className="state" data-testid="state">{view.state}</span> <code>{view.task.id.slice(0, 8)}</code>
          </p>
          <div className="bar">
            <progress max="100" value={percent} data-testid="progress" data-percent={percent} />
            <span data-testid="percent">{percent}%</span>
            <span className="eta" data-testid="eta">{timeLeft(view.eta)}</span>
          </div>
          <Outcome view={view} />
        </>
      )}
    </section>
  );
}

function StreamText({ view, testid }) {
  return (
    <pre className="stream" data-testid={testid} data-chunks={view.task?.chunks().length ?? 0}>
      {view.text}
    </pre>
  );
}

function StreamCard() {
  const [shown, setShown] = useState(true);
  const writing = useSubmit("stream_text");
  const view = useTask(writing.task);
  const task = writing.task;
  // The same task watched again from its id and token, with a handle of the hook's own.
  const ref = useMemo(() => (task ? { id: task.id, token: task.token } : null), [task]);
  const byId = useTask(ref);
  return (
    <section className="card" data-testid="stream-card" data-state={view.state ?? "idle"} data-task-id={task?.id}>
      <h2>stream_text</h2>
      <button id="stream-submit" disabled={writing.pending} onClick={() => writing.submit({ kwargs: { words: 40, delay: 0.08 } }).catch(() => {})}>
        Stream text
      </button>
      <button id="stream-toggle" onClick={() => setShown((value) => !value)}>
        {shown ? "Hide" : "Show"}
      </button>
      {task && (
        <>
          <p>
            <span className="state" data-testid="state">{view.state}</span> <code>{task.id.slice(0, 8)}</code>
          </p>
          {shown && (
            <>
              <h3>useTask(task)</h3>
              <StreamText view={view} testid="stream-text" />
            </>
          )}
          <h3>useTask({"{ id, token }"})</h3>
          <StreamText view={byId} testid="stream-text-by-id" />
          <Outcome view={view} />
        </>
      )}
    </section>
  );
}

function App() {
  const client = useMemo(() => new Client({ baseUrl: location.origin }), []);
  return (
    <ClientProvider client={client}>
      <h1>svc-client/react</h1>
      <main>
        <CountCard />
        <StreamCard />
      </main>
    </ClientProvider>
  );
}

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
