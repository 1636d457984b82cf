/**
 * React hooks for svc-client (`import { useTask, useSubmit } from "svc-client/react"`): a task's
 * state, progress, eta, events and streamed text as component state, re-rendered on each event and
 * each stream chunk. React ≥ 18 is a peer dependency; nothing else is needed.
 *
 * The client reaches the hooks through `<ClientProvider client={client}>` (React context), or per
 * call with `{ client }`, which wins over the context.
 *
 * Each handle has one store (a WeakMap entry) shared by every component that watches it: the store
 * listens to the handle while at least one component is subscribed, and stops when the last one
 * unsubscribes (so StrictMode's mount → unmount → mount leaves exactly one set of listeners). A
 * handle that `useTask` made itself from `{id, token}` is also unwatched then.
 * @module
 */

import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
} from "react";

import { DEFAULT_STREAM, textOf } from "../src/streams.js";

/** @typedef {import("../index.js").Client} Client */
/** @typedef {import("../index.js").Task} Task */
/** @typedef {import("../react.js").TaskView} TaskView */

/** @type {import("react").Context<Client | null>} */
const ClientContext = createContext(/** @type {Client | null} */ (null));

/**
 * Gives `client` to every hook below it that is not passed one.
 * @param {{client: Client, children?: import("react").ReactNode}} props
 */
export function ClientProvider({ client, children }) {
  return createElement(ClientContext.Provider, { value: client }, children);
}

/**
 * The client a hook uses: `client` when given, else the nearest ClientProvider's; throws without either.
 * @param {Client | null} [client]
 * @returns {Client}
 */
export function useClient(client) {
  const provided = useContext(ClientContext);
  const chosen = client ?? provided;
  if (!chosen) {
    throw new Error(
      "svc-client/react: no client: wrap the tree in <ClientProvider client={client}> or pass { client }",
    );
  }
  return chosen;
}

/** What useTask shows for no task at all. @type {TaskView} */
const NO_TASK = Object.freeze({
  task: null,
  state: null,
  progress: null,
  result: undefined,
  error: null,
  events: Object.freeze([]),
  text: "",
  streams: Object.freeze({}),
  eta: null,
  done: false,
});

/**
 * A task's live view: re-renders on each of its events, stream chunks and eta changes. `task` is a
 * handle (from `useSubmit`, `client.submit()`, `client.task()`), `{id, token}` of a task submitted
 * elsewhere (the hook makes the handle, and unwatches it when the component unmounts), or
 * null (a view of nothing, e.g. before a submit).
 * @param {Task | {id: string, token?: string | null} | null | undefined} task
 * @param {{client?: Client | null}} [options]  client: only needed for `{id, token}` without a ClientProvider
 * @returns {TaskView}
 */
export function useTask(task, { client } = {}) {
  const provided = useContext(ClientContext);
  const isHandle = isTaskHandle(task);
  const id = task && !isHandle ? task.id : null;
  const token = task && !isHandle ? (task.token ?? null) : null;
  const chooser = client ?? provided;
  const handle = useMemo(() => {
    if (isHandle) return /** @type {Task} */ (task);
    if (id === null) return null;
    if (!chooser) {
      throw new Error("svc-client/react: useTask({id, token}) needs a client: a <ClientProvider> or { client }");
    }
    return chooser.task(id, token);
  }, [isHandle ? task : null, id, token, chooser]);
  const store = handle ? storeOf(handle, !isHandle) : null;
  const snapshot = store ? store.snapshot : noTask;
  return useSyncExternalStore(store ? store.subscribe : subscribeToNothing, snapshot, snapshot);
}

/**
 * Submit task `name` from a component: `submit(init)` posts it (the same init as `client.submit`:
 * args, kwargs, options, idempotencyKey, signal) and resolves its handle; `task` is the handle of the
 * newest submit (pass it to useTask), `pending` is true while a submit is in flight, `error` the
 * newest submit's error (an HttpError, NetworkError, …) until the next submit. `submit` rejects with
 * that error too: catch it where you call it.
 * @template [Result=unknown]
 * @param {string} name
 * @param {{client?: Client | null}} [options]
 * @returns {import("../react.js").SubmitHandle<Result>}
 */
