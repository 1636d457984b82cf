"""Faults survived with nothing lost, against real processes (issue: reliability at scale)."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets
from websockets.exceptions import ConnectionClosed

from svc.embedded import free_port

from .conftest import (
    Service,
    assert_in_order,
    start_api,
    start_worker,
    states,
    submit,
    watch,
)


async def read_until(socket: Any, predicate: Any, frames: list[dict[str, Any]]) -> None:
    """Append frames from ``socket`` until one satisfies ``predicate``."""
    while True:
        frames.append(json.loads(await socket.recv()))
        if predicate(frames[-1]):
            return


@pytest.mark.timeout(60)
async def test_sigterm_to_the_api_closes_sockets_with_1001(
    redis_url: str, session_dir: Path, worker: Service
) -> None:
    api = start_api(redis_url, session_dir, name="api-sigterm")
    try:
        async with websockets.connect(f"{api.ws_url}/ws/tasks/{uuid.uuid4()}") as socket:
            api.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(20):
                    await socket.recv()
        assert socket.close_code == 1001
        # uvicorn re-raises the signal it caught once its shutdown is complete
        assert api.process.wait(timeout=20) in (0, -signal.SIGTERM)
    finally:
        api.stop()


@pytest.mark.timeout(60)
async def test_sigterm_to_a_worker_finishes_its_running_task(
    api: Service, http: httpx.AsyncClient, redis_url: str, session_dir: Path
) -> None:
    queue = f"warm{uuid.uuid4().hex[:6]}"
    own = start_worker(redis_url, session_dir, f"warm-{queue}", "--concurrency", "1", "--queues", queue)
    try:
        task_id = (await submit(http, "count_to", 10, delay=0.15, _options={"queue": queue}))["task_id"]
        frames: list[dict[str, Any]] = []
        async with websockets.connect(f"{api.ws_url}/ws/tasks/{task_id}") as socket:
            async with asyncio.timeout(30):
                await read_until(socket, lambda frame: frame["state"] == "STARTED", frames)
                own.process.send_signal(signal.SIGTERM)  # warm shutdown
                frames.extend([json.loads(message) async for message in socket])
        assert frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == 10
        assert own.process.wait(timeout=30) == 0
    finally:
        own.stop()


@pytest.mark.timeout(90)
async def test_client_resumes_with_since_after_the_api_is_killed_and_restarted(
    redis_url: str, session_dir: Path, worker: Service
) -> None:
    port = free_port()
    api = start_api(redis_url, session_dir, name="api-killed", port=port)
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            task_id = (await submit(http, "count_to", 20, delay=0.1))["task_id"]
        frames: list[dict[str, Any]] = []
        async with websockets.connect(f"{api.ws_url}/ws/tasks/{task_id}") as socket:
            async with asyncio.timeout(30):
                await read_until(socket, lambda frame: frame["state"] == "PROGRESS", frames)
            api.stop(signal.SIGKILL)
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:
                        frames.append(json.loads(await socket.recv()))
        api = start_api(redis_url, session_dir, name="api-killed-again", port=port)
        rest, code = await watch(api, task_id, since=frames[-1]["seq"])
        assert code == 1000
        everything = frames + rest
        assert [frame["seq"] for frame in everything] == list(range(1, len(everything) + 1))
        assert states(everything).count("PROGRESS") == 20 and everything[-1]["state"] == "SUCCESS"
    finally:
        api.stop()


@pytest.mark.timeout(120)
async def test_two_apis_and_two_workers_share_every_event_once(
    api: Service, worker: Service, redis_url: str, session_dir: Path
) -> None:
    second_api = start_api(redis_url, session_dir, name="api-second")
    second_worker = start_worker(redis_url, session_dir, "worker-second", "--concurrency", "2")
    apis = [api, second_api]
    try:
        bodies = []
        for n in range(40):
            async with httpx.AsyncClient(base_url=apis[n % 2].base_url, timeout=10) as http:
                bodies.append(await submit(http, "count_to", 3, delay=0.01))
        # each task watched on the API that did NOT submit it, and on the one that did
        results = await asyncio.gather(
            *(watch(apis[(n + 1) % 2], body["task_id"], timeout=60) for n, body in enumerate(bodies)),
            *(watch(apis[n % 2], body["task_id"], timeout=60) for n, body in enumerate(bodies)),
        )
        workers_seen = set()
        for frames, code in results:
            assert code == 1000
            assert_in_order(frames)
            assert [frame["seq"] for frame in frames] == list(range(1, len(frames) + 1))
            assert frames[-1]["result"] == 3
            workers_seen.add(frames[-1]["worker"].split("-")[0])
        assert results[: len(bodies)] == results[len(bodies) :]  # both APIs told the same story
    finally:
        second_worker.stop()
        second_api.stop()


@pytest.mark.timeout(120)
async def test_worker_killed_mid_task_its_task_runs_again_elsewhere(
    api: Service, http: httpx.AsyncClient, redis_url: str, session_dir: Path, redis_client: redis.Redis
) -> None:
    queue = f"kill{uuid.uuid4().hex[:6]}"
    short = {"SVC_VISIBILITY_TIMEOUT": "5"}
    doomed = start_worker(
        redis_url, session_dir, f"doomed-{queue}", "--concurrency", "1", "--queues", queue, **short
    )
    task_id = (await submit(http, "count_to", 8, delay=0.1, _options={"queue": queue}))["task_id"]
    frames: list[dict[str, Any]] = []
    async with websockets.connect(f"{api.ws_url}/ws/tasks/{task_id}") as socket:
        async with asyncio.timeout(20):
            await read_until(socket, lambda frame: frame["state"] == "PROGRESS", frames)
        doomed.stop(signal.SIGKILL)  # the whole process group: the main process and its pool child
        rescuer = start_worker(
            redis_url, session_dir, f"rescuer-{queue}", "--concurrency", "1", "--queues", queue, **short
        )
        try:
            async with asyncio.timeout(60):
                frames.extend([json.loads(message) async for message in socket])
        finally:
            rescuer.stop()
    assert_in_order(frames)
    assert states(frames).count("STARTED") == 2  # the run after the loss is shown, not hidden
    assert frames[-1]["state"] == "SUCCESS" and frames[-1]["worker"].startswith("rescuer-")
