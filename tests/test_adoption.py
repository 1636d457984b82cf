"""svc in a team's own Celery + FastAPI project (SPEC "Using svc in a project that already has Celery").

The apps in tests/apps are shaped like a team's: their own names, queues and URLs. The first tests hold
``svc.expose`` and the events-Redis rule to their promises in this process; the rest run real workers
(``svc worker -A`` and Celery's own ``celery -A … worker``) and real uvicorn servers, and watch with
real WebSocket clients.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import websockets
from celery import Celery
from fastapi import FastAPI
from pydantic import BaseModel

import svc
from svc.errors import ConfigurationError, InvalidArguments
from svc.exposure import exposed_tasks
from svc.settings import Settings
from svc.wiring import wiring_for
from tests.conftest import Service, closing, spawn, start_worker, svc_env, until, wait_for, wait_until_answers

pytestmark = pytest.mark.timeout(120)

TEAM_NS = f"team{uuid.uuid4().hex[:6]}"
OTHER_NS = f"other{uuid.uuid4().hex[:6]}"


# svc.expose, in this process ---------------------------------------------------------------------


def test_a_derived_schema_follows_the_signature_and_type_hints() -> None:
    app = Celery("derive")

    @svc.expose
    @app.task(name="send_email_task", shared=False)
    def send_email_task(email: str, subject: str, retries: int = 3, **headers: Any) -> str:
        return email

    exposed = exposed_tasks(app)["send_email_task"]
    schema = exposed.json_schema
    assert set(schema["properties"]) == {"email", "subject", "retries"}
    assert schema["required"] == ["email", "subject"]
    assert schema["properties"]["retries"] == {"default": 3, "title": "Retries", "type": "integer"}
    assert exposed.validate(["a@b.c", "hi"], {"x_tag": "1"}) == {
        "email": "a@b.c",
        "subject": "hi",
        "x_tag": "1",
    }
    with pytest.raises(InvalidArguments) as missing:
        exposed.validate(["a@b.c"], {})
    assert missing.value.extra["errors"][0]["loc"] == ("subject",)
    with pytest.raises(InvalidArguments):
        exposed.validate([5, "hi"], {})  # an int is no str
    assert exposed.description == ""  # no docstring: no description, never Celery's proxy text


def test_the_description_is_the_first_line_of_the_task_functions_docstring() -> None:
    app = Celery("doc")

    @svc.expose
    @app.task(name="documented", shared=False)
    def documented() -> None:
        """Say what it does.

        And more."""

    assert exposed_tasks(app)["documented"].description == "Say what it does."


def test_an_explicit_model_wins_over_the_signature() -> None:
    app = Celery("explicit")

    class Args(BaseModel):
        email: str

    @svc.expose(schema=Args)
    @app.task(name="send_email_task", shared=False)
    def send_email_task(email: str, subject: str = "x") -> str:
        return email

    assert set(exposed_tasks(app)["send_email_task"].json_schema["properties"]) == {"email"}


@pytest.mark.parametrize("target", [None, "send_email_task", 42, object()])
def test_expose_refuses_what_is_not_a_celery_task(target: Any) -> None:
    with pytest.raises(TypeError, match=r"svc\.expose takes a Celery task"):
        svc.expose(target)


def test_expose_refuses_a_schema_that_is_not_a_pydantic_model() -> None:
    with pytest.raises(TypeError, match="pydantic model class"):
        svc.expose(schema=dict)  # type: ignore[arg-type]


def test_one_name_exposed_twice_with_other_schemas_stops_the_startup() -> None:
    app = Celery("twice")

    class A(BaseModel):
        x: int

    class B(BaseModel):
        y: int

    @app.task(name="job", shared=False)
    def job(x: int) -> int:
        return x

    svc.expose(job, schema=A)
    svc.expose(job, schema=B)
    with pytest.raises(ConfigurationError, match="'job' is exposed twice"):
        exposed_tasks(app)


def test_the_same_exposure_twice_is_harmless() -> None:
    app = Celery("again")

    @app.task(name="job", shared=False)
    def job(x: int) -> int:
        return x

    svc.expose(job)
    svc.expose(job)
    assert list(exposed_tasks(app)) == ["job"]


def test_svc_expose_patterns_expose_tasks_of_an_app_whose_code_cannot_change() -> None:
    app = Celery("patterns")

    @app.task(name="reports.daily", shared=False)
    def daily(day: str) -> str:
        return day

    @app.task(name="reports.weekly", shared=False)
    def weekly(week: int) -> int:
        return week

    @app.task(name="billing.charge", shared=False)
    def charge(amount: int) -> int:
        return amount

    exposed = exposed_tasks(app, Settings(expose="reports.*").expose)
    assert sorted(exposed) == ["reports.daily", "reports.weekly"]
    assert exposed_tasks(app, ["*"]).keys() == {"reports.daily", "reports.weekly", "billing.charge"}
    with pytest.raises(ConfigurationError, match="matches no task"):
        exposed_tasks(app, ["nothing.*"])


def test_svcs_demo_tasks_exist_only_in_the_demo_app() -> None:
    from svc.celery_app import app as demo
    from tests.apps import other, team

    demo.loader.import_default_modules()
    assert "count_to" in exposed_tasks(demo)
    team_tasks = exposed_tasks(team.celery_app)
    assert list(team_tasks) == ["send_email_task"]  # the team's, not svc's demo task of that name
    assert set(team_tasks["send_email_task"].json_schema["properties"]) == {"email", "subject"}
    assert set(exposed_tasks(other.celery_app)["send_email_task"].json_schema["properties"]) == {"to"}


# Which Redis holds the events --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("broker", "backend", "events"),
    [
        ("amqp://guest@rabbit//", "redis://results:6379/2", "redis://results:6379/2"),
        ("redis://broker:6379/1", "rpc://", "redis://broker:6379/1"),
        ("redis://broker:6379/1", "redis://results:6379/2", "redis://results:6379/2"),
    ],
)
def test_events_go_to_the_apps_redis_backend_else_its_redis_broker(
    broker: str, backend: str, events: str
) -> None:
    app = Celery("urls", broker=broker, backend=backend)
    assert wiring_for(app, Settings()).events_url == events
    assert wiring_for(app, Settings(redis_url="redis://mine:6379/0")).events_url == "redis://mine:6379/0"


def test_an_app_without_redis_needs_svc_redis_url() -> None:
    app = Celery("rabbit", broker="amqp://guest@rabbit//", backend="rpc://")
    with pytest.raises(ConfigurationError, match="set SVC_REDIS_URL"):
        wiring_for(app, Settings())


async def test_a_mounted_gateway_whose_lifespan_never_ran_says_so() -> None:
    from tests.apps import team

    gateway = svc.Gateway(team.celery_app)
    parent = FastAPI()
    parent.mount("/svc", gateway.asgi)
    transport = httpx.ASGITransport(app=parent)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/svc/tasks")
    assert response.status_code == 503
    assert "lifespan=gateway.lifespan" in response.json()["detail"]


# Real workers and servers ------------------------------------------------------------------------


def team_env(redis_url: str, **extra: str) -> dict[str, str]:
    """What the team's processes see: their own Redis URL and queues, and no SVC_REDIS_URL (svc finds
    its Redis from the apps' own URLs)."""
    return {
        "TEAM_REDIS_URL": redis_url,
        "TEAM_QUEUE": f"{TEAM_NS}-q",
        "OTHER_QUEUE": f"{OTHER_NS}-q",
        "OTHER_NAMESPACE": OTHER_NS,
        "PLAIN_QUEUE": f"{TEAM_NS}-plain",
        "SVC_NAMESPACE": TEAM_NS,
        **extra,
    }


