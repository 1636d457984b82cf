"""Shared pieces of the benchmarks: processes on free ports, wrk runs, clients, the BENCHMARKS.md writer."""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
NAMESPACE = "svcbench"
# The svc source measured (here and in the API and workers): this checkout, or another tree named by
# BENCH_SVC_TREE (e.g. `git archive HEAD svc clients` unpacked elsewhere) to measure a fixed version.
SVC_TREE = Path(os.environ.get("BENCH_SVC_TREE", ROOT)).resolve()
if SVC_TREE != ROOT:
    sys.path.insert(0, str(SVC_TREE))

from svc.embedded import RedisProcess, free_port, start_redis  # noqa: E402 - after the tree is chosen

TERMINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


@contextmanager
def private_redis() -> Iterator[RedisProcess]:
    """A redis-server of the benchmark's own, stopped afterwards."""
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


def bench_env(redis_url: str, **extra: str) -> dict[str, str]:
    """Environment of a svc child process: this checkout, the bench namespace, no rate limits."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SVC_")}
    env.update(
        SVC_REDIS_URL=redis_url,
        SVC_NAMESPACE=NAMESPACE,
        SVC_RATE_LIMIT="0",
        SVC_WS_MAX_CONNECTIONS="100000",
        # every client of a benchmark comes from 127.0.0.1: no per-address cap on connections
        SVC_HTTP_MAX_CONNECTIONS="0",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(
            dict.fromkeys([str(SVC_TREE), str(ROOT), os.environ.get("PYTHONPATH", "")])
        ).strip(os.pathsep),
    )
    env.update(extra)
    return env


@dataclass(frozen=True)
class Api:
    """A running API process: where it answers and its pid (for RSS and py-spy)."""

    base: str
    pid: int
    log: Path

    @property
    def ws(self) -> str:
        """The base URL for WebSockets."""
        return "ws" + self.base.removeprefix("http")


def _stop(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM the process group we started, SIGKILL it if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _spawn(
    module_args: list[str], cwd: Path, env: dict[str, str], label: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """``python -m …`` in a session of its own, its output in a temporary log."""
    log = Path(tempfile.mkstemp(prefix=f"svc-bench-{label}-", suffix=".log")[1])
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", *module_args],
            cwd=cwd,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, log


def _until(ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    """Poll ``ready`` for up to 30 s; RuntimeError naming the log if the process dies or time runs out."""
    deadline = time.monotonic() + 30
    while not ready():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{what} did not start; see {log}")
        time.sleep(0.05)


@contextmanager
def api_service(redis_url: str, port: int | None = None, workers: int = 1, **env: str) -> Iterator[Api]:
    """One ``svc api`` (bench/serve.py: svc's own command, with the /bench/* endpoints added), on
    ``port`` (a free one by default), in ``workers`` processes (``--workers``; the Api's pid is then
    their parent's, and every process exists when this yields)."""
    port = port or free_port()
    args = ["bench.serve", "api", "--port", str(port), "--log-level", "warning"]
    if workers > 1:
        args += ["--workers", str(workers)]
    process, log = _spawn(args, SVC_TREE, bench_env(redis_url, **env), "api")
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _until(healthy, process, log, "API")
        processes = 1 if workers == 1 else workers + 1  # with --workers, a parent and its processes
        _until(lambda: len(process_tree(process.pid)) >= processes, process, log, "API processes")
        yield Api(base, process.pid, log)
    finally:
        _stop(process)


@contextmanager
def listening_service(module: str, label: str, redis_url: str) -> Iterator[Api]:
    """``python -m module --port P --redis URL --namespace NS`` (the ceiling, a peer): ready once it
    prints that it listens."""
    port = free_port()
    args = [module, "--port", str(port), "--redis", redis_url, "--namespace", NAMESPACE]
    process, log = _spawn(args, ROOT, bench_env(redis_url), label)
    try:
        _until(lambda: b"listening" in log.read_bytes(), process, log, f"the {label}")
        yield Api(f"http://127.0.0.1:{port}", process.pid, log)
    finally:
        _stop(process)


def ceiling_service(redis_url: str) -> AbstractContextManager[Api]:
    """The fan-out ceiling (bench/ceiling.py) on the benchmark's namespace; ready once it listens."""
    return listening_service("bench.ceiling", "ceiling", redis_url)


# The peer servers bench.fanout can measure beside svc and the ceiling: name → module (bench/peers/).
PEERS = {"socketio": "bench.peers.socketio_server", "broadcaster": "bench.peers.broadcaster_server"}


def peer_service(name: str, redis_url: str) -> AbstractContextManager[Api]:
    """One of the peer servers (``PEERS``) on the benchmark's namespace; ready once it listens."""
    if name not in PEERS:
        raise ValueError(f"unknown peer server {name!r}; choose from {', '.join(PEERS)}")
    return listening_service(PEERS[name], f"{name} peer", redis_url)


@contextmanager
def api_process(redis_url: str, **env: str) -> Iterator[str]:
    """One ``svc api`` process; yields its base URL."""
    with api_service(redis_url, **env) as api:
        yield api.base


@contextmanager
def worker_process(redis_url: str, *args: str, concurrency: int = 2) -> Iterator[subprocess.Popen[bytes]]:
    """A real svc worker (``args``: more celery worker options, e.g. ``-Q q``); ready once its heartbeat
    is in Redis."""
    hostname = f"bench-{uuid.uuid4().hex[:6]}@localhost"
    log = Path(tempfile.mkstemp(prefix="svc-bench-worker-", suffix=".log")[1])
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "svc", "worker", "--loglevel", "WARNING", "--hostname", hostname),
                *("--without-mingle", "--without-gossip", "--concurrency", str(concurrency), *args),
            ],
            cwd=SVC_TREE,
            env=bench_env(redis_url),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 60
        while client.zscore(f"{NAMESPACE}:workers", hostname) is None:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"worker did not start; see {log}")
            time.sleep(0.05)
        yield process
    finally:
        client.close()
        _stop(process)


