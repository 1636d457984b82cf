"""Real parts for every test: a private redis-server, real Celery workers and a real API process.

Processes start once per session on free ports; each test gets fresh task ids, so tests never share
state they can see. Helpers here submit tasks and read WebSockets with real clients.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets
from celery import Celery

from svc import redis_clients
from svc.celery_app import deployment_settings
from svc.embedded import RedisProcess, free_port, start_redis

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
NAMESPACE = f"svctest{uuid.uuid4().hex[:6]}"
TERMINAL = {"SUCCESS", "FAILURE", "REVOKED"}


@dataclass
class Service:
    """A running svc process (API or worker) with its log file."""

    process: subprocess.Popen[bytes]
    log: Path
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    hostname: str | None = None  # a worker's Celery hostname

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def svc_env(redis_url: str, **extra: str) -> dict[str, str]:
    """Environment for a svc process in the test session."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SVC_")}
    env.update(
        SVC_REDIS_URL=redis_url,
        SVC_NAMESPACE=NAMESPACE,
        SVC_EMAIL_DELAY="0.2",
        SVC_RETRY_BACKOFF_SCALE="0.01",
        # The suite drives hundreds of tasks and sockets from one address; the limits have tests of
        # their own with the defaults (tests/test_security.py).
        SVC_RATE_LIMIT="0",
        SVC_WS_MAX_CONNECTIONS="100000",
        SVC_HTTP_MAX_CONNECTIONS="100000",
        PYTHONUNBUFFERED="1",
        # Child processes import this checkout, whatever an editable install elsewhere points at.
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    env.update(extra)
    return env


def spawn(args: list[str], env: dict[str, str], log: Path, module: str = "svc") -> subprocess.Popen[bytes]:
    """Start ``python -m svc …`` (or another module) in its own process group, output to ``log``."""
    with log.open("wb") as handle:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=log.parent,
        )


