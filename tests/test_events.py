"""SPEC "The event": every lifecycle step from the worker, numbered, stored, and agreeing with the backend."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
import redis
from celery.result import AsyncResult

from svc.keyspace import Layout
from svc.wire import events

from .conftest import (
    NAMESPACE,
    Service,
    assert_in_order,
    plain_celery,
    states,
    submit,
    subscribed,
    until,
    watch,
)

pytestmark = pytest.mark.timeout(90)


async def test_lifecycle_and_progress_arrive_in_order(api: Service, http: httpx.AsyncClient) -> None:
    task_id = (await submit(http, "count_to", 5, delay=0.02))["task_id"]
    frames, code = await watch(api, task_id)
    assert code == 1000
    assert_in_order(frames)
    assert [frame["seq"] for frame in frames] == list(range(1, len(frames) + 1))
    assert states(frames) == ["PENDING", "RECEIVED", "STARTED", *["PROGRESS"] * 5, "SUCCESS"]
    progress = [frame["progress"] for frame in frames if frame["state"] == "PROGRESS"]
    assert [item["current"] for item in progress] == [1, 2, 3, 4, 5]
    assert all(item["total"] == 5 for item in progress)
    assert frames[-1]["result"] == 5 and frames[-1]["worker"].startswith("worker-")
    expected = {"task_id", "name", "seq", "state", "ts", "result", "error", "progress", "retries", "worker"}
    assert all(expected <= set(frame) for frame in frames)


async def test_failure_has_type_and_message_and_no_traceback(
    api: Service, http: httpx.AsyncClient, redis_url: str
) -> None:
    task_id = (await submit(http, "fail", "boom at step 3"))["task_id"]
    frames, code = await watch(api, task_id)
    assert code == 1000
    assert frames[-1]["state"] == "FAILURE"
    assert frames[-1]["error"] == {"type": "ValueError", "message": "boom at step 3"}
    assert "Traceback" not in str(frames)
    result = AsyncResult(task_id, app=plain_celery(redis_url))
    assert result.state == "FAILURE"


async def test_terminal_event_comes_after_the_result_is_stored(
    api: Service, http: httpx.AsyncClient, redis_url: str
) -> None:
    celery = plain_celery(redis_url)
    task_ids = [(await submit(http, "add", n, n))["task_id"] for n in range(20)]
    for n, task_id in enumerate(task_ids):
        frames, _ = await watch(api, task_id)
        assert frames[-1]["state"] == "SUCCESS"
        stored = celery.backend.get_task_meta(task_id)
        assert stored["status"] == "SUCCESS" and stored["result"] == 2 * n


async def test_send_task_from_plain_celery_is_watched(
    api: Service, redis_url: str, redis_client: redis.Redis
) -> None:
    celery = plain_celery(redis_url)
    task_id = str(uuid.uuid4())
    watching = asyncio.create_task(watch(api, task_id))
    await until(lambda: subscribed(redis_client, task_id))  # watching before the task exists
    celery.send_task("add", args=[40, 2], task_id=task_id)
    frames, code = await watching
    assert code == 1000
    assert_in_order(frames)
    assert states(frames)[0] == "RECEIVED" and frames[0]["seq"] == 1
    assert frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == 42


async def test_unknown_task_at_the_worker_fails_instead_of_hanging(api: Service, redis_url: str) -> None:
    celery = plain_celery(redis_url)
    task_id = str(uuid.uuid4())
    celery.send_task("not.a.real.task", task_id=task_id)
    frames, _ = await watch(api, task_id)
    assert frames[-1]["state"] == "FAILURE" and frames[-1]["error"]["type"] == "NotRegistered"


async def test_a_result_json_cannot_carry_still_ends_in_a_marked_success(
    api: Service, http: httpx.AsyncClient, redis_url: str
) -> None:
    task_id = (await submit(http, "add", 2**64 - 1, 1))["task_id"]  # 2**64: past every 64-bit integer
    frames, code = await watch(api, task_id)
    assert code == 1000
    assert frames[-1]["state"] == "SUCCESS"
    assert frames[-1]["result"] is None and frames[-1]["result_repr"] == str(2**64)
    assert AsyncResult(task_id, app=plain_celery(redis_url)).get(timeout=10) == 2**64
    latest = (await http.get(f"/tasks/{task_id}")).json()
    assert latest["state"] == "SUCCESS" and latest["result_repr"] == str(2**64)


@pytest.mark.parametrize(
    "value",
    [2**64, -(2**70), "a lone \ud800 surrogate", float("nan"), [1.5, float("inf")], {"deep": [2**65]}],
    ids=["u64+1", "-2**70", "surrogate", "nan", "inf-in-list", "nested"],
)
async def test_values_a_plain_celery_client_sends_that_json_cannot_carry_end_in_a_marked_success(
    api: Service, redis_url: str, redis_client: redis.Redis, value: object
) -> None:
    celery = plain_celery(redis_url)
    task_id = str(uuid.uuid4())
    watching = asyncio.create_task(watch(api, task_id))
    await until(lambda: subscribed(redis_client, task_id))
    celery.send_task("echo", args=[value], task_id=task_id)
    frames, code = await watching
    assert code == 1000
    assert_in_order(frames)
    assert frames[-1]["state"] == "SUCCESS"
    assert frames[-1]["result"] is None and frames[-1]["result_repr"] == repr(value)


async def test_seq_is_strictly_increasing_under_200_concurrent_tasks(
    api: Service, http: httpx.AsyncClient
) -> None:
    task_ids = await asyncio.gather(*(submit(http, "count_to", 3, delay=0.001) for _ in range(200)))
    results = await asyncio.gather(*(watch(api, body["task_id"], timeout=60) for body in task_ids))
    for frames, code in results:
        assert code == 1000
        assert_in_order(frames)
        assert [frame["seq"] for frame in frames] == list(range(1, len(frames) + 1))
        assert frames[-1]["result"] == 3


def test_publish_script_caps_expires_and_never_reopens_a_finished_task(redis_client: redis.Redis) -> None:
    script = redis_client.register_script(events.PUBLISH_SCRIPT)
    task_id = str(uuid.uuid4())

    def publish(state: str) -> int:
        body = events.encode_body(task_id, "add", state)
        keys, args = events.publish_args(Layout(NAMESPACE), task_id, state, body, 3, 60)
        return int(script(keys=keys, args=args)[0])

    assert [publish("PROGRESS") for _ in range(5)] == [1, 2, 3, 4, 5]
    history = events.history_key(NAMESPACE, task_id)
    assert redis_client.zcard(history) == 3
    assert [events.parse(raw)["seq"] for raw in redis_client.zrange(history, 0, -1)] == [3, 4, 5]
    assert (
        0 < redis_client.ttl(history) <= 60
        and 0 < redis_client.ttl(events.task_key(NAMESPACE, task_id)) <= 60
    )
    assert publish("SUCCESS") == 6
    assert publish("SUCCESS") == 0 and publish("STARTED") == 0
    assert redis_client.zcard(history) == 3
