"""The seed's patterns, live over the socket: retries, workflows, beat, cancel, idempotency."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets
from celery.result import AsyncResult

from .conftest import (
    NAMESPACE,
    Service,
    assert_in_order,
    plain_celery,
    spawn,
    start_worker,
    states,
    submit,
    svc_env,
    watch,
)

pytestmark = pytest.mark.timeout(90)


# retries ------------------------------------------------------------------------------------------


async def test_retries_are_events_in_order(api: Service, http: httpx.AsyncClient) -> None:
    task_id = (await submit(http, "unstable_task", {"fail_times": 2}))["task_id"]
    frames, code = await watch(api, task_id)
    assert code == 1000
    assert_in_order(frames)
    lifecycle = [state for state in states(frames) if state in ("STARTED", "RETRY", "SUCCESS")]
    assert lifecycle == ["STARTED", "RETRY", "STARTED", "RETRY", "STARTED", "SUCCESS"]
    retries = [frame for frame in frames if frame["state"] == "RETRY"]
    assert [frame["retries"] for frame in retries] == [1, 2]
    assert all(frame["error"]["type"] == "ConnectionError" and frame["eta"] for frame in retries)
    assert frames[-1]["result"]["attempts"] == 3


async def test_exhausted_retries_end_in_failure_that_says_so(api: Service, http: httpx.AsyncClient) -> None:
    task_id = (await submit(http, "unstable_task", {"fail_times": 10}))["task_id"]
    frames, _ = await watch(api, task_id)
    assert states(frames).count("RETRY") == 3
    final = frames[-1]
    assert final["state"] == "FAILURE" and final["retries"] == 3 and final["retries_exhausted"] is True
    assert final["error"]["type"] == "ConnectionError"


# workflows ----------------------------------------------------------------------------------------


async def run_workflow(
    api: Service, http: httpx.AsyncClient, body: dict[str, Any]
) -> tuple[dict[str, Any], list]:
    response = await http.post("/workflows", json=body)
    assert response.status_code == 202, response.text
    accepted = response.json()
    frames, code = await watch(api, accepted["workflow_id"])
    assert code == 1000
    return accepted, frames


async def test_chain_feeds_each_result_to_the_next_step(api: Service, http: httpx.AsyncClient) -> None:
    chain = [{"task": "fetch_data", "args": ["crm"]}, {"task": "process_data"}, {"task": "save_data"}]
    accepted, frames = await run_workflow(api, http, {"chain": chain})
    assert accepted["kind"] == "chain" and len(accepted["task_ids"]) == 3
    final = frames[-1]
    assert final["task_id"] == accepted["workflow_id"] and final["state"] == "SUCCESS"
    assert final["result"] == "saved 5 records (total 30)"
    steps = [frame for frame in frames if frame.get("workflow_id") == accepted["workflow_id"]]
    for index, task_id in enumerate(accepted["task_ids"]):
        mine = [frame for frame in steps if frame["task_id"] == task_id]
        assert all(frame["step"] == index for frame in mine)
        assert states(mine)[-1] == "SUCCESS"
    assert [frame["seq"] for frame in frames] == list(range(1, len(frames) + 1))


async def test_failing_step_ends_the_chain_and_later_steps_never_run(
    api: Service, http: httpx.AsyncClient
) -> None:
    chain = [{"task": "echo", "args": ["boom"]}, {"task": "fail"}, {"task": "save_data"}]
    accepted, frames = await run_workflow(api, http, {"chain": chain})
    final = frames[-1]
    assert final["state"] == "FAILURE" and final["step"] == 1
    assert final["error"] == {"type": "ValueError", "message": "boom"}
    assert final["failed_task_id"] == accepted["task_ids"][1]
    third = (await http.get(f"/tasks/{accepted['task_ids'][2]}")).json()
    assert third["state"] == "PENDING"


async def test_group_result_is_every_step_in_order(api: Service, http: httpx.AsyncClient) -> None:
    group = [{"task": "add", "args": [n, n]} for n in range(5)]
    _, frames = await run_workflow(api, http, {"group": group})
    assert frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == [0, 2, 4, 6, 8]


async def test_chord_callback_gets_the_group_results(api: Service, http: httpx.AsyncClient) -> None:
    body = {
        "group": [{"task": "add", "args": [1, 1]}, {"task": "add", "args": [2, 2]}],
        "callback": {"task": "echo"},
    }
    accepted, frames = await run_workflow(api, http, body)
    assert accepted["kind"] == "chord"
    assert frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == [2, 4]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"chain": [{"task": "nope"}]}, 404),
        ({"chain": [{"task": "add", "args": ["x", 1]}]}, 422),
        ({"chain": [{"task": "add", "args": [1, 2]}, {"task": "add", "args": [1, 2]}]}, 422),
        ({"chain": [], "group": []}, 422),
        ({"chain": [{"task": "add", "args": [1, 2]}], "callback": {"task": "echo"}}, 422),
        ({}, 422),
    ],
)
async def test_bad_workflows_are_refused_before_anything_runs(
    http: httpx.AsyncClient, body: dict[str, Any], status: int
) -> None:
    response = await http.post("/workflows", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


# cancel -------------------------------------------------------------------------------------------


async def test_cancelled_queued_task_never_starts_even_on_a_later_worker(
    api: Service, http: httpx.AsyncClient, redis_client: redis.Redis, redis_url: str, session_dir: Path
) -> None:
    queue = f"nobody{uuid.uuid4().hex[:6]}"
    task_id = (await submit(http, "add", 1, 2, _options={"queue": queue}))["task_id"]
    response = await http.delete(f"/tasks/{task_id}")
    assert response.status_code == 202 and response.json()["revoked"] is True
    frames, code = await watch(api, task_id, timeout=10)
    assert code == 1000 and states(frames) == ["PENDING", "REVOKED"]
    late = start_worker(redis_url, session_dir, f"late-{queue}", "--concurrency", "1", "--queues", queue)
    try:
        for _ in range(200):  # the late worker drains the queue: it received and dropped the message
            if redis_client.llen(queue) == 0 and not redis_client.hlen("unacked"):
                break
            await asyncio.sleep(0.05)
        assert redis_client.llen(queue) == 0
        history = redis_client.zrange(f"{NAMESPACE}:task:{task_id}:history", 0, -1)
        assert [json.loads(raw)["state"] for raw in history] == ["PENDING", "REVOKED"]
    finally:
        late.stop()


async def test_cancelled_task_a_worker_holds_for_its_countdown_is_revoked_at_once(
    api: Service, http: httpx.AsyncClient, redis_url: str
) -> None:
    countdown = 120  # far beyond this test's timeout: REVOKED must not wait for it
    task_id = (await submit(http, "add", 1, 2, _options={"countdown": countdown}))["task_id"]
    async with websockets.connect(f"{api.ws_url}/ws/tasks/{task_id}") as socket:
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            while not frames or frames[-1]["state"] != "RECEIVED":  # a worker holds it until the countdown
                frames.append(json.loads(await socket.recv()))
            assert (await http.delete(f"/tasks/{task_id}")).status_code == 202
            frames.extend([json.loads(message) async for message in socket])
    assert states(frames) == ["PENDING", "RECEIVED", "REVOKED"]
    assert frames[-1]["error"] == {"type": "TaskRevokedError", "message": "revoked"}
    assert AsyncResult(task_id, app=plain_celery(redis_url)).state == "REVOKED"


async def test_running_task_is_terminated(api: Service, http: httpx.AsyncClient) -> None:
    task_id = (await submit(http, "sleep", 30))["task_id"]
    async with websockets.connect(f"{api.ws_url}/ws/tasks/{task_id}") as socket:
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(30):
            while not frames or frames[-1]["state"] != "STARTED":
                frames.append(json.loads(await socket.recv()))
            response = await http.delete(f"/tasks/{task_id}", params={"terminate": "true"})
            assert response.status_code == 202
            frames.extend([json.loads(message) async for message in socket])
    assert frames[-1]["state"] == "REVOKED"
    assert frames[-1]["error"] == {"type": "TaskRevokedError", "message": "terminated"}


# idempotency --------------------------------------------------------------------------------------


async def test_fifty_concurrent_duplicates_make_one_task(
    http: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    key = uuid.uuid4().hex
    responses = await asyncio.gather(
        *(http.post("/tasks/add", json={"args": [5, 5]}, headers={"Idempotency-Key": key}) for _ in range(50))
    )
    assert {response.status_code for response in responses} == {202}
    task_ids = {response.json()["task_id"] for response in responses}
    assert len(task_ids) == 1
    (task_id,) = task_ids
    history = redis_client.zrange(f"{NAMESPACE}:task:{task_id}:history", 0, 0)
    assert json.loads(history[0])["state"] == "PENDING"
    assert redis_client.hget(f"{NAMESPACE}:task:{task_id}", "seq") is not None


# beat ---------------------------------------------------------------------------------------------


async def test_beat_runs_the_schedule_and_its_tasks_emit_events(
    api: Service, http: httpx.AsyncClient, redis_url: str, session_dir: Path
) -> None:
    marker = f"beat-{uuid.uuid4().hex[:8]}"
    schedule = json.dumps({"tick": {"task": "echo", "every": 1, "args": [marker]}})
    listener = redis.Redis.from_url(redis_url).pubsub()
    listener.psubscribe(f"{NAMESPACE}:task:*")
    beat = spawn(
        ["beat", "--loglevel", "INFO", "--schedule", str(session_dir / f"{marker}.db")],
        svc_env(redis_url, SVC_SCHEDULE=schedule),
        session_dir / f"{marker}.log",
    )
    runs: dict[str, list[str]] = {}
    try:
        async with asyncio.timeout(30):
            while sum(1 for seen in runs.values() if "SUCCESS" in seen) < 2:
                message = listener.get_message(timeout=0.2)
                if message is None or message["type"] != "pmessage":
                    await asyncio.sleep(0)
                    continue
                event = json.loads(message["data"])
                if event["name"] == "echo" and event.get("result") in (None, marker):
                    runs.setdefault(event["task_id"], []).append(event["state"])
    finally:
        beat.terminate()
        beat.wait(timeout=20)
        listener.close()
    finished = [seen for seen in runs.values() if "SUCCESS" in seen]
    assert len(finished) >= 2
    # beat is an instrumented sender: its sends record PENDING before the message goes out
    assert all(seen[:3] == ["PENDING", "RECEIVED", "STARTED"] for seen in finished)


async def test_schedules_lists_entries_with_next_run(http: httpx.AsyncClient) -> None:
    response = await http.get("/schedules")
    assert response.status_code == 200
    entries = {entry["name"]: entry for entry in response.json()["schedules"]}
    report = entries["generate-report"]
    assert report["task"] == "generate_report_task" and report["cron"] == "0 8 * * *"
    assert report["next_run_at"].endswith("08:00:00+00:00")
