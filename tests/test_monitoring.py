"""Monitoring against real processes: /metrics, the dashboard's feed, worker health, history and retry."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from .conftest import NAMESPACE, Service, start_api, start_worker, submit, watch

pytestmark = pytest.mark.timeout(90)


def samples(text: str) -> dict[str, float]:
    """Prometheus text exposition → {"name{labels}": value}."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


async def scrape(http: httpx.AsyncClient) -> dict[str, float]:
    response = await http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def moved(after: dict[str, float], key: str, before: dict[str, float]) -> float:
    """How far one sample moved between two scrapes."""
    return after.get(key, 0.0) - before.get(key, 0.0)


async def scrape_until(
    http: httpx.AsyncClient, condition: Callable[[dict[str, float]], bool], timeout: float = 10
) -> dict[str, float]:
    """Scrape until ``condition`` holds: the monitor folds events in as they arrive from Redis."""
    async with asyncio.timeout(timeout):
        while not condition(metrics := await scrape(http)):  # noqa: ASYNC110 - state in another process
            await asyncio.sleep(0.05)
    return metrics


async def test_metrics_counters_move_with_submits_events_and_sockets(
    api: Service, http: httpx.AsyncClient
) -> None:
    before = await scrape(http)
    body = await submit(http, "count_to", 3, delay=0.01)
    assert (await http.post("/tasks/add", json={"args": ["x", 1]})).status_code == 422
    frames, _ = await watch(api, body["task_id"])
    assert frames[-1]["state"] == "SUCCESS"

    def moved(after: dict[str, float], key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    after = await scrape_until(
        http,
        lambda now: (
            moved(now, 'svc_tasks_finished_total{state="SUCCESS",task="count_to"}') >= 1
            and any(key.startswith("svc_worker_online{") and value == 1 for key, value in now.items())
        ),
    )
    assert moved(after, 'svc_submits_total{outcome="accepted",task="count_to"}') == 1
    assert moved(after, 'svc_submits_total{outcome="invalid",task="add"}') == 1
    assert moved(after, 'svc_events_published_total{state="PROGRESS"}') >= 3
    assert moved(after, "svc_events_routed_total") >= 1
    assert moved(after, "svc_events_delivered_total") >= len(frames)
    assert moved(after, 'svc_task_runtime_seconds_count{task="count_to"}') >= 1
    assert f'svc_queue_depth{{queue="{NAMESPACE}"}}' in after
    async with websockets.connect(f"{api.ws_url}/ws") as _:
        during = await scrape(http)
        assert during["svc_websocket_connections"] >= 1


async def next_frame(socket: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        frame: dict[str, Any] = json.loads(await socket.recv())
        return frame


async def test_dashboard_feed_pushes_snapshot_then_batched_changes(
    api: Service, http: httpx.AsyncClient
) -> None:
    async with websockets.connect(f"{api.ws_url}/ws/dashboard", max_size=None) as socket:
        snapshot = await next_frame(socket)
        assert snapshot["op"] == "snapshot"
        assert {"tasks", "workers", "rates", "queues", "now"} <= set(snapshot)
        assert any(worker["online"] for worker in snapshot["workers"])
        body = await submit(http, "count_to", 5, delay=0.05)
        rows: dict[str, dict[str, Any]] = {}
        seen_states: list[str] = []
        while rows.get(body["task_id"], {}).get("state") != "SUCCESS":
            update = await next_frame(socket)
            assert update["op"] == "update"
            for row in update["tasks"]:
                rows[row["id"]] = row
                if row["id"] == body["task_id"]:
                    seen_states.append(row["state"])
    row = rows[body["task_id"]]
    assert row["name"] == "count_to" and row["args"] and "'n': 5" in row["args"]
    assert row["result"] == "5" and row["runtime"] is not None and row["runtime"] >= 0.2
    assert row["started"] is not None and row["submitted"] <= row["started"] <= row["ended"]
    assert len(seen_states) < 9  # batched: fewer frames than the task's 9 events
    rates = update["rates"]["count_to"]
    assert sum(rates["per_minute"]["SUCCESS"]) >= 1 and rates["p50"] is not None


async def test_dashboard_sees_a_killed_worker_go_offline_within_two_heartbeats(
    api: Service, redis_url: str, session_dir: Path
) -> None:
    doomed = start_worker(redis_url, session_dir, "doomed", "-Q", "doomed-only")  # takes no shared task
    try:
        async with websockets.connect(f"{api.ws_url}/ws/dashboard", max_size=None) as socket:

            async def status_of_doomed() -> tuple[bool | None, dict[str, Any]]:
                frame = await next_frame(socket)
                for worker in frame["workers"]:
                    if worker["hostname"] == doomed.hostname:  # not an earlier test's doomed worker
                        return bool(worker["online"]), {**worker, "now": frame["now"]}
                return None, frame

            async with asyncio.timeout(30):  # its first heartbeat
                while (await status_of_doomed())[0] is not True:
                    pass
            doomed.stop(signal.SIGKILL)
            killed = time.monotonic()
            async with asyncio.timeout(30):
                while (status := await status_of_doomed())[0] is not False:
                    pass
            elapsed = time.monotonic() - killed
    finally:
        doomed.stop(signal.SIGKILL)
    print(f"killed worker shown offline after {elapsed:.1f} s")
    worker = status[1]
    # Offline because two heartbeat intervals passed without one, not sooner (bounded above by the
    # timeout only: how late a loaded machine notices is a figure for the benchmarks, not a test).
    assert worker["now"] - worker["last_heartbeat"] >= 2 * 2.0


async def test_dashboard_needs_the_api_key_when_auth_is_on(secure_api: Service) -> None:
    async with websockets.connect(f"{secure_api.ws_url}/ws/dashboard") as socket:
        await socket.send(json.dumps({"op": "auth", "key": "wrong"}))
        with pytest.raises(websockets.ConnectionClosed):
            await next_frame(socket)
    assert socket.close_code == 1008
    async with websockets.connect(f"{secure_api.ws_url}/ws/dashboard") as socket:
        await socket.send(json.dumps({"op": "auth", "key": "dash-key"}))
        assert (await next_frame(socket))["op"] == "snapshot"
    async with httpx.AsyncClient(base_url=secure_api.base_url) as http:
        assert (await http.get("/metrics")).status_code == 401
        response = await http.get("/metrics", headers={"authorization": "Bearer dash-key"})
        assert response.status_code == 200


@pytest.fixture(scope="module")
def secure_api(redis_url: str, session_dir: Path, worker: Service) -> Iterator[Service]:
    service = start_api(
        redis_url, session_dir, name="api-dash-secure", SVC_API_KEYS="dash-key", SVC_SECRET_KEY="s" * 32
    )
    yield service
    service.stop()


async def test_history_endpoint_and_retry_of_a_failed_task(api: Service, http: httpx.AsyncClient) -> None:
    body = await submit(http, "fail", "boom")
    frames, _ = await watch(api, body["task_id"])
    assert frames[-1]["state"] == "FAILURE"
    history = (await http.get(f"/tasks/{body['task_id']}/events")).json()
    assert [event["seq"] for event in history] == [frame["seq"] for frame in frames]
    retried = await http.post(f"/tasks/{body['task_id']}/retry")
    assert retried.status_code == 202, retried.text
    again = retried.json()
    assert again["retry_of"] == body["task_id"] and again["task_id"] != body["task_id"]
    frames, _ = await watch(api, again["task_id"])
    assert frames[-1]["state"] == "FAILURE" and frames[-1]["error"]["message"] == "boom"
    running = await submit(http, "sleep", 5)
    async with websockets.connect(f"{api.ws_url}/ws/tasks/{running['task_id']}") as socket:
        while (await next_frame(socket))["state"] != "STARTED":
            pass
        conflict = await http.post(f"/tasks/{running['task_id']}/retry")  # it still runs
        assert conflict.status_code == 409, conflict.text
        assert conflict.headers["content-type"].startswith("application/problem+json")
        assert (await http.delete(f"/tasks/{running['task_id']}?terminate=true")).status_code == 202
    assert (await http.get("/tasks/no-such-task/events")).status_code == 404


async def test_malformed_event_on_a_task_channel_leaves_the_monitor_live(
    api: Service, http: httpx.AsyncClient, redis_client: Any
) -> None:
    before = await scrape(http)
    channel = f"{NAMESPACE}:task:{uuid.uuid4()}"
    for junk in (
        b'{"task_id": "x", "state": "SUCCESS", "seq": 1, "ts": "not a number"}',
        b'{"task_id": "x", "state": "SUCCESS", "seq": "two", "ts": 1}',
        b"[1, 2, 3]",
        b"\xff\xfe",
    ):
        redis_client.publish(channel, junk)
    await scrape_until(http, lambda now: moved(now, "svc_events_malformed_total", before) >= 4)
    task_id = (await submit(http, "add", 1, 2))["task_id"]
    await watch(api, task_id)
    after = await scrape_until(
        http, lambda now: moved(now, 'svc_tasks_finished_total{state="SUCCESS",task="add"}', before) >= 1
    )
    assert moved(after, 'svc_events_published_total{state="SUCCESS"}', before) >= 1
    assert moved(after, "svc_monitor_reconnects_total", before) == 0


@pytest.mark.timeout(60)
async def test_an_idle_api_keeps_its_subscriptions_open(redis_url: str, session_dir: Path) -> None:
    namespace = f"idle{uuid.uuid4().hex[:6]}"  # a namespace of its own: nothing is published in it
    api = start_api(redis_url, session_dir, name=f"api-{namespace}", SVC_NAMESPACE=namespace)
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            # Longer than redis-py's default 5 s socket timeout and than the monitor's idle PING: an idle
            # connection is asked to answer, not dropped and reopened.
            await asyncio.sleep(12)
            metrics = await scrape(http)
        assert metrics["svc_monitor_reconnects_total"] == 0
        assert metrics["svc_bridge_reconnects_total"] == 0
        assert "disconnected" not in api.log.read_text()
    finally:
        api.stop()
