/**
 * A task's named streams of partial output (an LLM's tokens, log lines): the chunk a handle hands out
 * for each `{"op": "stream"}` frame, and the per-handle buffer that `stream()`, `text()` and `chunks()`
 * read from.
 *
 * A handle keeps every chunk it received for its whole life (a late `stream()` iterator and `text()`
 * need them all): memory grows with the task's output, as `history` grows with its events. Drop the
 * handle to free them.
 * @module
 */

/** The name of the stream a task writes to when it names none. */
export const DEFAULT_STREAM = "output";

/**
 * One chunk of a task's stream, as `task.on("stream")` and `task.chunks()` give it.
 * @typedef {object} StreamChunk
 * @property {string} stream    the stream's name ("output" unless the task named another)
 * @property {any} data         the chunk: a string for text streams, or any JSON value
 * @property {number} seq       its place in the task's own seq, shared with its events
 * @property {string} taskId    the task that wrote it (in a workflow's stream: the step's id)
 * @property {number} [step]    a workflow step's chunk: the step's index
 * @property {number} [stepSeq] a workflow step's chunk: its seq in the step's own sequence
 * @property {false} [recovered] present (false) when chunks before this one, after what the handle had
 *   received, were cut by the server (its cap or TTL): the stream has a gap just before this chunk
 */

/**
 * Whether a server frame is a stream chunk (rather than an event or an error).
 * @param {Record<string, any>} frame
 * @returns {boolean}
 */
export function isStreamFrame(frame) {
  return frame.op === "stream";
}

/**
 * The chunk a stream frame stands for.
 * @param {Record<string, any>} frame  a frame for which isStreamFrame() is true
 * @returns {StreamChunk}
 */
export function chunkOf(frame) {
  /** @type {StreamChunk} */
  const chunk = {
    stream: typeof frame.stream === "string" ? frame.stream : DEFAULT_STREAM,
    data: frame.data,
    seq: frame.seq,
    taskId: frame.task_id,
  };
  if (frame.step_seq != null) {
    chunk.step = frame.step;
    chunk.stepSeq = frame.step_seq;
  }
  if (frame.recovered === false) chunk.recovered = false;
  return chunk;
}

/**
 * The text of a stream: its chunks' data concatenated in order, strings as they are and any other
 * value as its JSON (`JSON.stringify`).
 * @param {readonly StreamChunk[]} chunks
 * @returns {string}
 */
export function textOf(chunks) {
  let text = "";
  for (const { data } of chunks) text += typeof data === "string" ? data : JSON.stringify(data);
  return text;
}

/** Every chunk a handle received, by stream name, each stream in seq order. */
export class StreamBuffer {
  constructor() {
    /** @private @type {Map<string, StreamChunk[]>} */
    this._byName = new Map();
  }

  /**
   * Append `chunk` to its stream (the caller delivers chunks in seq order, once each).
   * @param {StreamChunk} chunk
   */
  add(chunk) {
    let chunks = this._byName.get(chunk.stream);
    if (!chunks) this._byName.set(chunk.stream, (chunks = []));
    chunks.push(chunk);
  }

  /**
   * The live list of stream `name`'s chunks (empty before the first); callers must not change it.
   * @param {string} name
   * @returns {readonly StreamChunk[]}
   */
  of(name) {
    return this._byName.get(name) ?? EMPTY;
  }

  /** The names of the streams that have chunks, in the order their first chunk arrived. */
  names() {
    return [...this._byName.keys()];
  }
}

/** @type {readonly StreamChunk[]} */
const EMPTY = Object.freeze([]);
