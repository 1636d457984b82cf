"""svc.client (AsyncClient and the blocking Client) against real processes: results and typed errors,
events and streams once and in order, one socket for many tasks, a task watched by id and token, and
an API restart in the middle of a task."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from svc.client import AsyncClient, Client, NotFound, TaskFailed, TaskRevoked, ValidationFailed
from svc.embedded import free_port
from svc.tasks.diagnostic import words_of

from .conftest import TERMINAL, Service, start_api, until

pytestmark = pytest.mark.timeout(120)


async def test_submit_and_result_and_every_event_in_order(api: Service) -> None:
    async with AsyncClient(api.base_url) as client:
        task = await client.submit("add", args=[2, 3])
        assert await task.result(timeout=30) == 5
        events = [event async for event in task.events()]
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(set(seqs)) and events[-1]["state"] == "SUCCESS" and events[-1]["result"] == 5
    assert [event["state"] for event in events][:1] in (["PENDING"], ["RECEIVED"], ["STARTED"], ["SUCCESS"])


async def test_failures_revokes_and_http_errors_are_typed(api: Service) -> None:
    async with AsyncClient(api.base_url) as client:
        failed = await client.submit("fail", args=["boom"])
        with pytest.raises(TaskFailed) as caught:
            await failed.result(timeout=30)
        assert caught.value.remote_type == "ValueError" and caught.value.remote_message == "boom"
        sleeping = await client.submit("sleep", args=[30])
        await sleeping.cancel(terminate=True)
        with pytest.raises(TaskRevoked):
            await sleeping.result(timeout=30)
        with pytest.raises(NotFound) as missing:
            await client.submit("no_such_task")
        assert missing.value.status == 404 and missing.value.problem["status"] == 404
        with pytest.raises(ValidationFailed):
            await client.submit("add", args=["two", 3])
        with pytest.raises(TimeoutError):
            await (await client.submit("sleep", args=[5])).result(timeout=0.2)


async def test_a_stream_arrives_whole_as_text_and_chunk_by_chunk(api: Service) -> None:
    async with AsyncClient(api.base_url) as client:
        task = await client.submit("stream_text", kwargs={"words": 30, "delay": 0.005})
        chunks = [data async for data in task.stream("output")]
        assert chunks == words_of(30)
        assert await task.text("output") == await task.result() == "".join(words_of(30))


async def test_many_tasks_share_one_socket_and_a_task_is_watched_by_id_and_token(api: Service) -> None:
    async with AsyncClient(api.base_url) as client:
        tasks = [await client.submit("add", args=[n, n]) for n in range(50)]
        results = await asyncio.gather(*(task.result(timeout=60) for task in tasks))
        assert results == [2 * n for n in range(50)]
        assert client.socket.connections == 1
        await until(lambda: not client.socket.is_open, timeout=10, what="the idle socket closed")
        # The catalogue says what recent runs took (what an SDK's estimate of time left starts from).
        entry = next(task for task in await client.tasks() if task["name"] == "add")
        assert entry["runtime"]["runs"] >= 1 and 0 <= entry["runtime"]["p50"] <= entry["runtime"]["p95"]
        async with AsyncClient(api.base_url) as other:
            watched = other.task(tasks[7].id, tasks[7].token)
            assert await watched.result(timeout=30) == 14  # ended already: its history says so


async def test_an_api_restart_mid_task_loses_and_repeats_no_event(
    redis_url: str, session_dir: Path, worker: Service
) -> None:
    port = free_port()
    api = start_api(redis_url, session_dir, name="api-client-restart", port=port)
    try:
        async with AsyncClient(api.base_url, connect_timeout=2) as client:
            task = await client.submit("count_to", args=[30], kwargs={"delay": 0.05})
            events = task.events()
            seen = []
            async for event in events:
                seen.append(event)
                if event["state"] == "PROGRESS":
                    break
            api.stop(signal.SIGKILL)
            api = start_api(redis_url, session_dir, name="api-client-restarted", port=port)
            async for event in events:
                seen.append(event)
            assert await task.result(timeout=60) == 30
            assert client.socket.connections >= 2
    finally:
        api.stop()
    seqs = [event["seq"] for event in seen]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    states = [event["state"] for event in seen]
    assert states.count("PROGRESS") == 30 and states[-1] == "SUCCESS" and states[-1] in TERMINAL


def test_the_blocking_client_does_the_same(api: Service) -> None:
    with Client(api.base_url) as client:
        task = client.submit("stream_text", kwargs={"words": 12, "delay": 0})
        assert list(task.stream()) == words_of(12)
        assert task.text() == task.result(timeout=30) == "".join(words_of(12))
        assert [event["state"] for event in task.events()][-1] == "SUCCESS"
        with pytest.raises(TaskFailed):
            client.submit("fail", args=["no"]).result(timeout=30)


def test_the_client_loads_neither_the_api_nor_the_worker_side_and_documents_its_names() -> None:
    import subprocess
    import sys

    import svc.client

    for name in svc.client.__all__:
        assert (getattr(svc.client, name).__doc__ or "").strip(), f"svc.client.{name} has no docstring"
    code = (
        "import sys, svc.client\n"
        "heavy = ('fastapi', 'starlette', 'uvicorn', 'celery', 'kombu', 'redis', 'svc.api', 'svc.gateway',\n"
        "         'svc.worker', 'svc.bridge', 'svc.edge', 'svc.enqueue', 'svc.fanout', 'svc.monitor')\n"
        "print(sorted(name for name in sys.modules if name.startswith(heavy)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
