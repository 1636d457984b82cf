/**
 * Real svc processes for the SDK's tests and benchmark: a private redis-server, a Celery worker and
 * API processes (mirrors tests/conftest.py). No mocks. Every process runs in its own process group
 * and is killed when the stack stops — or, failing that, when this Node process exits.
 */

import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, openSync, closeSync, readFileSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";

export const JS_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const REPO_ROOT = resolve(JS_ROOT, "..", "..");
export const PYTHON = process.env.PYTHON ?? "python3";

/** @type {Set<Proc>} every process started by this Node process and not yet reaped */
const LIVE = new Set();
let hooked = false;

function hookExit() {
  if (hooked) return;
  hooked = true;
  process.on("exit", () => {
    for (const proc of LIVE) proc.killNow();
  });
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.once(signal, () => {
      for (const proc of LIVE) proc.killNow();
      process.exit(130);
    });
  }
}

/** A free TCP port on 127.0.0.1 (bound, read, released). */
export async function freePort() {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
  server.close();
  await once(server, "close");
  return port;
}

const sleep = (/** @type {number} */ ms) => new Promise((done) => setTimeout(done, ms));

/** One child process in its own process group, output to a log file. */
export class Proc {
  /**
   * @param {string} name
   * @param {string} command
   * @param {string[]} args
   * @param {{env?: NodeJS.ProcessEnv, cwd?: string, logDir: string}} options
   */
  constructor(name, command, args, { env, cwd, logDir }) {
    this.name = name;
    this.log = join(logDir, `${name}.log`);
    const fd = openSync(this.log, "a");
    this.child = spawn(command, args, { env, cwd, detached: true, stdio: ["ignore", fd, fd] });
    closeSync(fd);
    this.exited = once(this.child, "exit");
    this.exitCode = /** @type {number | null} */ (null);
    this.child.on("exit", (code, signal) => {
      this.exitCode = code ?? (signal ? 128 : 0);
      LIVE.delete(this);
    });
    LIVE.add(this);
    hookExit();
  }

  get alive() {
    return this.exitCode === null;
  }