def wait_for(
    predicate: Any, timeout: float, what: str, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``predicate`` until true; fail with ``what`` (and the process's death) on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {process.returncode}")
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def start_worker(redis_url: str, tmp: Path, name: str, *args: str, **env: str) -> Service:
    """A real Celery worker; returns once its heartbeat is in Redis."""
    hostname = f"{name}-{uuid.uuid4().hex[:6]}@localhost"
    log = tmp / f"{name}.log"
    process = spawn(
        [
            "worker",
            "--loglevel",
            "INFO",
            "--hostname",
            hostname,
            "--without-mingle",
            "--without-gossip",
            *args,
        ],
        svc_env(redis_url, **env),
        log,
    )
    client = redis_clients.sync_client(redis_url)  # any URL svc takes: one Redis, Sentinel, a cluster
    workers = f"{env.get('SVC_NAMESPACE', NAMESPACE)}:workers"
    wait_for(lambda: client.zscore(workers, hostname) is not None, 60, f"worker {name}", process)
    client.close()
    return Service(process, log, hostname=hostname)


ASGI, FASTAPI_ONLY = "svc.demo:asgi", "svc.demo:app"  # what `svc api` serves; the FastAPI app alone


def start_api(
    redis_url: str,
    tmp: Path,
    name: str = "api",
    port: int | None = None,
    log_level: str = "warning",
    target: str = ASGI,
    **env: str,
) -> Service:
    """A real API process under uvicorn; returns once /healthz answers. ``target`` ASGI is ``svc api``;
    FASTAPI_ONLY is ``uvicorn svc.demo:app`` with the same WebSocket limits (the FastAPI routes alone,
    without svc's fast lanes in front), so that one suite can hold both to the same answers."""
    port = port or free_port()
    log = tmp / f"{name}.log"
    full_env = svc_env(redis_url, **env)
    if target == ASGI:
        process = spawn(["api", "--port", str(port), "--log-level", log_level], full_env, log)
    else:
        limits = [
            *("--ws-max-size", full_env.get("SVC_WS_MAX_MESSAGE", "65536")),
            *("--ws-ping-interval", full_env.get("SVC_WS_PING_INTERVAL", "20")),
            *("--ws-ping-timeout", full_env.get("SVC_WS_PING_TIMEOUT", "20")),
            *("--ws-per-message-deflate", "false"),
        ]
        args = [target, "--port", str(port), "--log-level", log_level, *limits]
        process = spawn(args, full_env, log, module="uvicorn")

    wait_until_answers(f"http://127.0.0.1:{port}/healthz", process, f"API {name}")
    return Service(process, log, port, full_env)


def wait_until_answers(
    url: str, process: subprocess.Popen[bytes], what: str, timeout: float = 30, status: int = 200
) -> None:
    """Poll ``url`` until it answers ``status`` (fail with ``what`` if ``process`` dies first)."""

    def answers() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == status
        except httpx.HTTPError:
            return False

    wait_for(answers, timeout, what, process)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("svc")


@pytest.fixture(scope="session")
def redis_server(session_dir: Path) -> Iterator[RedisProcess]:
    server = start_redis(directory=session_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisProcess) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def worker(redis_url: str, session_dir: Path) -> Iterator[Service]:
    service = start_worker(redis_url, session_dir, "worker", "--concurrency", "4")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def asgi_api(redis_url: str, session_dir: Path, worker: Service) -> Iterator[Service]:
    """The API as `svc api` serves it (the fast lanes in front of the FastAPI app)."""
    service = start_api(redis_url, session_dir)
    yield service
    service.stop()


@pytest.fixture(scope="session")
def api(asgi_api: Service) -> Service:
    """The session's API (`svc api`); suites that hold both ways in to the same answers override this
    with a fixture parametrized over :func:`both_apis`."""
    return asgi_api


@pytest.fixture(scope="session")
def fastapi_only_api(redis_url: str, session_dir: Path, worker: Service) -> Iterator[Service]:
    """The FastAPI app alone (``uvicorn svc.demo:app``), for the suites that run against both."""
    service = start_api(redis_url, session_dir, name="api-fastapi-only", target=FASTAPI_ONLY)
    yield service
    service.stop()


def both_ways_in() -> Any:
    """A module-scoped ``api`` fixture, parametrized: every test of the module that uses it runs
    against `svc api` and against the FastAPI app alone (``api = both_ways_in()`` in the module)."""

    @pytest.fixture(scope="module", params=[ASGI, FASTAPI_ONLY], name="api")
    def api(request: pytest.FixtureRequest) -> Service:
        service: Service = request.getfixturevalue(
            "asgi_api" if request.param == ASGI else "fastapi_only_api"
        )
        return service

    return api


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
async def http(api: Service) -> Any:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as client:
        yield client


async def submit(http: httpx.AsyncClient, name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """POST /tasks/{name}; assert 202 and return the body."""
    options = kwargs.pop("_options", {})
    response = await http.post(
        f"/tasks/{name}", json={"args": list(args), "kwargs": kwargs, "options": options}
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def watch(
    api: Service, task_id: str, since: int = 0, timeout: float = 30
) -> tuple[list[dict[str, Any]], int]:
    """Every frame of ``/ws/tasks/{task_id}`` until the server closes it; returns (events, close code)."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        async with websockets.connect(f"{api.ws_url}/ws/tasks/{task_id}?since={since}") as socket:
            async for message in socket:
                frames.append(json.loads(message))
        code = socket.close_code
    assert code is not None
    return frames, code


_open_celery_clients: list[Celery] = []


def closing(app: Celery) -> Celery:
    """``app``, a Celery client made in the test process, closed when the test ends (below)."""
    _open_celery_clients.append(app)
    return app


@pytest.fixture(autouse=True)
def close_celery_clients() -> Iterator[None]:
    """After each test, close what its Celery clients opened: the result backend's pub/sub (which
    ``AsyncResult.get`` subscribes with), the broker's pools, and svc's clients of the events Redis.
    Closed only once the test's own references are gone and collected: an ``AsyncResult`` unsubscribes
    when it is deleted, and on a closed pub/sub that would open a new connection, never closed."""
    yield
    if not _open_celery_clients:
        return
    from svc.worker.state import instrumentation_of

    gc.collect()
    while _open_celery_clients:
        app = _open_celery_clients.pop()
        if app._backend is not None:  # made only once results were used
            consumer = getattr(app._backend, "result_consumer", None)
            if consumer is not None:
                consumer.stop()
                # a result still referenced elsewhere unsubscribes when deleted: with nothing left
                # subscribed, it has nothing to send (else a closed pub/sub would open a connection)
                consumer.subscribed_to.clear()
        app.close()
        state = instrumentation_of(app)
        if state is not None:
            state.close()


def plain_celery(redis_url: str, namespace: str = NAMESPACE) -> Celery:
    """A Celery client that knows nothing of svc: what another service of the user's would run, set up
    as the README says a client of the demo app must be (its queue and result keys follow the namespace)."""
    celery = closing(Celery("elsewhere", broker=redis_url, backend=redis_url))
    celery.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        **deployment_settings(namespace),
    )
    return celery


async def until(predicate: Any, timeout: float = 10, what: str = "condition") -> None:
    """Await a condition that has no event of its own to wait on (polled every 20 ms)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - the condition lives in another process
            await asyncio.sleep(0.02)


def subscribed(client: redis.Redis, task_id: str) -> bool:
    """True once some API process has SUBSCRIBEd to the task's channel."""
    return bool(client.pubsub_numsub(f"{NAMESPACE}:task:{task_id}")[0][1])


def states(frames: list[dict[str, Any]]) -> list[str]:
    """The states of a list of events, in order."""
    return [frame["state"] for frame in frames]


def assert_in_order(frames: list[dict[str, Any]]) -> None:
    """Seq strictly increasing, no duplicates, exactly one terminal event, last."""
    seqs = [frame["seq"] for frame in frames]
    assert seqs == sorted(set(seqs)), seqs
    assert [frame["state"] in TERMINAL for frame in frames].count(True) == 1, states(frames)
    assert frames[-1]["state"] in TERMINAL
