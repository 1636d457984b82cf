"""The ``svc`` command: api, worker, beat, and dev (all of them, with a private Redis when needed).

``-A``/``--app`` (or ``SVC_APP``) names the team's Celery app as ``celery -A`` does; without it every
command serves svc's demo app (svc/celery_app.py).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

DEV_PROCESSES = ("api", "worker", "beat")

if TYPE_CHECKING:
    from celery import Celery

    from svc.gateway import Gateway


class AppNotFound(Exception):
    """``-A`` names no Celery app that can be imported."""


def load_app(spec: str | None) -> Celery:
    """The Celery app ``spec`` names (``module`` or ``module:attribute``, found as ``celery -A`` finds
    it, from the current directory), or svc's demo app for None; instrumented either way."""
    from celery import Celery
    from celery.app.utils import find_app

    from svc.worker.instrument import instrument

    if spec is None:
        from svc.celery_app import app as demo

        return demo
    try:
        found = find_app(spec)
    except (ImportError, AttributeError) as exc:
        raise AppNotFound(f"svc: cannot load the Celery app {spec!r}: {exc}") from None
    if not isinstance(found, Celery):
        raise AppNotFound(f"svc: {spec!r} is {type(found).__name__}, not a Celery app")
    return instrument(found)


def gateway_for(spec: str | None) -> Gateway:
    """The gateway of the app ``spec`` names (the demo's own for None)."""
    if spec is None:
        from svc.demo import gateway

        return gateway
    from svc.gateway import Gateway

    return Gateway(load_app(spec))


def run_api(
    host: str,
    port: int,
    log_level: str = "info",
    loop: str = "auto",
    app: str | None = None,
    workers: int = 1,
) -> int:
    """Serve ``app``'s gateway with svc's WebSocket protocol (svc.edge.wsprotocol: frames encoded once,
    one keepalive timer) and limits, its slow-client guards (svc.edge.http_guard), token redaction in
    uvicorn's logs and a graceful shutdown (close 1001), on ``loop`` (asyncio, uvloop or auto: uvloop
    when installed), in ``workers`` processes sharing one listening socket (svc.edge.processes); the
    exit status."""
    import asyncio

    import uvicorn

    from svc.edge import ws
    from svc.edge.http_guard import guarded_protocol
    from svc.edge.wsprotocol import SvcWebSocketProtocol

    gateway = gateway_for(app)

    class GracefulServer(uvicorn.Server):
        """On SIGTERM/SIGINT, WebSockets get their queued frames and a 1001 before uvicorn's own
        shutdown, which would close them with 1012."""

        async def shutdown(self, sockets: list[Any] | None = None) -> None:
            if gateway.started:
                for server in self.servers:
                    server.close()  # accept no new connections while the open ones drain
                await ws.shut_down_all(gateway.runtime)
            await super().shutdown(sockets)

    settings = gateway.settings
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = uvicorn.Config(
        gateway.asgi,
        host=host,
        port=port,
        log_level=log_level,
        loop=loop,
        http=guarded_protocol(settings),
        ws=SvcWebSocketProtocol,
        ws_max_size=settings.ws_max_message,
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_timeout,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=10,
    )

    def serve(sockets: list[socket.socket] | None = None) -> None:
        server = GracefulServer(config)
        tune_gc()
        if loop == "asyncio":
            asyncio.run(server.serve(sockets))
        else:
            server.run(sockets)  # with the loop factory of config.loop

    if workers <= 1:
        serve()
        return 0
    from svc.edge.processes import listening_socket, supervise

    try:
        shared = listening_socket(host, port)
    except OSError as exc:
        print(f"svc api: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    log = logging.getLogger("svc.api")
    log.info("event=api_listening url=http://%s:%d processes=%d", host, port, workers)
    return supervise(workers, lambda: serve([shared]))


# Young-generation threshold of svc api's collector (CPython's default is 700): a burst of thousands of
# WebSocket handshakes allocates faster than that, and each collection walks every socket's young objects.
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """Collector settings for the API process (svc api only, never an app that embeds svc): what was
    loaded at start-up (modules, the app, the settings) is frozen out of every later collection, and
    young collections come every GC_YOUNG_THRESHOLD allocations instead of 700. Measured in
    bench.fanout at 10,000 subscribers: handshakes per CPU second 1,484-1,664 before, 1,961-2,392 after,
    CPU per frame and memory per subscriber unchanged (BENCHMARKS.md)."""
    import gc

    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, max(middle, 50), max(oldest, 100))


