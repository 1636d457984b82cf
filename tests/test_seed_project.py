"""SPEC "Using svc in a project that already has Celery": examples/seed_project, the seed's own files with
svc adopted, run as its team runs it (`celery -A project.worker worker`, `uvicorn project.main:app`), with
no SVC_* setting at all: svc finds its Redis in the app's own URLs."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import websockets

from svc.embedded import free_port, start_redis

from .conftest import ROOT, Service, spawn, states, wait_for

pytestmark = pytest.mark.timeout(120)

SEED = ROOT / "examples" / "seed_project"
JS = ROOT / "clients" / "js"

# Watches one task through the JS SDK, as a Node service of the team's would: argv is the SDK's entry
# module, the `ws` package, the svc base URL (with its prefix), the task id and its token.
WATCH_JS = """
import { pathToFileURL } from "node:url";
const [sdk, ws, baseUrl, taskId, token] = process.argv.slice(2);
const { Client } = await import(pathToFileURL(sdk).href);
const { WebSocket } = await import(pathToFileURL(ws).href);
const client = new Client({ baseUrl, WebSocket });
try {
  const value = await client.task(taskId, token).result({ timeout: 30_000 });
  process.stdout.write(JSON.stringify(value));
} finally {
  client.close();
}
"""


def seed_env(redis_url: str) -> dict[str, str]:
    """The team's environment: their own two variables, no SVC_* (and this checkout's svc)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SVC_")}
    env.update(
        REDIS_URL=redis_url,
        EMAIL_DELAY="0.2",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join([str(SEED), str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
    )
    return env


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A private Redis, the seed's Celery worker and its FastAPI app; yields the app, once svc's
    readiness (mounted at /svc) sees the worker online."""
    # `spawn` runs each process in its log's folder: there, `project` is the example's own package.
    here = tmp_path_factory.mktemp("seed")
    (here / "project").symlink_to(SEED / "project", target_is_directory=True)
    with ExitStack() as stack:
        redis_server = start_redis(directory=here)
        stack.callback(redis_server.stop)
        env = seed_env(redis_server.url)
        celery_args = ["-A", "project.worker", "worker", "--loglevel", "INFO", "--concurrency", "1"]
        worker = Service(spawn(celery_args, env, here / "worker.log", module="celery"), here / "worker.log")
        stack.callback(worker.stop)
        port = free_port()
        uvicorn_args = ["project.main:app", "--port", str(port)]
        api = Service(spawn(uvicorn_args, env, here / "api.log", module="uvicorn"), here / "api.log", port)
        stack.callback(api.stop)

        def ready() -> bool:
            if worker.process.poll() is not None:
                raise RuntimeError(f"celery worker exited with {worker.process.returncode}: {worker.log}")
            try:
                return httpx.get(f"{api.base_url}/svc/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 60, f"the seed project to be ready (logs in {here})", api.process)
        yield api


def send_email(api: Service, email: str) -> dict[str, Any]:
    """The team's own endpoint: POST /send-email?email=…; returns its answer."""
    response = httpx.post(f"{api.base_url}/send-email", params={"email": email}, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body.keys() == {"task_id", "ws_url", "token"}, body
    assert body["ws_url"].startswith("/svc/ws/tasks/") and body["task_id"] in body["ws_url"], body
    assert isinstance(body["token"], str) and body["token"]
    return body


async def test_send_email_is_watched_live_over_the_mounted_websocket(seed: Service) -> None:
    email = f"ada-{uuid.uuid4().hex[:6]}@example.com"
    body = await asyncio.to_thread(send_email, seed, email)
    separator = "&" if "?" in body["ws_url"] else "?"
    url = f"{seed.ws_url}{body['ws_url']}{separator}token={quote(body['token'])}"
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(30), websockets.connect(url) as socket:
        async for message in socket:
            frames.append(json.loads(message))
    assert socket.close_code == 1000
    assert states(frames)[0] == "PENDING" and "STARTED" in states(frames), states(frames)
    assert states(frames)[-1] == "SUCCESS", states(frames)
    assert [frame["seq"] for frame in frames] == list(range(1, len(frames) + 1)), frames
    assert {frame["task_id"] for frame in frames} == {body["task_id"]}
    assert frames[-1]["name"] == "send_email_task"
    assert frames[-1]["result"] == f"Email sent to {email} with subject Welcome!"


async def test_catalogue_has_the_teams_task_with_its_signatures_schema(seed: Service) -> None:
    async with httpx.AsyncClient(base_url=seed.base_url, timeout=10) as http:
        response = await http.get("/svc/tasks")
    assert response.status_code == 200, response.text
    tasks = {task["name"]: task for task in response.json()["tasks"]}
    assert set(tasks) == {"send_email_task"}, "svc's demo tasks exist only in svc's demo app"
    schema = tasks["send_email_task"]["schema"]
    assert schema["properties"]["email"]["type"] == "string"
    assert schema["properties"]["subject"]["type"] == "string"
    assert set(schema.get("required", [])) == {"email", "subject"}


def test_js_sdk_under_the_prefix_gets_the_result(seed: Service, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (scripts/test installs it from Debian where it can)")
    ws = JS / "node_modules" / "ws" / "wrapper.mjs"
    if not ws.is_file():
        pytest.skip("clients/js dependencies are not installed: run `npm --prefix clients/js ci`")
    email = f"grace-{uuid.uuid4().hex[:6]}@example.com"
    body = send_email(seed, email)
    script = tmp_path / "watch.mjs"
    script.write_text(WATCH_JS)
    sdk = JS / "src" / "index.js"
    args = [node, str(script), str(sdk), str(ws), f"{seed.base_url}/svc", body["task_id"], body["token"]]
    # subprocess.run kills node if it outlives its timeout.
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == f"Email sent to {email} with subject Welcome!"