  /** The last lines of the log, for failure messages. */
  tail(lines = 30) {
    try {
      return readFileSync(this.log, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "";
    }
  }

  /** SIGKILL the whole group at once (exit hooks; crash tests). */
  killNow(signal = "SIGKILL") {
    if (!this.alive) return;
    try {
      process.kill(-this.child.pid, signal);
    } catch {
      // already gone
    }
  }

  /** Signal the group and wait for the exit; SIGKILL after `grace` ms. */
  async stop(signal = "SIGTERM", grace = 10_000) {
    if (!this.alive) return;
    this.killNow(signal);
    const timer = setTimeout(() => this.killNow("SIGKILL"), grace);
    await this.exited;
    clearTimeout(timer);
    // the group may hold children (prefork pool) that outlive the leader for a moment
    this.killNow("SIGKILL");
  }
}

/**
 * Poll `predicate` every 50 ms until it is true; fail after `timeout` ms, or at once if `proc` died.
 * @param {() => Promise<boolean> | boolean} predicate
 * @param {{timeout?: number, what?: string, proc?: Proc}} [options]
 */
export async function waitFor(predicate, { timeout = 30_000, what = "condition", proc } = {}) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    if (proc && !proc.alive) {
      throw new Error(`${what}: ${proc.name} exited with ${proc.exitCode}\n${proc.tail()}`);
    }
    if (await predicate()) return;
    await sleep(50);
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}${proc ? `\n${proc.tail()}` : ""}`);
}

/** @param {number} port */
function redisAnswers(port) {
  return new Promise((answer) => {
    const socket = connect(port, "127.0.0.1");
    socket.setTimeout(500);
    socket.on("connect", () => socket.write("PING\r\n"));
    socket.on("data", (data) => {
      socket.destroy();
      answer(data.toString().startsWith("+PONG"));
    });
    socket.on("error", () => answer(false));
    socket.on("timeout", () => {
      socket.destroy();
      answer(false);
    });
  });
}

/** @param {string} url */
async function status(url) {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await response.arrayBuffer();
    return response.status;
  } catch {
    return 0;
  }
}

/** A redis-server, a worker and an API on free ports, with a namespace of their own. */
export class Stack {
  /** @param {{workerConcurrency?: number, env?: Record<string, string>}} [options] */
  constructor({ workerConcurrency = 4, env = {} } = {}) {
    this.workerConcurrency = workerConcurrency;
    this.extraEnv = env;
    this.dir = mkdtempSync(join(tmpdir(), "svc-js-"));
    this.namespace = `svcjs${randomBytes(4).toString("hex")}`;
    /** @type {Proc[]} */ this.procs = [];
    this.redisPort = 0;
    /** @type {Proc | null} */ this.api = null;
    this.apiPort = 0;
  }

  get redisUrl() {
    return `redis://127.0.0.1:${this.redisPort}/0`;
  }

  get baseUrl() {
    return `http://127.0.0.1:${this.apiPort}`;
  }

  /** The environment of a svc process (SVC_* of the caller's environment left out). */
  env(extra = {}) {
    const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("SVC_")));
    return {
      ...env,
      PYTHONPATH: [REPO_ROOT, process.env.PYTHONPATH].filter(Boolean).join(":"),
      PYTHONUNBUFFERED: "1",
      SVC_REDIS_URL: this.redisUrl,
      SVC_NAMESPACE: this.namespace,
      SVC_EMAIL_DELAY: "0.2",
      SVC_RETRY_BACKOFF_SCALE: "0.01",
      SVC_RATE_LIMIT: "0",
      SVC_WS_MAX_CONNECTIONS: "100000",
      ...this.extraEnv,
      ...extra,
    };
  }

  /** Start redis, the worker and the API; resolves once GET /readyz answers 200. */
  async start() {
    this.redisPort = await freePort();
    const redis = this._spawn("redis", "redis-server", [
      "--port", String(this.redisPort), "--bind", "127.0.0.1",
      "--save", "", "--appendonly", "no", "--dir", this.dir,
    ]);
    await waitFor(() => redisAnswers(this.redisPort), { timeout: 10_000, what: "redis-server", proc: redis });
    const hostname = `jsworker-${randomBytes(3).toString("hex")}@localhost`;
    this.worker = this._spawn("worker", PYTHON, [
      "-m", "svc", "worker", "--loglevel", "INFO", "--hostname", hostname,
      "--without-mingle", "--without-gossip", "--concurrency", String(this.workerConcurrency),
    ], this.env());
    this.apiPort = await freePort();
    this.api = await this.startApi({ port: this.apiPort, name: "api" });
    await waitFor(async () => (await status(`${this.baseUrl}/readyz`)) === 200, {
      timeout: 60_000, what: "GET /readyz (a worker online)", proc: this.worker,
    });
    return this;
  }

  /**
   * One more API process on the same Redis (e.g. with auth on, or a restart on the same port);
   * resolves once /healthz answers.
   * @param {{port?: number, name?: string, env?: Record<string, string>}} [options]
   */
  async startApi({ port, name = "api", env = {} } = {}) {
    port = port ?? (await freePort());
    const api = this._spawn(name, PYTHON, [
      "-m", "svc", "api", "--host", "127.0.0.1", "--port", String(port), "--log-level", "warning",
    ], this.env(env));
    await waitFor(async () => (await status(`http://127.0.0.1:${port}/healthz`)) === 200, {
      timeout: 30_000, what: `API ${name} on port ${port}`, proc: api,
    });
    return Object.assign(api, { port, baseUrl: `http://127.0.0.1:${port}` });
  }

  /** SIGKILL the main API (no goodbye to its clients) and start a new one on the same port. */
  async restartApi({ kill = "SIGKILL" } = {}) {
    await this.api?.stop(kill, 5000);
    this.api = await this.startApi({ port: this.apiPort, name: "api-restarted" });
  }

  /** Stop every process (API first, Redis last). */
  async stop() {
    for (const proc of [...this.procs].reverse()) await proc.stop();
  }

  /** @param {string} name @param {string} command @param {string[]} args @param {NodeJS.ProcessEnv} [env] */
  _spawn(name, command, args, env = this.env()) {
    const proc = new Proc(name, command, args, { env, cwd: REPO_ROOT, logDir: this.dir });
    this.procs.push(proc);
    return proc;
  }
}

/**
 * A WebSocket class (subclass of `Base`) that records every instance it builds, so tests can count
 * connections and await their closes.
 * @param {any} Base
 */
export function countingWebSocket(Base) {
  /** @type {any[]} */
  const instances = [];
  class Counting extends Base {
    /** @param {...any} args */
    constructor(...args) {
      super(...args);
      instances.push(this);
      this.closed = new Promise((done) => this.addEventListener("close", done, { once: true }));
    }
  }
  return { WebSocket: Counting, instances };
}