def without_svc_redis(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key != "SVC_REDIS_URL"}


@pytest.fixture(scope="module")
def team_worker(redis_url: str, session_dir: Path) -> Iterator[Service]:
    """``svc worker -A tests.apps.team``: the team's app, which never calls svc.instrument."""
    worker = start_worker(
        redis_url, session_dir, "team-worker", "-A", "tests.apps.team", **team_env(redis_url)
    )
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def other_worker(redis_url: str, session_dir: Path) -> Iterator[Service]:
    """``celery -A tests.apps.other worker``: Celery's own CLI, for an app that calls svc.instrument."""
    env = without_svc_redis(svc_env(redis_url, **team_env(redis_url)))
    hostname = f"other-{uuid.uuid4().hex[:6]}@localhost"
    args = [
        "-A",
        "tests.apps.other",
        "worker",
        "--loglevel",
        "INFO",
        "--hostname",
        hostname,
        "--pool",
        "solo",
    ]
    process = spawn(args, env, session_dir / "other-worker.log", module="celery")
    client = redis.Redis.from_url(redis_url)
    wait_for(lambda: client.zscore(f"{OTHER_NS}:workers", hostname) is not None, 60, "other worker", process)
    client.close()
    yield Service(process, session_dir / "other-worker.log", hostname=hostname)
    Service(process, session_dir / "other-worker.log").stop()


