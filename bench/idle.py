"""An idle API's CPU: `svc api` with nothing to do but its own upkeep, beside the newest tasks of a busy day.

    python -m bench.idle [--seconds 30] [--recent 10000] [--against TREE]

Starts `svc api` exactly as a user does, on a private Redis whose ``{ns}:recent`` holds ``--recent``
finished tasks (what the dashboard's monitor loads), waits until it has settled, then reads its CPU time
over ``--seconds`` in which nothing is submitted or watched. With ``--against`` (another svc tree, e.g.
`git archive <rev> svc clients` unpacked elsewhere) the same is measured for that tree in the same run,
so the two figures share the machine's noise. Also counts the reconnect lines each API logged meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis

from bench.common import (
    NAMESPACE,
    SVC_TREE,
    bench_env,
    cpu_seconds,
    private_redis,
    provenance,
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


def idle_cpu(tree: Path, redis_url: str, seconds: float) -> tuple[float, int]:
    """Percent of one core `svc api` of ``tree`` used while idle, and its reconnect log lines."""
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
        time.sleep(SETTLE_SECONDS)
        before, started = cpu_seconds(process.pid), time.monotonic()
        time.sleep(seconds)
        used, wall = cpu_seconds(process.pid) - before, time.monotonic() - started
        reconnects = sum(1 for line in log.read_text().splitlines() if "disconnected" in line)
        return 100 * used / wall, reconnects
    finally:
        process.terminate()
        process.wait(timeout=20)
        os.unlink(log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--recent", type=int, default=10_000)
    parser.add_argument("--against", type=Path, help="another svc tree to measure in the same run")
    options = parser.parse_args()
    trees = [(provenance(), SVC_TREE)]
    if options.against:
        against = options.against.resolve()
        marker = against / "COMMIT"  # written by whoever unpacked the tree
        label = f"svc at `{marker.read_text().strip()}`" if marker.exists() else f"`{against}`"
        trees.append((label, against))
    rows = []
    with private_redis() as server:
        seed_recent(redis.Redis.from_url(server.url), options.recent)
        for label, tree in trees:
            percent, reconnects = idle_cpu(tree, server.url, options.seconds)
            rows.append(f"| {label} | {percent:.2f} | {reconnects} |")
            print(rows[-1], flush=True)
    text = "\n".join(
        [
            "## Idle API",
            "",
            f"`python -m bench.idle --seconds {options.seconds:g} --recent {options.recent}"
            + (" --against <tree>`" if options.against else "`")
            + f" — `svc api`, {options.recent:,} tasks in the namespace's recent set, nothing submitted"
            " or watched; x86_64, 2 shared cores.",
            "",
            "| API | % of a core while idle | reconnect log lines |",
            "| --- | ---: | ---: |",
            *rows,
        ]
    )
    write_section("idle", text)


if __name__ == "__main__":
    main()
