"""The ``svc`` command: api, worker, beat, and dev (all of them, with a private Redis)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEV_PROCESSES = ("api", "worker", "beat")


class RedactTokens(logging.Filter):
    """Keep task tokens out of access logs (they travel in query strings)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


def _redact(text: str) -> str:
    import re

    return re.sub(r"(token=)[^&\s]+", r"\1[redacted]", text)


def run_api(host: str, port: int, log_level: str = "info") -> None:
    """Serve the FastAPI app with svc's WebSocket limits and a graceful shutdown (close 1001)."""
    import asyncio

    import uvicorn

    from svc.settings import get_settings

    class GracefulServer(uvicorn.Server):
        """On SIGTERM/SIGINT, WebSockets get their queued frames and a 1001 before uvicorn's own
        shutdown, which would close them with 1012."""

        async def shutdown(self, sockets: list[Any] | None = None) -> None:
            from svc import api, ws

            runtime = getattr(api.app.state, "runtime", None)
            if runtime is not None:
                for server in self.servers:
                    server.close()  # accept no new connections while the open ones drain
                await ws.shut_down_all(runtime)
            await super().shutdown(sockets)

    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
    config = uvicorn.Config(
        "svc.api:asgi",
        host=host,
        port=port,
        log_level=log_level,
        ws_max_size=settings.ws_max_message,
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_timeout,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=10,
    )
    asyncio.run(GracefulServer(config).serve())


def run_worker(argv: list[str]) -> None:
    """A Celery worker for svc's app with task events on; ``argv`` are celery worker options."""
    from svc.celery_app import app

    app.worker_main(["worker", "--task-events", *argv])


def run_beat(argv: list[str]) -> None:
    """Celery beat with the project's schedule; ``argv`` are celery beat options."""
    from svc.celery_app import app

    app.start(["beat", *argv])


def run_dev(host: str, port: int) -> int:
    """Redis (private unless SVC_REDIS_URL is set), the API, a worker and beat; Ctrl-C stops all."""
    from svc.embedded import start_redis

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = dict(os.environ)
    redis = None
    if "SVC_REDIS_URL" not in env:
        redis = start_redis()
        env["SVC_REDIS_URL"] = redis.url
        print(f"svc dev: started a private redis-server at {redis.url} (nothing saved to disk)", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="svc-dev-"))
    commands = {
        "api": ["api", "--host", host, "--port", str(port)],
        "worker": ["worker", "--loglevel", "INFO", "--concurrency", "2"],
        "beat": ["beat", "--loglevel", "INFO", "--schedule", str(workdir / "beat-schedule")],
    }
    children = {
        name: subprocess.Popen([sys.executable, "-m", "svc", *args], env=env, start_new_session=True)
        for name, args in commands.items()
    }
    base = f"http://{host}:{port}"
    print(f"svc dev: API {base}  demo {base}/demo  docs {base}/docs  (Ctrl-C stops everything)", flush=True)
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    try:
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    print(f"svc dev: {name} exited with code {child.returncode}; stopping", flush=True)
                    code, stopping = 1, True
            time.sleep(0.2)
    finally:
        for child in children.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        if redis is not None:
            redis.stop()
        print("svc dev: stopped", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``svc`` console script."""
    parser = argparse.ArgumentParser(prog="svc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    api = commands.add_parser("api", help="the FastAPI app under uvicorn")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--log-level", default="info")
    commands.add_parser("worker", help="a Celery worker (extra options go to celery worker)", add_help=False)
    commands.add_parser("beat", help="Celery beat with the project's schedule", add_help=False)
    dev = commands.add_parser("dev", help="Redis, API, worker and beat in one command")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    args, rest = parser.parse_known_args(argv)
    if args.command == "api":
        run_api(args.host, args.port, args.log_level)
    elif args.command == "worker":
        run_worker(rest)
    elif args.command == "beat":
        run_beat(rest)
    elif args.command == "dev":
        return run_dev(args.host, args.port)
    return 0