@pytest.fixture(scope="module")
def two_gateways(
    redis_url: str, session_dir: Path, team_worker: Service, other_worker: Service
) -> Iterator[Service]:
    """``uvicorn tests.apps.two_gateways:app``: the team's FastAPI app with both gateways mounted."""
    env = without_svc_redis(svc_env(redis_url, **team_env(redis_url)))
    service = serve("tests.apps.two_gateways:app", env, session_dir / "two-gateways.log", "/team/healthz")
    yield service
    service.stop()


def serve(target: str, env: dict[str, str], log: Path, health: str) -> Service:
    """``uvicorn TARGET`` on a free port, once ``health`` answers 200."""
    from svc.embedded import free_port

    port = free_port()
    process = spawn([target, "--port", str(port), "--log-level", "warning"], env, log, module="uvicorn")
    wait_until_answers(f"http://127.0.0.1:{port}{health}", process, target)
    return Service(process, log, port, env)


async def frames_of(url: str) -> list[dict[str, Any]]:
    """Every frame of a task socket, until the server closes it after the terminal event."""
    frames = []
    async with websockets.connect(url, open_timeout=10) as socket:
        async for raw in socket:
            frames.append(orjson.loads(raw))
    return frames


def history_states(client: redis.Redis, namespace: str, task_id: str) -> list[str]:
    return [orjson.loads(raw)["state"] for raw in client.zrange(f"{namespace}:task:{task_id}:history", 0, -1)]


