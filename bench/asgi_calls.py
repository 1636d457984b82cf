"""CPU per request inside the API process, with no server and no client in the way: the demo app's ASGI
callable awaited directly, for ``GET /bench/constant`` and ``POST /tasks/add`` (a real submit against a
private Redis), two svc trees alternating in one run.

    python -m bench.asgi_calls --against <tree> [--runs 3]

Each measurement is a fresh process importing one tree (this checkout, or ``--against``, e.g. `git
archive <commit> svc | tar -x -C /tmp/base`); it reports process CPU per call, which sockets, wrk and the
other core's load hardly move. Prints the table; writes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, private_redis

CONSTANT_CALLS = 20_000
SUBMIT_BURSTS, BURST = 80, 100


def scope(method: str, path: str, body: bytes = b"") -> dict[str, Any]:
    """An HTTP scope as uvicorn would pass it."""
    headers = [(b"host", b"bench"), (b"content-type", b"application/json")]
    if body:
        headers.append((b"content-length", b"%d" % len(body)))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


async def measure() -> dict[str, float]:
    """In the child: CPU µs per constant call and per submit (statuses checked)."""
    import bench.app as served

    app, asgi = served.app, served.asgi
    statuses: set[int] = set()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    def receiver(body: bytes) -> Any:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        return receive

    constant, empty = scope("GET", "/bench/constant"), receiver(b"")
    body = b'{"args": [1, 2]}'
    submit, submit_body = scope("POST", "/tasks/add", body), receiver(body)
    async with app.router.lifespan_context(app):
        for _ in range(2_000):
            await asgi(dict(constant), empty, send)
        started = time.process_time()
        for _ in range(CONSTANT_CALLS):
            await asgi(dict(constant), empty, send)
        constant_us = (time.process_time() - started) / CONSTANT_CALLS * 1e6

        async def burst() -> None:
            await asyncio.gather(*(asgi(dict(submit), submit_body, send) for _ in range(BURST)))

        for _ in range(10):
            await burst()
        started = time.process_time()
        for _ in range(SUBMIT_BURSTS):
            await burst()
        submit_us = (time.process_time() - started) / (SUBMIT_BURSTS * BURST) * 1e6
    if statuses != {200, 202}:
        raise RuntimeError(f"unexpected statuses {statuses}")
    return {"constant_us": constant_us, "submit_us": submit_us}


def run_tree(tree: Path, redis_url: str) -> dict[str, float]:
    """One measurement of ``tree`` in a process of its own."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SVC_")}
    env.update(
        SVC_REDIS_URL=redis_url,
        SVC_NAMESPACE="svcbench-asgi",
        SVC_RATE_LIMIT="0",
        SVC_MONITOR="false",
        SVC_REDELIVER_AFTER="0",
        PYTHONPATH=os.pathsep.join(dict.fromkeys([str(tree), str(ROOT)])),
    )
    done = subprocess.run(
        [sys.executable, "-m", "bench.asgi_calls", "--child"],
        env=env,
        cwd=tree,  # the tree's svc first on the path (``-m`` puts the working directory there)
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="another svc tree to measure beside this checkout")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(asyncio.run(measure())))
        return
    trees = [ROOT, *([options.against.resolve()] if options.against else [])]
    rows: dict[Path, list[dict[str, float]]] = {tree: [] for tree in trees}
    with private_redis() as server:
        for _ in range(options.runs):
            for tree in trees:
                rows[tree].append(run_tree(tree, server.url))
    print("| svc tree | constant GET, CPU µs per call | submit, CPU µs per call |")
    print("| --- | ---: | ---: |")
    for tree, runs in rows.items():
        constant = ", ".join(f"{run['constant_us']:.1f}" for run in runs)
        submit = ", ".join(f"{run['submit_us']:.1f}" for run in runs)
        print(f"| `{tree}` | {constant} | {submit} |")


if __name__ == "__main__":
    main()