def raise_nofile(sockets: int = 0) -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it) and return it;
    exit with a message when that leaves no room for ``sockets`` sockets and 1,000 more descriptors."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if sockets + 1000 > hard:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is too low for {sockets:,} sockets")
    return hard


def start_clients(
    target: Callable[..., None], ws_base: str, jobs: Sequence[Any], clients: int, *extra: Any
) -> tuple[list[Connection], list[BaseProcess]]:
    """``clients`` client processes (spawned, daemonic), each from its own 127.0.0.x address and with
    an even share of ``jobs``: ``target(pipe, ws_base, share, address, *extra)``. Returns the pipes
    they report on (a client that dies closes its end: the reader gets EOF) and the processes."""
    context = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    processes: list[BaseProcess] = []
    for number in range(clients):
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(
            target=target,
            args=(writer, ws_base, list(jobs[number::clients]), f"127.0.0.{number + 2}", *extra),
            daemon=True,
        )
        process.start()
        writer.close()
        pipes.append(reader)
        processes.append(process)
    return pipes, processes


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (``svc api --workers N``'s processes), from /proc."""
    tree, index = [pid], 0
    while index < len(tree):
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{tree[index]}/task/{tree[index]}/children").read_text()
            tree.extend(int(child) for child in children.split())
        index += 1
    return tree


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` and its descendants in KiB (VmRSS from /proc; pages a fork shares
    are counted in each process, so compare two readings of one tree, never two trees' totals)."""
    total = 0
    for member in process_tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
                break
        else:
            raise RuntimeError(f"no VmRSS for pid {member}")
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` and its live descendants have used so far, from /proc."""
    ticks = 0
    for member in process_tree(pid):
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


class RawHttp:
    """One keep-alive HTTP/1.1 connection with next to no client overhead, so that latencies measure the
    server. Handles only what the benchmarks need: Content-Length bodies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def connect(cls, base: str) -> RawHttp:
        """Open a connection to ``base`` (http://host:port)."""
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, f"{host}:{port}")

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Status and body of one request."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        found = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", header)
        return status, await self.reader.readexactly(int(found.group(1)) if found else 0)

    async def close(self) -> None:
        """Close the connection."""
        self.writer.close()
        await self.writer.wait_closed()


WRK_POST = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


WRK_DELAY = """function delay()
  return {delay_ms}
end
"""


def wrk(
    url: str, seconds: int, connections: int = 32, body: str | None = None, delay_ms: int = 0
) -> tuple[float, int]:
    """Requests/s and non-2xx count of a wrk run against ``url``. With ``delay_ms`` each connection waits
    that long before each request, which caps the offered rate near ``connections * 1000 / delay_ms``
    (a steady load, not a saturating one)."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    lua = (WRK_POST.format(body=body) if body is not None else "") + (
        WRK_DELAY.format(delay_ms=delay_ms) if delay_ms else ""
    )
    if lua:
        script = Path(tempfile.mkstemp(suffix=".lua")[1])
        script.write_text(lua)
        args[1:1] = ["-s", str(script)]
    output = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return rate, int(bad.group(1)) if bad else 0


def write_section(name: str, text: str) -> None:
    """Replace (or append) the ``name`` section of BENCHMARKS.md with ``text``."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    current = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    if start in current:
        current = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, current, flags=re.S)
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS.write_text(current)


