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

from svc.wire import events

from .conftest import (
    NAMESPACE,
    Service,
    assert_in_order,
    both_ways_in,
    plain_celery,
    states,
    submit,
    subscribed,
    until,
    watch,
)

pytestmark = pytest.mark.timeout(60)
api = both_ways_in()  # every test here runs against `svc api` and the FastAPI app alone: they answer alike


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


async def subscribe_many(api: Service, subscriptions: list[tuple[str, int]], until_ids: set[str]) -> Any:
    """Frames of ``/ws`` for these (task id, since) pairs until each id in ``until_ids`` sent one that is
    terminal or marked recovered: false."""
    seen: dict[str, list[dict[str, Any]]] = {task_id: [] for task_id, _ in subscriptions}
    async with websockets.connect(f"{api.ws_url}/ws") as socket:
        for task_id, since in subscriptions:
            await socket.send(json.dumps({"op": "subscribe", "task_id": task_id, "since": since}))
        answered: set[str] = set()
        while not until_ids <= answered:
            frame = await receive_json(socket)
            seen[frame["task_id"]].append(frame)
            if frame.get("state") in ("SUCCESS", "FAILURE", "REVOKED") or frame.get("recovered") is False:
                answered.add(frame["task_id"])
    return seen


async def test_finished_task_whose_history_expired_gives_its_terminal_event_at_once(
    api: Service, http: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    task_id = (await submit(http, "add", 5, 6))["task_id"]
    await watch(api, task_id)
    redis_client.delete(events.history_key(NAMESPACE, task_id), events.task_key(NAMESPACE, task_id))
    frames, code = await watch(api, task_id, since=0, timeout=10)
    assert code == 1000
    assert len(frames) == 1 and frames[0]["state"] == "SUCCESS" and frames[0]["result"] == 11
    assert frames[0]["recovered"] is False
    seen = await subscribe_many(api, [(task_id, 0)], {task_id})
    assert [frame["result"] for frame in seen[task_id]] == [11]


async def test_corrupt_history_entry_is_skipped_and_the_socket_lives_on(
    api: Service, http: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    broken = (await submit(http, "count_to", 2, delay=0.01))["task_id"]
    healthy = (await submit(http, "count_to", 2, delay=0.2))["task_id"]
    expected, _ = await watch(api, broken)
    redis_client.zadd(events.history_key(NAMESPACE, broken), {b"\xff not an event {": 2.5})
    frames, code = await watch(api, broken, timeout=10)
    assert code == 1000 and frames == expected
    seen = await subscribe_many(api, [(broken, 0), (healthy, 0)], {broken, healthy})
    assert seen[broken] == expected
    assert seen[healthy][-1]["state"] == "SUCCESS" and seen[healthy][-1]["result"] == 2


async def test_task_nothing_knows_any_more_is_reported_lost_instead_of_silence(
    api: Service, http: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    queue = f"nobody{uuid.uuid4().hex[:6]}"  # no worker: the task stays queued
    task_id = (await submit(http, "add", 1, 2, _options={"queue": queue}))["task_id"]
    async with websockets.connect(f"{api.ws_url}/ws/tasks/{task_id}") as socket:
        pending = await receive_json(socket)
        assert pending["state"] == "PENDING"
        # As a Redis restarted without its data: the task's record and its message are gone.
        redis_client.delete(events.history_key(NAMESPACE, task_id), events.task_key(NAMESPACE, task_id))
        redis_client.delete(queue)
        redis_client.client_kill_filter(_type="pubsub")  # the API's bridge reconnects and catches up
        lost = await receive_json(socket, timeout=30)
    assert lost["task_id"] == task_id and lost["recovered"] is False and lost["lost"] is True
    assert lost["state"] == "PENDING" and lost["seq"] == 0
    seen = await subscribe_many(api, [(task_id, 1)], {task_id})
    assert seen[task_id][0]["lost"] is True


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
        ('{"op": "subscribe", "task_id": "abc", "since": 9007199254740992}', "since"),
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


@pytest.mark.parametrize(
    "query",
    ["since=-1", "since=abc", "since=" + "9" * 5000, "since=%C2%B2", "since=1.5", "since=9007199254740992"],
    ids=["negative", "letters", "5000-digits", "unicode-digit", "fraction", "2**53"],
)
async def test_bad_since_in_the_url_is_refused_with_1008(api: Service, query: str) -> None:
    async with websockets.connect(f"{api.ws_url}/ws/tasks/{uuid.uuid4()}?{query}") as socket:
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                await socket.recv()
    assert socket.close_code == 1008 and socket.close_reason == "since must be a non-negative integer"


async def test_malformed_task_id_in_the_url_is_refused_with_1008(api: Service) -> None:
    async with websockets.connect(f"{api.ws_url}/ws/tasks/a%20b%3Cc") as socket:
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                await socket.recv()
    assert socket.close_code == 1008


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