async def test_svc_worker_instruments_an_app_that_never_calls_instrument(
    redis_url: str, team_worker: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`svc worker -A` records every step; `.delay()` from an instrumented sender records PENDING first."""
    monkeypatch.setenv("TEAM_REDIS_URL", redis_url)
    from tests.apps import team

    sender = closing(Celery("team", broker=redis_url, backend=redis_url))
    sender.conf.task_default_queue = f"{TEAM_NS}-q"
    svc.instrument(sender, Settings(namespace=TEAM_NS))
    result = sender.send_task("send_email_task", ["a@b.c"])
    assert await asyncio.to_thread(result.get, timeout=30) == "team email to a@b.c: Welcome!"
    client = redis.Redis.from_url(redis_url)
    await until(lambda: "SUCCESS" in history_states(client, TEAM_NS, result.id), what="SUCCESS recorded")
    assert history_states(client, TEAM_NS, result.id) == ["PENDING", "RECEIVED", "STARTED", "SUCCESS"]
    client.close()
    assert team.celery_app.main == "team"


def test_a_send_does_not_wait_on_an_unreachable_svc_redis(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """svc's Redis gone (a closed port) while the broker answers: ``send_task`` still enqueues, after
    one short try at PENDING (the worker's client would retry for about a minute), and says so."""
    import time

    from svc.embedded import free_port

    queue = f"{TEAM_NS}-unreachable"
    app = closing(Celery("unreachable", broker=redis_url, backend=redis_url))
    app.conf.task_default_queue = queue
    svc.instrument(app, Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", namespace=TEAM_NS))
    started = time.monotonic()
    app.send_task("send_email_task", ["x@y.z"])
    assert time.monotonic() - started < 20  # one try, not a minute of retries
    client = redis.Redis.from_url(redis_url)
    assert client.llen(queue) == 1
    client.delete(queue)
    client.close()
    assert "event=publish_failed" in caplog.text


async def test_only_an_instrumented_apps_tasks_have_events(redis_url: str, session_dir: Path) -> None:
    """A worker of an app that svc does not instrument (its process instruments another app) runs its
    tasks and publishes nothing for them."""
    env = without_svc_redis(svc_env(redis_url, **team_env(redis_url)))
    log = session_dir / "plain-worker.log"
    args = [
        "-A",
        "tests.apps.plain",
        "worker",
        "--loglevel",
        "INFO",
        "--pool",
        "solo",
        "-n",
        "plain@localhost",
    ]
    process = spawn(args, env, log, module="celery")
    try:
        sender = closing(Celery("plain", broker=redis_url, backend=redis_url))
        result = sender.send_task("send_email_task", ["p@q.r"], queue=f"{TEAM_NS}-plain")
        assert await asyncio.to_thread(result.get, timeout=60) == "plain email to p@q.r"
        client = redis.Redis.from_url(redis_url)
        assert client.exists(f"{TEAM_NS}:task:{result.id}:history", f"svc:task:{result.id}:history") == 0
        client.close()
    finally:
        Service(process, log).stop()


async def test_two_gateways_for_two_apps_in_one_process(two_gateways: Service) -> None:
    base, ws = two_gateways.base_url, two_gateways.ws_url
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        team_catalogue = (await http.get("/team/tasks")).json()["tasks"]
        other_catalogue = (await http.get("/other/tasks")).json()["tasks"]
        assert [task["name"] for task in team_catalogue] == ["send_email_task"]
        assert set(team_catalogue[0]["schema"]["properties"]) == {"email", "subject"}
        assert set(other_catalogue[0]["schema"]["properties"]) == {"to"}

        team_task = (await http.post("/team/tasks/send_email_task", json={"args": ["a@b.c"]})).json()
        other_task = (
            await http.post("/other/tasks/send_email_task", json={"kwargs": {"to": "x@y.z"}})
        ).json()
        assert team_task["ws_url"] == f"/team/ws/tasks/{team_task['task_id']}"
        assert team_task["status_url"] == f"/team/tasks/{team_task['task_id']}"
        assert other_task["ws_url"] == f"/other/ws/tasks/{other_task['task_id']}"
        refused = await http.post("/other/tasks/send_email_task", json={"kwargs": {"email": "a@b.c"}})
        assert refused.status_code == 422  # the other app's schema, not the team's

        team_frames = await frames_of(f"{ws}{team_task['ws_url']}?token={team_task['token']}")
        other_frames = await frames_of(f"{ws}{other_task['ws_url']}?token={other_task['token']}")
        assert [frame["state"] for frame in team_frames] == ["PENDING", "RECEIVED", "STARTED", "SUCCESS"]
        assert team_frames[-1]["result"] == "team email to a@b.c: Welcome!"
        assert other_frames[-1]["result"] == "other email to x@y.z"
        # Apart: the other gateway has no events of the team's task (both apps share one result
        # backend, so its stored result can still be read there).
        assert (await http.get(f"/other/tasks/{team_task['task_id']}/events")).status_code == 404

        # The pages and the SDK carry the prefix.
        assert (await http.get("/team/sdk/index.js")).status_code == 200
        assert (await http.get("/team/demo")).status_code == 200
        assert "/team/tasks/{name}" not in (await http.get("/team/openapi.json")).text


async def test_server_side_submit_and_watch_through_a_mounted_gateway(two_gateways: Service) -> None:
    base, ws = two_gateways.base_url, two_gateways.ws_url
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        task = (await http.post("/add", params={"x": 2, "y": 3})).json()
        assert task["ws_url"] == f"/team/ws/tasks/{task['task_id']}"  # the mount found by the lifespan
        frames = await frames_of(f"{ws}{task['ws_url']}?token={task['token']}")
        assert frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == 5

        watched = (await http.post("/add-and-wait", params={"x": 20, "y": 22})).json()
        assert watched == {"states": ["PENDING", "RECEIVED", "STARTED", "SUCCESS"], "result": 42}

        workflow = (await http.post("/chain")).json()
        assert workflow["kind"] == "chain" and len(workflow["task_ids"]) == 2
        assert workflow["ws_url"] == f"/team/ws/tasks/{workflow['workflow_id']}"
        frames = await frames_of(f"{ws}{workflow['ws_url']}?token={workflow['token']}")
        final = frames[-1]
        assert final["task_id"] == workflow["workflow_id"] and final["state"] == "SUCCESS"
        assert final["result"] == 6

        chosen = str(uuid.uuid4())
        task = (await http.post("/add-with-id", params={"task_id": chosen})).json()
        assert task["task_id"] == chosen
        frames = await frames_of(f"{ws}{task['ws_url']}?token={task['token']}")
        assert [frame["state"] for frame in frames] == ["PENDING", "RECEIVED", "STARTED", "SUCCESS"]
        assert frames[-1]["result"] == 9

        for path, kind, result in (("/group", "group", [2, 4]), ("/chord", "chord", 6)):
            workflow = (await http.post(path)).json()
            assert workflow["kind"] == kind
            frames = await frames_of(f"{ws}{workflow['ws_url']}?token={workflow['token']}")
            assert (frames[-1]["state"], frames[-1]["result"]) == ("SUCCESS", result), path


async def test_many_tasks_socket_under_a_mount(two_gateways: Service) -> None:
    base, ws = two_gateways.base_url, two_gateways.ws_url
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        task = (await http.post("/team/tasks/send_email_task", json={"args": ["m@n.o"]})).json()
    async with websockets.connect(f"{ws}/team/ws?token={task['token']}", open_timeout=10) as socket:
        await socket.send(
            orjson.dumps({"op": "subscribe", "task_id": task["task_id"], "token": task["token"]}).decode()
        )
        states = []
        while not states or states[-1] != "SUCCESS":
            frame = orjson.loads(await asyncio.wait_for(socket.recv(), 30))
            if frame.get("task_id") == task["task_id"] and "state" in frame:
                states.append(frame["state"])
    assert states == ["PENDING", "RECEIVED", "STARTED", "SUCCESS"]


async def test_svc_api_dash_a_serves_the_teams_app_alone(
    redis_url: str, session_dir: Path, team_worker: Service
) -> None:
    from svc.embedded import free_port

    port = free_port()
    env = without_svc_redis(svc_env(redis_url, **team_env(redis_url)))
    log = session_dir / "team-api.log"
    process = spawn(["api", "-A", "tests.apps.team", "--port", str(port), "--log-level", "warning"], env, log)
    service = Service(process, log, port, env)
    try:
        wait_until_answers(f"{service.base_url}/readyz", process, "team API ready")
        async with httpx.AsyncClient(base_url=service.base_url, timeout=5) as http:
            catalogue = (await http.get("/tasks")).json()["tasks"]
        assert [task["name"] for task in catalogue] == ["send_email_task"]
    finally:
        service.stop()


def test_svc_worker_dash_a_with_no_such_app_says_so(redis_url: str) -> None:
    import subprocess
    import sys

    env = svc_env(redis_url)
    done = subprocess.run(
        [sys.executable, "-m", "svc", "worker", "-A", "no_such_module_here"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "cannot load the Celery app 'no_such_module_here'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def mounted_demo(redis_url: str, session_dir: Path, worker: Service) -> Iterator[Service]:
    """``uvicorn tests.apps.mounted_demo:app``: svc's demo gateway at /svc in another FastAPI app."""
    service = serve(
        "tests.apps.mounted_demo:app", svc_env(redis_url), session_dir / "mounted-demo.log", "/svc/healthz"
    )
    yield service
    service.stop()


async def test_the_pages_work_under_a_mount_in_chromium(mounted_demo: Service) -> None:
    """/svc/demo loads the SDK from /svc/sdk, submits and shows the result; /svc/dashboard goes live."""
    from tests.test_dashboard_browser import chromium_page, demo_counts_to_three

    async with chromium_page() as (page, problems):
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        assert await demo_counts_to_three(page, f"{mounted_demo.base_url}/svc/demo") == "3"
        assert f"{mounted_demo.base_url}/svc/sdk/index.js" in requested
        assert f"{mounted_demo.base_url}/svc/tasks/count_to" in requested

        await page.goto(f"{mounted_demo.base_url}/svc/dashboard")
        await page.wait_for_selector('[data-testid="connection"][data-status="live"]', timeout=15_000)
        assert not problems, problems


@pytest.mark.timeout(240)
async def test_svc_dev_dash_a_runs_the_teams_app_on_its_own_redis(redis_url: str, tmp_path: Path) -> None:
    """`svc dev -A tests.apps.team`: the app names a Redis, so svc dev starts none; its API serves the
    team's catalogue, its worker runs the team's task, and Ctrl-C stops it all."""
    import signal

    from svc.embedded import free_port

    port = free_port()
    namespace = f"dev{uuid.uuid4().hex[:6]}"
    env = without_svc_redis(svc_env(redis_url, **team_env(redis_url, SVC_NAMESPACE=namespace)))
    env["TEAM_QUEUE"] = f"{namespace}-q"
    log = tmp_path / "dev.log"
    process = spawn(["dev", "-A", "tests.apps.team", "--port", str(port)], env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{base}/readyz", process, "svc dev -A ready", timeout=120)
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            assert [task["name"] for task in (await http.get("/tasks")).json()["tasks"]] == [
                "send_email_task"
            ]
            task = (await http.post("/tasks/send_email_task", json={"args": ["d@e.v"]})).json()
        frames = await frames_of(f"ws://127.0.0.1:{port}{task['ws_url']}?token={task['token']}")
        assert frames[-1]["result"] == "team email to d@e.v: Welcome!"
        assert "private redis-server" not in log.read_text()
        os.killpg(process.pid, signal.SIGINT)
        assert await asyncio.to_thread(process.wait, 60) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