def run_worker(argv: list[str], app: str | None = None) -> None:
    """A Celery worker for ``app``, instrumented, with task events on; ``argv`` are celery worker
    options."""
    load_app(app).worker_main(["worker", "--task-events", *argv])


def run_beat(argv: list[str], app: str | None = None) -> None:
    """Celery beat with ``app``'s schedule; ``argv`` are celery beat options."""
    load_app(app).start(["beat", *argv])


def needs_private_redis(app: str | None, env: dict[str, str]) -> bool:
    """True when svc dev must start a Redis: for the demo app, when SVC_REDIS_URL is unset (its default
    Redis is always the private one); for a team's app, when svc would find no Redis to use
    (svc.wiring's rule: SVC_REDIS_URL, else the app's Redis result backend, else its Redis broker)."""
    if app is None:
        return "SVC_REDIS_URL" not in env
    from svc.errors import ConfigurationError
    from svc.settings import Settings
    from svc.wiring import wiring_for

    try:
        wiring_for(load_app(app), Settings(redis_url=env.get("SVC_REDIS_URL")))
    except ConfigurationError:
        return True
    return False


def run_dev(host: str, port: int, app: str | None = None) -> int:
    """Redis (private when svc dev needs one: see needs_private_redis), the API, a worker and beat.

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
        if needs_private_redis(app, env):
            redis = start_redis(die_with_parent=True)
            env["SVC_REDIS_URL"] = redis.url
            _say(f"svc dev: started a private redis-server at {redis.url} (nothing saved to disk)")
        workdir = Path(tempfile.mkdtemp(prefix="svc-dev-"))
        if app is not None:
            env["SVC_APP"] = app
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
    api = commands.add_parser("api", help="the API for the app under uvicorn")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--log-level", default="info")
    api.add_argument(
        "--workers", type=positive, default=1, help="API processes sharing the port (each its own bridge)"
    )
    api.add_argument(
        "--loop", choices=("asyncio", "uvloop", "auto"), default="auto", help="auto: uvloop when installed"
    )
    commands.add_parser("worker", help="a Celery worker (extra options go to celery worker)", add_help=False)
    commands.add_parser("beat", help="Celery beat with the app's schedule", add_help=False)
    dev = commands.add_parser("dev", help="Redis (if needed), API, worker and beat in one command")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    for command in (api, dev):
        command.add_argument("-A", "--app", default=None, help="the Celery app, as celery -A takes it")
    args, rest = parser.parse_known_args(argv)
    try:
        app = getattr(args, "app", None)
        if args.command in ("worker", "beat"):
            app, rest = split_app_option(rest)
        app = app or os.environ.get("SVC_APP") or None
        if args.command == "api":
            return run_api(args.host, args.port, args.log_level, args.loop, app, args.workers)
        elif args.command == "worker":
            run_worker(rest, app)
        elif args.command == "beat":
            run_beat(rest, app)
        elif args.command == "dev":
            return run_dev(args.host, args.port, app)
    except AppNotFound as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def split_app_option(argv: list[str]) -> tuple[str | None, list[str]]:
    """``-A APP`` / ``--app APP`` / ``--app=APP`` taken out of celery options (they go to Celery)."""
    app, rest, index = None, [], 0
    while index < len(argv):
        arg = argv[index]
        if arg in ("-A", "--app"):
            if index + 1 >= len(argv):
                raise AppNotFound(f"svc: {arg} needs a value (module or module:attribute)")
            app, index = argv[index + 1], index + 2
            continue
        if arg.startswith("--app="):
            app = arg.split("=", 1)[1]
        elif arg.startswith("-A") and len(arg) > 2:
            app = arg[2:]
        else:
            rest.append(arg)
        index += 1
    return app, rest
