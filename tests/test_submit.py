"""SPEC "HTTP": submit, state, catalogue, and every bad input answered with problem details."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from svc.embedded import free_port, start_redis

from .conftest import (
    NAMESPACE,
    Service,
    both_ways_in,
    start_api,
    start_worker,
    submit,
    watch,
)

pytestmark = pytest.mark.timeout(60)
api = both_ways_in()  # every test here runs against `svc api` and the FastAPI app alone: they answer alike


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    assert "Traceback" not in response.text and "/svc/" not in response.text
    return dict(body)


async def test_submit_returns_the_spec_shape_and_records_pending(http: httpx.AsyncClient) -> None:
    body = await submit(http, "add", 2, 3)
    task_id = body["task_id"]
    uuid.UUID(task_id)
    assert body["name"] == "add" and body["state"] == "PENDING"
    assert body["status_url"] == f"/tasks/{task_id}" and body["ws_url"] == f"/ws/tasks/{task_id}"
    assert isinstance(body["token"], str) and body["token"]


async def test_state_endpoint_returns_latest_event(api: Service, http: httpx.AsyncClient) -> None:
    task_id = (await submit(http, "add", 20, 22))["task_id"]
    await watch(api, task_id)
    response = await http.get(f"/tasks/{task_id}")
    assert response.status_code == 200
    event = response.json()
    assert event["state"] == "SUCCESS" and event["result"] == 42 and event["task_id"] == task_id


async def test_catalogue_lists_every_spec_task_with_schema(http: httpx.AsyncClient) -> None:
    response = await http.get("/tasks")
    assert response.status_code == 200
    tasks = {task["name"]: task for task in response.json()["tasks"]}
    expected = {
        "send_email_task",
        "unstable_task",
        "fetch_data",
        "process_data",
        "save_data",
        "generate_report_task",
        "add",
        "echo",
        "sleep",
        "count_to",
        "fail",
    }
    assert expected <= set(tasks)
    assert tasks["add"]["schema"]["properties"]["x"]["type"] == "integer"
    assert tasks["add"]["description"]


async def test_unknown_task_name_is_404(http: httpx.AsyncClient) -> None:
    assert_problem(await http.post("/tasks/nope", json={}), 404)


async def test_celery_internal_tasks_are_not_exposed(http: httpx.AsyncClient) -> None:
    assert_problem(await http.post("/tasks/celery.backend_cleanup", json={}), 404)
    assert_problem(await http.post("/tasks/celery.chord_unlock", json={}), 404)


async def test_malformed_json_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/tasks/add", content=b'{"args": [1,', headers={"content-type": "application/json"}
    )
    assert_problem(response, 400)


@pytest.mark.parametrize(
    "body",
    [
        {"args": ["two", 3]},
        {"args": [1]},
        {"args": [1, 2, 3]},
        {"args": [1], "kwargs": {"x": 1}},
        {"kwargs": {"x": 1, "y": 2, "z": 3}},
        {"args": [1.5, 2]},
        {"args": {"x": 1}},
        {"args": [1, 2], "options": {"priority": 12}},
        {"args": [1, 2], "options": {"countdown": -1}},
        {"args": [1, 2], "options": {"queue": "bad queue!"}},
        {"args": [1, 2], "options": {"surprise": True}},
        {"args": [1, 2], "options": {"eta": "2030-01-01T00:00:00"}},
        {"args": [1, 2], "unknown_key": 1},
    ],
)
async def test_bad_arguments_and_options_are_422_and_enqueue_nothing(
    http: httpx.AsyncClient, redis_client: object, body: dict[str, object]
) -> None:
    import redis

    assert isinstance(redis_client, redis.Redis)
    before = redis_client.llen(NAMESPACE)
    problem = assert_problem(await http.post("/tasks/add", json=body), 422)
    assert problem["detail"]
    assert redis_client.llen(NAMESPACE) == before


@pytest.mark.parametrize(
    "raw",
    [
        b'{"args": [123456789012345678901234567890]}',
        b'{"args": [18446744073709551616]}',
        b'{"args": [1e400]}',
        b'{"args": [NaN]}',
        b'{"args": [{"list": [1, -Infinity]}]}',
    ],
    ids=["30-digits", "2**64", "1e400", "NaN", "nested-infinity"],
)
async def test_arguments_json_cannot_carry_exactly_are_422_and_enqueue_nothing(
    http: httpx.AsyncClient, redis_client: object, raw: bytes
) -> None:
    import redis

    assert isinstance(redis_client, redis.Redis)
    before = redis_client.llen(NAMESPACE)
    response = await http.post("/tasks/echo", content=raw, headers={"content-type": "application/json"})
    problem = assert_problem(response, 422)
    assert "JSON cannot carry exactly" in str(problem["detail"])
    assert redis_client.llen(NAMESPACE) == before
    step = raw.replace(b'{"args"', b'{"task": "echo", "args"')
    workflow = await http.post(
        "/workflows", content=b'{"chain": [' + step + b"]}", headers={"content-type": "application/json"}
    )
    assert_problem(workflow, 422)


async def test_schema_limits_are_enforced(http: httpx.AsyncClient) -> None:
    assert_problem(await http.post("/tasks/sleep", json={"args": [3601]}), 422)
    assert_problem(await http.post("/tasks/send_email_task", json={"args": ["not-an-email", "hi"]}), 422)


async def test_unknown_task_id_is_404(http: httpx.AsyncClient) -> None:
    assert_problem(await http.get(f"/tasks/{uuid.uuid4()}"), 404)
    assert_problem(await http.delete(f"/tasks/{uuid.uuid4()}"), 404)


async def test_oversized_body_is_413(http: httpx.AsyncClient) -> None:
    big = {"args": ["x" * 2_000_000]}
    assert_problem(await http.post("/tasks/echo", json=big), 413)


async def test_submit_answers_503_quickly_when_redis_is_unreachable(session_dir: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    api = start_api(dead, session_dir, name="api-dead-redis", SVC_REDIS_TIMEOUT="1")
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=15) as client:
            started = time.monotonic()
            response = await client.post("/tasks/add", json={"args": [1, 2]})
            assert_problem(response, 503)
            assert time.monotonic() - started < 10
            assert_problem(await client.get("/readyz"), 503)
            assert (await client.get("/healthz")).status_code == 200
    finally:
        api.stop()


async def test_idempotency_key_returns_the_first_task(http: httpx.AsyncClient) -> None:
    key = uuid.uuid4().hex
    first = await http.post("/tasks/add", json={"args": [1, 1]}, headers={"Idempotency-Key": key})
    # the same request, written differently (keywords for positions), is the same request
    second = await http.post(
        "/tasks/add", json={"kwargs": {"y": 1, "x": 1}}, headers={"Idempotency-Key": key}
    )
    assert first.status_code == second.status_code == 202
    assert first.json()["task_id"] == second.json()["task_id"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/tasks/add", {"args": [1, 2]}),
        ("/tasks/echo", {"args": [2]}),
        ("/tasks/add", {"args": [1, 1], "options": {"priority": 3}}),
    ],
    ids=["other-arguments", "other-task", "other-options"],
)
async def test_idempotency_key_reused_for_another_request_is_409(
    http: httpx.AsyncClient, path: str, body: dict[str, object]
) -> None:
    key = uuid.uuid4().hex
    first = await http.post("/tasks/add", json={"args": [1, 1]}, headers={"Idempotency-Key": key})
    assert first.status_code == 202
    problem = assert_problem(await http.post(path, json=body, headers={"Idempotency-Key": key}), 409)
    assert "Idempotency-Key" in str(problem["detail"])


@pytest.mark.parametrize(
    "failing",
    [
        {"args": [1, 2], "options": {"eta": "2030-01-01T00:00:00"}},  # a naive eta: refused late
        {"args": [123456789012345678901234567890, 1]},
    ],
    ids=["naive-eta", "30-digit-int"],
)
async def test_idempotency_key_of_a_refused_submit_enqueues_when_sent_again(
    api: Service, http: httpx.AsyncClient, failing: dict[str, object]
) -> None:
    key = uuid.uuid4().hex
    assert_problem(await http.post("/tasks/add", json=failing, headers={"Idempotency-Key": key}), 422)
    retried = await http.post("/tasks/add", json={"args": [2, 2]}, headers={"Idempotency-Key": key})
    assert retried.status_code == 202
    frames, code = await watch(api, retried.json()["task_id"])
    assert code == 1000 and frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == 4


async def test_readyz_reports_the_online_worker(http: httpx.AsyncClient) -> None:
    response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.json()["workers"]


async def test_readyz_refuses_a_redis_that_evicts_keys(session_dir: Path) -> None:
    server = start_redis(None, session_dir, "--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru")
    namespace = f"evict{uuid.uuid4().hex[:6]}"
    worker = start_worker(server.url, session_dir, f"w-{namespace}", SVC_NAMESPACE=namespace)
    api = start_api(server.url, session_dir, name=f"api-{namespace}", SVC_NAMESPACE=namespace)
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=15) as client:
            problem = assert_problem(await client.get("/readyz"), 503)
            assert "allkeys-lru" in str(problem["detail"]) and "noeviction" in str(problem["detail"])
            assert "event=redis_evicts_keys" in api.log.read_text()
            redis.Redis.from_url(server.url).config_set("maxmemory-policy", "noeviction")
            assert (await client.get("/readyz")).status_code == 200
    finally:
        api.stop()
        worker.stop()
        server.stop()
