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

from svc.embedded import free_port, start_redis

from .conftest import (
    Service,
    assert_in_order,
    start_api,
    start_worker,
    states,
    submit,
    until,
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


def count_keys(client: redis.Redis, namespace: str) -> int:
    return sum(1 for _ in client.scan_iter(match=f"{namespace}:task:*", count=1000))


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_histories_expire_and_redis_memory_falls_back(session_dir: Path) -> None:
    server = start_redis(None, session_dir)  # its own server: no other worker may take these tasks
    redis_url, redis_client = server.url, redis.Redis.from_url(server.url)
    namespace = f"ttl{uuid.uuid4().hex[:6]}"
    ttl = 20
    env = {"SVC_NAMESPACE": namespace, "SVC_HISTORY_TTL": str(ttl)}
    own_worker = start_worker(redis_url, session_dir, f"ttl-{namespace}", "--concurrency", "4", **env)
    api = start_api(redis_url, session_dir, name=f"api-{namespace}", **env)
    try:
        baseline = count_keys(redis_client, namespace)
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
            task_ids: list[str] = []
            for _ in range(50):
                batch = await asyncio.gather(*(submit(http, "add", 1, 1) for _ in range(100)))
                task_ids.extend(body["task_id"] for body in batch)
        frames, _ = await watch(api, task_ids[-1], timeout=120)  # the queue is FIFO: the rest are done
        assert frames[-1]["state"] == "SUCCESS"
        peak_memory = int(redis_client.info("memory")["used_memory"])
        # Every key a task left is set to expire within the TTL of its last event (none kept for ever),
        # whether or not the slowest machine has already seen some of them go.
        last = task_ids[-1]
        for key in (f"{namespace}:task:{last}", f"{namespace}:task:{last}:history"):
            assert 0 < redis_client.ttl(key) <= ttl
        await until(
            lambda: count_keys(redis_client, namespace) <= baseline, timeout=120, what="histories expired"
        )
        after_memory = int(redis_client.info("memory")["used_memory"])
        print(f"history TTL: used_memory {peak_memory} -> {after_memory} bytes after 5,000 tasks expired")
        assert after_memory < peak_memory
    finally:
        api.stop()
        own_worker.stop()
        redis_client.close()
        server.stop()


async def first_answer(
    api: Service, task_id: str, timeout: float, first: asyncio.Future[None]
) -> list[dict[str, Any]]:
    """Frames of ``/ws/tasks/{task_id}`` until a terminal one or one marked ``recovered: false``;
    ``first`` is resolved once the first frame arrived."""
    frames: list[dict[str, Any]] = []
    async with websockets.connect(f"{api.ws_url}/ws/tasks/{task_id}") as socket:
        async with asyncio.timeout(timeout):
            frames.append(json.loads(await socket.recv()))
            first.set_result(None)
            if frames[0]["state"] not in ("SUCCESS", "FAILURE", "REVOKED"):
                await read_until(
                    socket,
                    lambda frame: (
                        frame["state"] in ("SUCCESS", "FAILURE", "REVOKED") or frame.get("recovered") is False
                    ),
                    frames,
                )
    return frames


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_redis_that_kept_nothing_tells_every_watcher_instead_of_leaving_it_silent(
    session_dir: Path,
) -> None:
    directory = session_dir / f"empty-{uuid.uuid4().hex[:6]}"
    directory.mkdir()
    server = start_redis(None, directory)  # no persistence: a restart loses the queue and every record
    port, url = server.port, server.url
    env = {"SVC_REDIS_TIMEOUT": "1"}
    worker = start_worker(url, session_dir, "empty-w", "--concurrency", "2", **env)
    api = start_api(url, session_dir, name="api-empty", **env)
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            bodies = [await submit(http, "count_to", 5, delay=0.2) for _ in range(200)]
        loop = asyncio.get_running_loop()
        firsts = [loop.create_future() for _ in bodies]
        watchers = [
            asyncio.create_task(first_answer(api, body["task_id"], 120, first))
            for body, first in zip(bodies, firsts, strict=True)
        ]
        async with asyncio.timeout(60):
            await asyncio.gather(*firsts)  # every watcher has seen its task
        server.process.kill()  # SIGKILL: nothing saved
        server.process.wait()
        server = start_redis(port, directory)
        answers = await asyncio.gather(*watchers, return_exceptions=True)
        silent = [answer for answer in answers if isinstance(answer, BaseException)]
        results = [answer for answer in answers if not isinstance(answer, BaseException)]
        lost = sum(1 for frames in results if frames[-1].get("lost") is True)
        gap = sum(1 for frames in results if frames[-1].get("recovered") is False) - lost
        print(f"redis lost everything: watchers=200 silent={len(silent)} lost={lost} resumed-with-gap={gap}")
        assert not silent  # every watcher got a terminal event or a recovered: false frame in time
        assert lost >= 1  # the queue went with Redis: those tasks can only be reported
    finally:
        api.stop()
        worker.stop()
        server.stop()


@pytest.mark.timeout(120)
async def test_message_lost_between_the_broker_and_a_worker_is_sent_again(
    redis_url: str, session_dir: Path, redis_client: redis.Redis
) -> None:
    # A namespace of its own: the session's API sweeps the session's namespace on its own schedule.
    namespace = f"lost{uuid.uuid4().hex[:6]}"
    env = {"SVC_NAMESPACE": namespace, "SVC_REDELIVER_AFTER": "1"}
    api = start_api(redis_url, session_dir, name=f"api-{namespace}", **env)
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            lost = (await submit(http, "add", 20, 1))["task_id"]
            waiting = (await submit(http, "add", 20, 2, _options={"queue": f"{namespace}-idle"}))["task_id"]
        # What a worker does that pops a message and never reads the reply (Redis shut down in between).
        assert redis_client.rpop(namespace) is not None
        rescuer = start_worker(redis_url, session_dir, f"rescuer-{namespace}", **env)
        try:
            frames, code = await watch(api, lost, timeout=60)
        finally:
            rescuer.stop()
        assert code == 1000 and frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == 21
        assert "event=task_redelivered" in api.log.read_text()
        # A task that is only waiting for a worker is looked at, more than once, and left where it is.
        unclaimed = f"{namespace}:unclaimed"
        first_look = redis_client.zscore(unclaimed, waiting)
        await until(lambda: redis_client.zscore(unclaimed, waiting) != first_look, timeout=30)
        second_look = redis_client.zscore(unclaimed, waiting)
        await until(lambda: redis_client.zscore(unclaimed, waiting) != second_look, timeout=30)
        assert redis_client.llen(f"{namespace}-idle") == 1
    finally:
        api.stop()
