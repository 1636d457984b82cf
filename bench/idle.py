"""An idle API's CPU: `svc api` with nothing to do but its own upkeep, beside the newest tasks of a busy day.

    python -m bench.idle [--seconds 30] [--recent 10000] [--subscribers 0,10000] [--against TREE]

Starts `svc api` exactly as a user does, on a private Redis whose ``{ns}:recent`` holds ``--recent``
finished tasks (what the dashboard's monitor loads), waits until it has settled, then reads its CPU time
over ``--seconds`` in which nothing is submitted or watched. With ``--against`` (another svc tree, e.g.
`git archive <rev> svc clients` unpacked elsewhere) the same is measured for that tree in the same run,
so the two figures share the machine's noise. Also counts the reconnect lines each API logged meanwhile.
With ``--subscribers`` sizes above 0, client processes first open that many ``/ws/tasks/{id}`` sockets on
tasks held in a queue no worker consumes, wait for each one's first frame, and keep them open and quiet
(answering the server's pings) while the API's CPU is read: what idle subscribed sockets cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import redis
import uvloop
import websockets

from bench.common import (
    NAMESPACE,
    SVC_TREE,
    bench_env,
    cpu_seconds,
    private_redis,
    provenance,
    raise_nofile,
    write_section,
)
from svc.embedded import free_port

SETTLE_SECONDS = 5.0  # after /healthz answers: the monitor loads the recent tasks, the first timers fire


def seed_recent(client: redis.Redis, count: int) -> None:
    """``count`` finished tasks, each with a four-event history, listed in the namespace's recent set."""
    pipe = client.pipeline(transaction=False)
    now = time.time()
    for index in range(count):
        task_id = str(uuid.uuid4())
        for seq, state in enumerate(("PENDING", "RECEIVED", "STARTED", "SUCCESS"), 1):
            event = {"seq": seq, "task_id": task_id, "name": "add", "state": state, "ts": now}
            pipe.zadd(f"{NAMESPACE}:task:{task_id}:history", {json.dumps(event): seq})
        pipe.zadd(f"{NAMESPACE}:recent", {task_id: now})
        if index % 1000 == 999:
            pipe.execute()
    pipe.execute()


HOLDERS = 4  # client processes holding the idle sockets


def hold_sockets(pipe: Connection, ws_base: str, jobs: list[tuple[str, str]], source: str) -> None:
    """Entry point of a client process: open a socket per job, report how many watch, hold until told."""
    uvloop.run(_hold(pipe, ws_base, jobs, source))


async def _hold(pipe: Connection, ws_base: str, jobs: list[tuple[str, str]], source: str) -> None:
    gate = asyncio.Semaphore(64)
    sockets: list[Any] = []

    async def open_one(task_id: str, token: str) -> bool:
        try:
            async with gate:
                socket = await websockets.connect(
                    f"{ws_base}/ws/tasks/{task_id}?token={token}",
                    local_addr=(source, 0),
                    open_timeout=120,
                    ping_interval=None,
                    compression=None,
                )
            await socket.recv()  # the history's PENDING
        except (OSError, TimeoutError, websockets.WebSocketException):
            return False
        sockets.append(socket)
        return True

    opened = sum(await asyncio.gather(*(open_one(*job) for job in jobs)))
    pipe.send(opened)
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    await asyncio.gather(*(socket.close() for socket in sockets), return_exceptions=True)


def open_subscribers(base: str, count: int) -> tuple[list[Any], list[Connection], int]:
    """``count`` idle subscribers on 100 held tasks, from HOLDERS client processes."""
    queue = f"idle-{uuid.uuid4().hex[:8]}"
    held = []
    with httpx.Client(base_url=base, timeout=30) as http:
        for index in range(min(count, 100)):
            body = http.post("/tasks/add", json={"args": [index, 1], "options": {"queue": queue}}).json()
            held.append((body["task_id"], body["token"]))
    jobs = [held[index % len(held)] for index in range(count)]
    context = multiprocessing.get_context("spawn")
    processes, pipes = [], []
    for number in range(HOLDERS):
        reader, writer = context.Pipe()
        process = context.Process(
            target=hold_sockets,
            args=(writer, "ws" + base.removeprefix("http"), jobs[number::HOLDERS], f"127.0.0.{number + 2}"),
            daemon=True,
        )
        process.start()
        processes.append(process)
        pipes.append(reader)
    return processes, pipes, sum(pipe.recv() for pipe in pipes)


def idle_cpu(tree: Path, redis_url: str, seconds: float, subscribers: int = 0) -> tuple[float, int, int]:
    """Percent of one core `svc api` of ``tree`` used while idle (holding ``subscribers`` quiet
    sockets), its reconnect log lines, and how many sockets were open."""
    port = free_port()
    env = bench_env(redis_url)
    env["PYTHONPATH"] = str(tree)
    log = Path(tempfile.mkstemp(prefix="svc-bench-idle-", suffix=".log")[1])
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "svc", "api", "--port", str(port), "--log-level", "warning"],
            cwd=tree,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        holders, pipes, opened = (
            open_subscribers(f"http://127.0.0.1:{port}", subscribers) if subscribers else ([], [], 0)
        )
        try:
            time.sleep(SETTLE_SECONDS)
            before, started = cpu_seconds(process.pid), time.monotonic()
            time.sleep(seconds)
            used, wall = cpu_seconds(process.pid) - before, time.monotonic() - started
        finally:
            for pipe in pipes:
                pipe.send("stop")
            for holder in holders:
                holder.join(timeout=30)
        reconnects = sum(1 for line in log.read_text().splitlines() if "disconnected" in line)
        return 100 * used / wall, reconnects, opened
    finally:
        process.terminate()
        process.wait(timeout=20)
        os.unlink(log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--recent", type=int, default=10_000)
    parser.add_argument("--subscribers", default="0,10000", help="comma-separated idle socket counts")
    parser.add_argument("--against", type=Path, help="another svc tree to measure in the same run")
    options = parser.parse_args()
    sizes = [int(size) for size in options.subscribers.split(",")]
    raise_nofile(max(sizes))
    trees = [(provenance(), SVC_TREE)]
    if options.against:
        against = options.against.resolve()
        marker = against / "COMMIT"  # written by whoever unpacked the tree
        label = f"svc at `{marker.read_text().strip()}`" if marker.exists() else f"`{against}`"
        trees.append((label, against))
    rows = []
    with private_redis() as server:
        seed_recent(redis.Redis.from_url(server.url), options.recent)
        for size in sizes:
            for label, tree in trees:
                percent, reconnects, opened = idle_cpu(tree, server.url, options.seconds, size)
                rows.append(f"| {label} | {opened:,} of {size:,} | {percent:.2f} | {reconnects} |")
                print(rows[-1], flush=True)
    text = "\n".join(
        [
            "## Idle API",
            "",
            f"`python -m bench.idle --seconds {options.seconds:g} --recent {options.recent} "
            f"--subscribers {options.subscribers}"
            + (" --against <tree>`" if options.against else "`")
            + f" — `svc api`, {options.recent:,} tasks in the namespace's recent set, nothing submitted;"
            " the subscribed sockets (on tasks no worker runs) quiet but for the server's pings "
            "(every SVC_WS_PING_INTERVAL, 20 s by default); "
            "x86_64, 2 shared cores. The target (issue 15): 10,000 subscribed sockets under 2 % of a core.",
            "",
            "| API | idle sockets open | % of a core while idle | reconnect log lines |",
            "| --- | ---: | ---: | ---: |",
            *rows,
        ]
    )
    write_section("idle", text)


if __name__ == "__main__":
    main()