# Frames every sample of the loop thread passes through: left out of the inclusive ranking.
PROCESS_ROOTS: tuple[str, ...] = (
    *("(click/", "(<frozen runpy>", "(uvicorn/main.py", "(uvicorn/_compat.py", "(uvicorn/server.py"),
    *("(uvicorn/__main__.py", "(asyncio/runners.py", "ProxyHeadersMiddleware", "run_asgi"),
)


@dataclass(frozen=True)
class Profile:
    """Where a process spent its sampled time (py-spy), by function: own time and time including callees."""

    samples: int
    own: list[tuple[str, int]]
    inclusive: list[tuple[str, int]]

    def table(self, top: int = 12) -> str:
        """Markdown: the top functions by own time and by inclusive time, in % of samples."""
        lines = [
            f"{self.samples:,} samples of the event loop's thread while it was busy (py-spy, idle excluded).",
            "",
            "| own % | function (own time) | | incl. % | function (with callees) |",
            "| ---: | --- | --- | ---: | --- |",
        ]
        for index in range(top):
            left = self.own[index] if index < len(self.own) else ("", 0)
            right = self.inclusive[index] if index < len(self.inclusive) else ("", 0)
            lines.append(
                f"| {100 * left[1] / self.samples:.1f} | `{left[0]}` | | "
                f"{100 * right[1] / self.samples:.1f} | `{right[0]}` |"
            )
        return "\n".join(lines)


def _frame_name(frame: str) -> str:
    """``func (path/to/module.py:123)`` → ``func (module.py)``: group a function's lines together."""
    match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if match is None:
        return frame
    path = match.group(2)
    parts = path.split("site-packages/")[-1].split("/")
    return f"{match.group(1)} ({'/'.join(parts[-2:])})"


@contextmanager
def py_spy(pid: int, seconds: float, rate: int = 100) -> Iterator[list[Profile]]:
    """Sample ``pid`` with py-spy for ``seconds`` while the block runs; the yielded list receives the
    :class:`Profile` afterwards (stays empty when py-spy is missing or cannot attach)."""
    found: list[Profile] = []
    if shutil.which("py-spy") is None:
        print("py-spy is not installed (pip install py-spy): no profile taken", file=sys.stderr)
        yield found
        return
    output = Path(tempfile.mkstemp(prefix="svc-bench-profile-", suffix=".txt")[1])
    process = subprocess.Popen(
        [
            *("py-spy", "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))),
            *("--rate", str(rate), "--format", "raw", "--output", str(output), "--threads", "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield found
    finally:
        _, error = process.communicate(timeout=seconds + 60)
    if process.returncode != 0 or not output.stat().st_size:
        print(f"py-spy failed: {error.decode(errors='replace')[-500:]}", file=sys.stderr)
        return
    stacks: list[tuple[str, list[str], int]] = []
    loop_samples: dict[str, int] = {}
    for line in output.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        thread, _, rest = stack.partition(";")
        if not rest or not count_text.isdigit():
            continue
        frames = [_frame_name(frame) for frame in rest.split(";")]
        stacks.append((thread, frames, int(count_text)))
        if any(frame.startswith("Runner.run ") for frame in frames):
            loop_samples[thread] = loop_samples.get(thread, 0) + int(count_text)
    # Only the event loop's thread: the others (anyio's worker threads, Celery's) mostly sleep.
    loop_thread = max(loop_samples, key=lambda thread: loop_samples[thread], default=None)
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for thread, frames, count in stacks:
        if thread != loop_thread:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    ranked = sorted(own.items(), key=lambda item: -item[1])
    layers = [item for item in inclusive.items() if not any(root in item[0] for root in PROCESS_ROOTS)]
    found.append(Profile(total, ranked, sorted(layers, key=lambda item: -item[1])))


def provenance() -> str:
    """Which svc was measured: the commit, and whether the tree differs from it (for BENCHMARKS.md)."""
    if SVC_TREE != ROOT:
        marker = SVC_TREE / "COMMIT"  # written by whoever unpacked the tree
        commit = f" = `{marker.read_text().strip()}`" if marker.exists() else ""
        return f"svc from `{SVC_TREE}`{commit} (BENCH_SVC_TREE)"
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "svc"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return f"svc at `{head.stdout.strip() or '?'}`" + (" with uncommitted changes to svc/" if dirty else "")
