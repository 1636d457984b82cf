"""The ``svc`` command: api, worker, beat, and dev (all of them, with a private Redis)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEV_PROCESSES = ("api", "worker", "beat")


def run_api(host: str, port: int, log_level: str = "info", loop: str = "auto") -> None:
    """Serve the FastAPI app with svc's WebSocket limits, its slow-client guards (svc.edge.http_guard), token
    redaction in uvicorn's logs and a graceful shutdown (close 1001), on ``loop`` (asyncio, uvloop or
    auto: uvloop when installed)."""
    import asyncio

    import uvicorn

    from svc.edge.http_guard import guarded_protocol
    from svc.settings import get_settings

    class GracefulServer(uvicorn.Server):
        """On SIGTERM/SIGINT, WebSockets get their queued frames and a 1001 before uvicorn's own
        shutdown, which would close them with 1012."""

        async def shutdown(self, sockets: list[Any] | None = None) -> None:
            from svc import api
            from svc.edge import ws

            runtime = getattr(api.app.state, "runtime", None)
            if runtime is not None:
                for server in self.servers:
                    server.close()  # accept no new connections while the open ones drain
                await ws.shut_down_all(runtime)
            await super().shutdown(sockets)

    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = uvicorn.Config(
        "svc.api:asgi",
        host=host,
        port=port,
        log_level=log_level,
        loop=loop,
        http=guarded_protocol(settings),
        ws_max_size=settings.ws_max_message,
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_timeout,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=10,
    )
    server = GracefulServer(config)
    if loop == "asyncio":
        asyncio.run(server.serve())
    else:
        server.run()  # with the loop factory of config.loop


def run_worker(argv: list[str]) -> None:
    """A Celery worker for svc's app with task events on; ``argv`` are celery worker options."""
    from svc.celery_app import app

    app.worker_main(["worker", "--task-events", *argv])


def run_beat(argv: list[str]) -> None:
    """Celery beat with the project's schedule; ``argv`` are celery beat options."""
    from svc.celery_app import app

    app.start(["beat", *argv])


def run_dev(host: str, port: int) -> int:
    """Redis (private unless SVC_REDIS_URL is set), the API, a worker and beat.

    Ctrl-C, SIGTERM and SIGHUP (its terminal closing) stop them all, Redis last, and remove the
    temporary folders svc dev made. On Linux, a svc dev that is killed outright takes them with it: the
    kernel signals each child (``PR_SET_PDEATHSIG``); only the folders stay behind then."""
    from svc.embedded import RedisProcess, exit_with_parent, start_redis

    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    # Before anything starts: the children live in sessions of their own (so that a Ctrl-C does not
    # stop Redis before the processes using it), so no signal of the terminal reaches them but ours.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = dict(os.environ)
    redis: RedisProcess | None = None
    workdir: Path | None = None
    children: dict[str, subprocess.Popen[bytes]] = {}
    code = 0
    try:
        if "SVC_REDIS_URL" not in env:
            redis = start_redis(die_with_parent=True)
            env["SVC_REDIS_URL"] = redis.url
            _say(f"svc dev: started a private redis-server at {redis.url} (nothing saved to disk)")
        workdir = Path(tempfile.mkdtemp(prefix="svc-dev-"))
        commands = {
            "api": ["api", "--host", host, "--port", str(port)],
            "worker": ["worker", "--loglevel", "INFO", "--concurrency", "2"],
            "beat": ["beat", "--loglevel", "INFO", "--schedule", str(workdir / "beat-schedule")],
        }
        for name, args in commands.items():
            if stopping:
                break
            # Killed outright, svc dev leaves each child to its SIGTERM, but a worker whose private
            # Redis dies with it has nothing to hand back (queues and results go with Redis) and its
            # warm shutdown would spend a minute retrying Redis: it gets SIGKILL, its pool follows.
            orphaned = signal.SIGKILL if name == "worker" and redis is not None else signal.SIGTERM
            children[name] = subprocess.Popen(
                [sys.executable, "-m", "svc", *args],
                env=env,
                start_new_session=True,
                preexec_fn=exit_with_parent(orphaned),
            )
        base = f"http://{host}:{port}"
        _say(f"svc dev: API {base}  demo {base}/demo  docs {base}/docs  (Ctrl-C stops everything)")
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    _say(f"svc dev: {name} exited with code {child.returncode}; stopping")
                    code, stopping = 1, True
            time.sleep(0.2)
    finally:
        _stop_all(list(children.values()))
        if redis is not None:
            redis.stop()  # last: the others may still talk to it while they shut down
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        _say("svc dev: stopped")
    return code


def _stop_all(children: list[subprocess.Popen[bytes]], grace: float = 15) -> None:
    """SIGTERM each child's process group (a worker's pool is in its group), SIGKILL what is left
    after ``grace`` seconds, and reap them all."""
    for child in children:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def _say(line: str) -> None:
    """Print a status line; after a SIGHUP the terminal may be gone, and shutting down matters more."""
    with contextlib.suppress(OSError):
        print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``svc`` console script."""
    parser = argparse.ArgumentParser(prog="svc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    api = commands.add_parser("api", help="the FastAPI app under uvicorn")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--log-level", default="info")
    api.add_argument(
        "--loop", choices=("asyncio", "uvloop", "auto"), default="auto", help="auto: uvloop when installed"
    )
    commands.add_parser("worker", help="a Celery worker (extra options go to celery worker)", add_help=False)
    commands.add_parser("beat", help="Celery beat with the project's schedule", add_help=False)
    dev = commands.add_parser("dev", help="Redis, API, worker and beat in one command")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    args, rest = parser.parse_known_args(argv)
    if args.command == "api":
        run_api(args.host, args.port, args.log_level, args.loop)
    elif args.command == "worker":
        run_worker(rest)
    elif args.command == "beat":
        run_beat(rest)
    elif args.command == "dev":
        return run_dev(args.host, args.port)
    return 0
