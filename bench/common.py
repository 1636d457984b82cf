"""Shared pieces of the benchmarks: processes on free ports, wrk runs, and the BENCHMARKS.md writer."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from svc.embedded import RedisProcess, free_port, start_redis

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"


@contextmanager
def private_redis() -> Iterator[RedisProcess]:
    """A redis-server of the benchmark's own, stopped afterwards."""
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def api_process(redis_url: str, app: str = "bench.app:app", **env: str) -> Iterator[str]:
    """One uvicorn process serving ``app``; yields its base URL."""
    port = free_port()
    full_env = {
        **os.environ,
        "SVC_REDIS_URL": redis_url,
        "SVC_NAMESPACE": "svcbench",
        "SVC_RATE_LIMIT": "0",
        "SVC_WS_MAX_CONNECTIONS": "100000",
        **env,
    }
    log = Path(tempfile.mkstemp(prefix="svc-bench-api-", suffix=".log")[1])
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                app,
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
            ],
            cwd=ROOT,
            env=full_env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"API did not start; see {log}")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


WRK_POST = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(url: str, seconds: int, connections: int = 32, body: str | None = None) -> tuple[float, int]:
    """Requests/s and non-2xx count of a wrk run against ``url``."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if body is not None:
        script = Path(tempfile.mkstemp(suffix=".lua")[1])
        script.write_text(WRK_POST.format(body=body))
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