export function useSubmit(name, { client } = {}) {
  const chosen = useClient(client);
  /** @type {{task: import("../index.js").Task<Result> | null, pending: boolean, error: Error | null}} */
  const initial = { task: null, pending: false, error: null };
  const [state, setState] = useState(initial);
  const latest = useRef(0);
  const submit = useCallback(
    /** @param {Parameters<Client["submit"]>[1]} [init] */
    async (init) => {
      const attempt = ++latest.current;
      setState((previous) => ({ ...previous, pending: true, error: null }));
      try {
        const task = /** @type {import("../index.js").Task<Result>} */ (await chosen.submit(name, init));
        if (attempt === latest.current) setState({ task, pending: false, error: null });
        return task;
      } catch (error) {
        if (attempt === latest.current) {
          setState((previous) => ({ ...previous, pending: false, error: /** @type {Error} */ (error) }));
        }
        throw error;
      }
    },
    [chosen, name],
  );
  return useMemo(() => ({ submit, ...state }), [submit, state]);
}

/**
 * Whether `value` is a Task handle (by shape, so that two copies of the SDK in one bundle still agree).
 * @param {unknown} value
 * @returns {value is Task}
 */
function isTaskHandle(value) {
  const candidate = /** @type {any} */ (value);
  return candidate != null && typeof candidate.on === "function" && typeof candidate.chunks === "function";
}

/** @returns {() => void} */
function subscribeToNothing() {
  return () => {};
}

function noTask() {
  return NO_TASK;
}

/**
 * One handle's store for useSyncExternalStore: `subscribe` and a cached `snapshot` that changes only
 * when the handle did (its newest seq or event, its eta, or a failure to watch).
 * @typedef {{subscribe: (onChange: () => void) => () => void, snapshot: () => TaskView}} Store
 */

/** @type {WeakMap<Task, Store>} */
const STORES = new WeakMap();

/**
 * @param {Task} task
 * @param {boolean} owned  useTask made the handle: unwatch it when the last component leaves
 * @returns {Store}
 */
function storeOf(task, owned) {
  let store = STORES.get(task);
  if (!store) STORES.set(task, (store = createStore(task, owned)));
  return store;
}

/** @param {Task} task @param {boolean} owned @returns {Store} */
function createStore(task, owned) {
  /** @type {Set<() => void>} */
  const components = new Set();
  /** @type {(() => void)[]} */
  let detach = [];
  /** @type {Error | null} */
  let failure = null;
  /** stream name → text so far, kept up to date chunk by chunk while subscribed @type {Map<string, string>} */
  let texts = new Map();
  /** @type {TaskView | null} */
  let view = null;
  /** @type {unknown[]} */
  let viewKey = [];

  const changed = () => {
    for (const onChange of [...components]) onChange();
  };
  const attach = () => {
    // Rebuilt from the handle (chunks may have come while nobody listened), then kept by appending.
    texts = new Map(task.streamNames.map((name) => [name, textOf(task.chunks(name))]));
    detach = [
      task.on("stream", (/** @type {import("../index.js").StreamChunk} */ chunk) => {
        const data = chunk.data;
        const piece = typeof data === "string" ? data : JSON.stringify(data);
        texts.set(chunk.stream, (texts.get(chunk.stream) ?? "") + piece);
        changed();
      }),
      task.on("event", changed),
      task.on("eta", changed),
      task.on("error", (/** @type {Error} */ error) => {
        failure = error;
        changed();
      }),
    ];
  };

  return {
    subscribe(onChange) {
      components.add(onChange);
      if (components.size === 1) attach();
      return () => {
        components.delete(onChange);
        if (components.size > 0) return;
        for (const remove of detach) remove();
        detach = [];
        if (owned) task.unwatch();
      };
    },
    snapshot() {
      const key = [task.lastSeq, task.latest, task.outcome, task.eta, failure, texts];
      if (view && key.every((part, i) => part === viewKey[i])) return view;
      viewKey = key;
      view = viewOf(task, failure, texts);
      return view;
    },
  };
}

/**
 * @param {Task} task @param {Error | null} failure @param {Map<string, string>} texts
 * @returns {TaskView}
 */
function viewOf(task, failure, texts) {
  const outcome = task.outcome;
  const history = task.history;
  let progressEvent = null;
  for (let i = history.length - 1; i >= 0 && progressEvent === null; i--) {
    if (history[i].state === "PROGRESS" && history[i].task_id === task.id) progressEvent = history[i];
  }
  const streams = Object.fromEntries(
    task.streamNames.map((name) => [name, texts.get(name) ?? textOf(task.chunks(name))]),
  );
  return Object.freeze({
    task,
    state: task.state,
    progress: progressEvent?.progress ?? null,
    result: outcome?.ok ? outcome.value : undefined,
    error: outcome && !outcome.ok ? outcome.error : failure,
    events: Object.freeze([...task.history]),
    text: streams[DEFAULT_STREAM] ?? "",
    streams: Object.freeze(streams),
    eta: task.eta,
    done: task.done,
  });
}
