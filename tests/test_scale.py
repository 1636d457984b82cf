"""Scale against real processes: a client that never reads, and 5,000 watchers on one API process.

Each test has its own redis-server and namespace, and holds its tasks in a queue that no worker
consumes until every watcher is connected; then a worker started for that queue releases them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets
from websockets.exceptions import ConnectionClosed

from bench import storm
from svc.embedded import RedisProcess, free_port, start_redis

from .conftest import TERMINAL, Service, assert_in_order, start_api, start_worker, submit, until

pytestmark = [pytest.mark.slow]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def raise_open_files_limit() -> None:
    """Lift the soft open-files limit to the hard one (children started after this inherit it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def submit_held(http: httpx.AsyncClient, queue: str, count: int, name: str, *args: Any) -> list[str]:
    """Submit ``count`` tasks to ``queue`` (no worker consumes it yet) and return their ids."""
    ids: list[str] = []
    for start in range(0, count, 250):
        batch = await asyncio.gather(
            *(submit(http, name, *args, _options={"queue": queue}) for _ in range(min(250, count - start)))
        )
        ids.extend(body["task_id"] for body in batch)
    return ids


class Watcher:
    """One real WebSocket client on ``/ws/tasks/{id}``: its frames, receive times and close code."""

    def __init__(self, api: Service, task_id: str) -> None:
        self.url = f"{api.ws_url}/ws/tasks/{task_id}"
        self.frames: list[dict[str, Any]] = []
        self.latency: float | None = None  # worker's publish -> our receive, for the terminal event
        self.code: int | None = None
        self.ready = asyncio.Event()

    async def run(self, connecting: asyncio.Semaphore) -> None:
        async with connecting:
            client = await websockets.connect(self.url, open_timeout=60, ping_interval=None)
        async with client:
            async for message in client:
                received = time.time()
                frame = json.loads(message)
                self.frames.append(frame)
                self.ready.set()
                if frame["state"] in TERMINAL:
                    self.latency = received - frame["ts"]
        self.code = client.close_code


async def watch_all(api: Service, task_ids: list[str]) -> tuple[list[Watcher], list[asyncio.Task[None]]]:
    """Connect a watcher per task; return once each has its first frame (its subscription is live)."""
    connecting = asyncio.Semaphore(200)
    watchers = [Watcher(api, task_id) for task_id in task_ids]
    runs = [asyncio.create_task(watcher.run(connecting)) for watcher in watchers]
    ready = asyncio.gather(*(watcher.ready.wait() for watcher in watchers))
    done, _ = await asyncio.wait([ready, *runs], return_when=asyncio.FIRST_COMPLETED)
    if ready not in done:
        for run in runs:
            if run.done():
                run.result()  # a watcher that failed before its first frame says why
    await ready
    return watchers, runs


def stop_all(api: Service, worker: Service | None, client: redis.Redis, server: RedisProcess) -> None:
    """Stop what a test started for itself: its API, its worker, its Redis client and server."""
    api.stop()
    if worker is not None:
        worker.stop()
    client.close()
    server.stop()


def slow_socket(port: int) -> socket.socket:
    """A connected TCP socket with a tiny receive buffer: a phone on a bad network."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def release(url: str, tmp: Path, queue: str, env: dict[str, str]) -> Service:
    """Start a worker for ``queue``: the tasks held there run."""
    return start_worker(url, tmp, f"w-{queue}", "-Q", queue, "--concurrency", "4", **env)


async def finish(watchers: list[Watcher], timeout: float) -> list[float]:
    """Wait for every watcher's terminal event; return their latencies."""
    await until(lambda: all(watcher.code is not None for watcher in watchers), timeout, "watchers done")
    for watcher in watchers:
        assert watcher.code == 1000 and watcher.frames[-1]["state"] == "SUCCESS"
        assert_in_order(watcher.frames)
    return [watcher.latency for watcher in watchers if watcher.latency is not None]


@pytest.mark.timeout(400)
async def test_a_client_that_never_reads_delays_no_one_and_is_closed_with_1013(session_dir: Path) -> None:
    raise_open_files_limit()
    server = start_redis(None, session_dir)
    namespace = f"slow{uuid.uuid4().hex[:6]}"
    env = {"SVC_NAMESPACE": namespace}
    api_env = {**env, "SVC_WS_SEND_QUEUE": "100", "SVC_WS_MAX_SUBSCRIPTIONS": "2000"}
    api = start_api(server.url, session_dir, name=f"api-{namespace}", **api_env)
    payload = "x" * 32_768  # big results fill a socket buffer fast
    workers: list[Service] = []
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as http:
            # Round A: 1,000 watchers, nobody slow.
            queue = f"q{uuid.uuid4().hex[:6]}"
            watchers, _ = await watch_all(api, await submit_held(http, queue, 1000, "echo", payload))
            workers.append(release(server.url, session_dir, queue, env))
            alone = await finish(watchers, 180)
            memory_before = rss_bytes(api.process.pid)

            # Round B: the same, plus one client subscribed to all 1,000 tasks that never reads.
            queue = f"q{uuid.uuid4().hex[:6]}"
            task_ids = await submit_held(http, queue, 1000, "echo", payload)
            assert api.port is not None
            slow = await websockets.connect(
                f"{api.ws_url}/ws", sock=slow_socket(api.port), max_queue=1, ping_interval=None
            )
            for task_id in task_ids:
                await slow.send(json.dumps({"op": "subscribe", "task_id": task_id, "since": 0}))
            watchers, _ = await watch_all(api, task_ids)
            workers.append(release(server.url, session_dir, queue, env))
            await until(
                lambda: "event=slow_client_disconnected" in api.log.read_text(), 120, "slow client dropped"
            )
            # The slow client reads at last: what was already in its socket, then the close code.
            received = 0
            with contextlib.suppress(ConnectionClosed):
                async with asyncio.timeout(30):
                    async for _ in slow:
                        received += 1
            assert slow.close_code == 1013, slow.close_code
            assert received < 3 * len(task_ids)  # it never got everything: it was cut off, not waited for
            crowded = await finish(watchers, 180)
            memory_after = rss_bytes(api.process.pid)
    finally:
        api.stop()
        for worker in workers:
            worker.stop()
        server.stop()
    p50_alone, p99_alone = statistics.median(alone), percentile(alone, 0.99)
    p50_crowd, p99_crowd = statistics.median(crowded), percentile(crowded, 0.99)
    grown = (memory_after - memory_before) / 2**20
    print(
        f"slow consumer: 1,000 watchers' latency p50/p99 alone "
        f"{p50_alone * 1000:.1f}/{p99_alone * 1000:.1f} ms, "
        f"beside a client that never reads {p50_crowd * 1000:.1f}/{p99_crowd * 1000:.1f} ms; "
        f"it got {received} frames then 1013; API RSS grew {grown:.1f} MiB"
    )
    assert len(crowded) == len(alone) == 1000
    assert p99_crowd <= max(2 * p99_alone, p99_alone + 0.5)
    assert grown < 48  # bounded: its 200 queued frames of 32 KiB at most, not its 3,000 frames


@pytest.mark.timeout(600)
async def test_one_api_process_holds_5000_watchers_on_one_pubsub_connection(session_dir: Path) -> None:
    raise_open_files_limit()
    server = start_redis(None, session_dir)
    client = redis.Redis.from_url(server.url)
    namespace = f"many{uuid.uuid4().hex[:6]}"
    env = {"SVC_NAMESPACE": namespace}
    api = start_api(server.url, session_dir, name=f"api-{namespace}", **env)
    worker: Service | None = None
    count = 5000
    try:
        queue = f"q{uuid.uuid4().hex[:6]}"
        async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as http:
            task_ids = await submit_held(http, queue, count, "add", 2, 3)
        memory_before = rss_bytes(api.process.pid)
        watchers, _ = await watch_all(api, task_ids)
        memory_after = rss_bytes(api.process.pid)
        clients = client.client_list()
        subscribers = [entry for entry in clients if int(entry.get("sub", 0)) > 0]
        assert len(subscribers) == 1, subscribers  # one pub/sub connection for all the watchers
        assert int(subscribers[0]["sub"]) >= count
        # beside it only the monitor's two pattern subscriptions (task events, Celery's worker events)
        patterns = [entry for entry in clients if int(entry.get("psub", 0)) > 0]
        assert len(patterns) <= 2 and all(int(entry.get("sub", 0)) == 0 for entry in patterns)
        worker = release(server.url, session_dir, queue, env)
        await finish(watchers, 400)
        assert all(watcher.frames[-1]["result"] == 5 for watcher in watchers)
        per_subscriber = (memory_after - memory_before) / count
        print(
            f"5,000 watchers: all {count} got their terminal event once, in order; "
            f"pub/sub connections 1; API memory per idle subscriber {per_subscriber / 1024:.1f} KiB"
        )
        assert per_subscriber < 25 * 1024  # about 17 KiB today (BENCHMARKS.md); 29 KiB before issue 15
    finally:
        stop_all(api, worker, client, server)


@pytest.mark.timeout(300)
async def test_an_api_restarted_under_1000_resuming_subscribers_loses_and_repeats_nothing(
    session_dir: Path,
) -> None:
    """bench.storm at a tenth of its size: the API stopped under 1,000 subscribers, every task run
    while it is down, a new API on the same port; each subscriber resumes with ``since`` (full-jitter
    backoff) and ends with every seq from 1 to its terminal event exactly once."""
    raise_open_files_limit()
    server = start_redis(None, session_dir)
    client = redis.Redis.from_url(server.url)
    namespace = f"storm{uuid.uuid4().hex[:6]}"
    env = {"SVC_NAMESPACE": namespace, "SVC_RATE_LIMIT": "0", "SVC_WS_MAX_CONNECTIONS": "5000"}
    port = free_port()
    api = start_api(server.url, session_dir, name=f"api-{namespace}", port=port, **env)
    worker: Service | None = None
    loop = asyncio.get_running_loop()
    try:
        queue = f"q{uuid.uuid4().hex[:6]}"
        async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as http:
            tasks = [await submit(http, "add", 2, 3, _options={"queue": queue}) for _ in range(50)]
        firsts = [loop.create_future() for _ in range(1000)]
        watches = [
            asyncio.create_task(
                storm.resume_until_terminal(
                    api.ws_url, tasks[index % 50]["task_id"], tasks[index % 50]["token"], "127.0.0.1", first
                )
            )
            for index, first in enumerate(firsts)
        ]
        async with asyncio.timeout(120):
            await asyncio.gather(*firsts)  # everyone watches: PENDING received
        api.stop()  # SIGTERM: 1001 to every socket; the subscribers start resuming
        worker = release(server.url, session_dir, queue, env)
        task_ids = [task["task_id"] for task in tasks]
        await until(lambda: storm.all_finished(client, task_ids, namespace), 60, "the tasks run while down")
        api = start_api(server.url, session_dir, name=f"api-{namespace}-again", port=port, **env)
        async with asyncio.timeout(180):
            results = await asyncio.gather(*watches)
        assert sum(result.lost() for result in results) == 0
        assert sum(result.duplicated() for result in results) == 0
        assert all(result.seqs == list(range(1, len(result.seqs) + 1)) for result in results)
        assert all(len(result.seqs) >= 4 for result in results)  # PENDING … SUCCESS
        assert sum(result.attempts for result in results) >= 1000  # every one of them did reconnect
    finally:
        stop_all(api, worker, client, server)
