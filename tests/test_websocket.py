"""SPEC "WebSocket": both endpoints, since, late and early subscribers, recovery, errors and close codes."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
import redis
import websockets
from websockets.exceptions import ConnectionClosed

from svc import events

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

pytestmark = pytest.mark.timeout(60)


async def test_late_subscriber_gets_history_and_terminal_at_once(
    api: Service, http: httpx.AsyncClient
) -> None:
    task_id = (await submit(http, "add", 1, 1))["task_id"]
    await watch(api, task_id)
    frames, code = await watch(api, task_id, timeout=5)
    assert code == 1000
    assert states(frames) == ["PENDING", "RECEIVED", "STARTED", "SUCCESS"]


async def test_since_skips_what_the_client_already_has(api: Service, http: httpx.AsyncClient) -> None:
    task_id = (await submit(http, "count_to", 3, delay=0.01))["task_id"]
    everything, _ = await watch(api, task_id)
    rest, code = await watch(api, task_id, since=3)
    assert code == 1000
    assert rest == everything[3:]


async def test_subscriber_before_the_task_exists_gets_every_event(
    api: Service, redis_url: str, redis_client: redis.Redis
) -> None:
    task_id = str(uuid.uuid4())
    watching = asyncio.create_task(watch(api, task_id))
    await until(lambda: subscribed(redis_client, task_id))
    plain_celery(redis_url).send_task(
        "count_to", kwargs={"n": 2, "delay": 0.01}, task_id=task_id, ignore_result=True
    )
    frames, _ = await watching
    assert states(frames) == ["RECEIVED", "STARTED", "PROGRESS", "PROGRESS", "SUCCESS"]


async def test_lost_history_is_reported_as_not_recovered(
    api: Service, http: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    task_id = (await submit(http, "count_to", 4, delay=0.01))["task_id"]
    everything, _ = await watch(api, task_id)
    redis_client.zremrangebyscore(events.history_key(NAMESPACE, task_id), 0, 5)  # as if capped/expired
    frames, code = await watch(api, task_id, since=2)
    assert code == 1000
    assert len(frames) == 1
    assert frames[0]["recovered"] is False and frames[0]["state"] == "SUCCESS"
    assert frames[0]["seq"] == everything[-1]["seq"]


async def test_expired_history_falls_back_to_the_stored_result(
    api: Service, http: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    task_id = (await submit(http, "add", 3, 4))["task_id"]
    await watch(api, task_id)
    redis_client.delete(events.history_key(NAMESPACE, task_id), events.task_key(NAMESPACE, task_id))
    frames, code = await watch(api, task_id, since=3)
    assert code == 1000
    assert frames == [frames[0]] and frames[0]["recovered"] is False
    assert frames[0]["state"] == "SUCCESS" and frames[0]["result"] == 7
    assert (await http.get(f"/tasks/{task_id}")).json()["result"] == 7


async def test_history_lost_mid_run_marks_the_next_live_event_not_recovered(
    api: Service, http: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    task_id = (await submit(http, "count_to", 40, delay=0.05))["task_id"]
    async with websockets.connect(f"{api.ws_url}/ws/tasks/{task_id}") as socket:
        seen = 0
        while seen < 5:
            seen = (await receive_json(socket))["seq"]
    # As a Redis that kept no data: the task's counter starts again at 1 and nothing is stored yet.
    redis_client.delete(events.history_key(NAMESPACE, task_id), events.task_key(NAMESPACE, task_id))
    frames, code = await watch(api, task_id, since=seen)
    assert code == 1000
    assert frames[0]["recovered"] is False and frames[0]["seq"] < seen  # kept although its seq is low
    assert all("recovered" not in frame for frame in frames[1:])
    assert_in_order(frames[1:])
    assert frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == 40


async def receive_json(socket: Any, timeout: float = 10) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        frame: dict[str, Any] = json.loads(await socket.recv())
        return frame


async def test_multiplexed_socket_carries_many_tasks(api: Service, http: httpx.AsyncClient) -> None:
    bodies = [await submit(http, "count_to", 2, delay=0.05) for _ in range(5)]
    seen: dict[str, list[dict[str, Any]]] = {body["task_id"]: [] for body in bodies}
    async with websockets.connect(f"{api.ws_url}/ws") as socket:
        for body in bodies:
            await socket.send(
                json.dumps({"op": "subscribe", "task_id": body["task_id"], "token": body["token"]})
            )
        while not all(frames and frames[-1]["state"] == "SUCCESS" for frames in seen.values()):
            frame = await receive_json(socket)
            seen[frame["task_id"]].append(frame)
    for frames in seen.values():
        assert_in_order(frames)
        assert states(frames)[-2:] == ["PROGRESS", "SUCCESS"]


async def test_unsubscribe_stops_delivery(api: Service, http: httpx.AsyncClient) -> None:
    slow = await submit(http, "count_to", 30, delay=0.05)
    quick = await submit(http, "count_to", 3, delay=0.2)
    async with websockets.connect(f"{api.ws_url}/ws") as socket:
        await socket.send(json.dumps({"op": "subscribe", "task_id": slow["task_id"]}))
        first = await receive_json(socket)
        assert first["task_id"] == slow["task_id"]
        await socket.send(json.dumps({"op": "unsubscribe", "task_id": slow["task_id"]}))
        await socket.send(json.dumps({"op": "subscribe", "task_id": quick["task_id"]}))
        # Frames of `slow` already in flight may still arrive; none may after `quick` starts arriving.
        frame = await receive_json(socket)
        while frame["task_id"] == slow["task_id"]:
            frame = await receive_json(socket)
        while frame["state"] != "SUCCESS":
            frame = await receive_json(socket)
            assert frame["task_id"] == quick["task_id"]


@pytest.mark.parametrize(
    ("frame", "detail"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"op": "subscribe"}', "task_id"),
        ('{"op": "subscribe", "task_id": "a b"}', "task_id"),
        ('{"op": "dance", "task_id": "abc"}', "op must be"),
        ('{"op": "subscribe", "task_id": "abc", "since": -1}', "since"),
        ('{"op": "subscribe", "task_id": "abc", "since": "3"}', "since"),
    ],
)
async def test_malformed_frames_get_an_error_frame_and_the_socket_lives_on(
    api: Service, http: httpx.AsyncClient, frame: str, detail: str
) -> None:
    body = await submit(http, "add", 2, 2)
    async with websockets.connect(f"{api.ws_url}/ws") as socket:
        await socket.send(frame)
        error = await receive_json(socket)
        assert error["op"] == "error" and detail in error["detail"]
        await socket.send(json.dumps({"op": "subscribe", "task_id": body["task_id"]}))
        while (event := await receive_json(socket))["state"] != "SUCCESS":
            pass
        assert event["result"] == 4


async def test_oversized_frame_closes_with_1009(api: Service) -> None:
    async with websockets.connect(f"{api.ws_url}/ws", max_size=None) as socket:
        await socket.send("x" * 70_000)
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                await socket.recv()
    assert socket.close_code == 1009


async def test_foreign_browser_origin_is_refused_with_1008(api: Service) -> None:
    headers = {"Origin": "http://evil.example"}
    async with websockets.connect(f"{api.ws_url}/ws", additional_headers=headers) as socket:
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                await socket.recv()
    assert socket.close_code == 1008


async def test_same_origin_page_is_accepted(api: Service, http: httpx.AsyncClient) -> None:
    task_id = (await submit(http, "add", 1, 2))["task_id"]
    headers = {"Origin": api.base_url}
    async with websockets.connect(f"{api.ws_url}/ws/tasks/{task_id}", additional_headers=headers) as socket:
        async with asyncio.timeout(10):
            frames = [json.loads(message) async for message in socket]
    assert frames[-1]["result"] == 3
