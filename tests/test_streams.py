"""Task output streams (SPEC "Streams", "Server-sent events") against real processes: ``svc.stream``
chunks arrive in order, once, in the task's own seq, before its terminal event, on both WebSocket routes
and over SSE; late joiners and resuming clients get every chunk; an API restart and a Redis restart
(with AOF) lose and duplicate nothing; 100 streaming tasks at once; a slow reader is cut with 1013 and
resumes; a capped stream says ``recovered: false``; a workflow carries its steps' chunks.
"""

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
from celery import Celery

import svc
from svc.embedded import free_port, start_redis
from svc.settings import Settings
from svc.tasks.diagnostic import words_of
from svc.wire import events

from .conftest import (
    NAMESPACE,
    TERMINAL,
    Service,
    closing,
    start_api,
    start_worker,
    submit,
    subscribed,
    until,
    watch,
)
from .test_scale import slow_socket

pytestmark = pytest.mark.timeout(120)


def chunks_of(frames: list[dict[str, Any]], stream: str = "output") -> list[dict[str, Any]]:
    """The stream frames of one stream, in the order received."""
    return [frame for frame in frames if frame.get("op") == "stream" and frame["stream"] == stream]


def text_of(frames: list[dict[str, Any]], stream: str = "output") -> str:
    """A text stream's chunks, concatenated."""
    return "".join(frame["data"] for frame in chunks_of(frames, stream))


def assert_stream_complete(frames: list[dict[str, Any]], words: int) -> None:
    """Every seq once, in order, 1..N; the chunks are the task's words, all before the terminal event,
    which is last; each frame is the SPEC's shape."""
    seqs = [frame["seq"] for frame in frames]
    assert seqs == list(range(1, len(frames) + 1)), seqs
    for frame in frames:
        if frame.get("op") == "stream":
            events.StreamChunk.model_validate(frame)
        else:
            events.Event.model_validate(frame)
    assert frames[-1].get("state") in TERMINAL
    assert [frame["data"] for frame in chunks_of(frames)] == words_of(words)
    assert frames[-1]["result"] == "".join(words_of(words))


async def test_chunks_arrive_in_the_tasks_seq_before_its_end_and_make_its_result(
    api: Service, http: httpx.AsyncClient
) -> None:
    task = await submit(http, "stream_text", words=60, delay=0.005)
    frames, code = await watch(api, task["task_id"])
    assert code == 1000
    assert_stream_complete(frames, 60)
    states = [frame["state"] for frame in frames if "state" in frame]
    assert states[-2:] == ["STARTED", "SUCCESS"]  # no event between the chunks: they sit between those
    # GET /tasks/{id} still answers the latest event, and the JSON history holds events only.
    latest = (await http.get(f"/tasks/{task['task_id']}")).json()
    assert latest["state"] == "SUCCESS" and latest["seq"] == frames[-1]["seq"]
    history = (await http.get(f"/tasks/{task['task_id']}/events")).json()
    assert [event["state"] for event in history] == states


async def test_a_late_joiner_and_a_resuming_client_get_every_chunk_once(
    api: Service, http: httpx.AsyncClient
) -> None:
    task = await submit(http, "stream_text", words=30, delay=0)
    everything, _ = await watch(api, task["task_id"])
    assert_stream_complete(everything, 30)
    again, _ = await watch(api, task["task_id"])
    assert again == everything
    middle = everything[len(everything) // 2]["seq"]
    rest, code = await watch(api, task["task_id"], since=middle)
    assert code == 1000 and rest == everything[middle:]


async def test_the_multiplexed_socket_carries_chunks_of_many_tasks(
    api: Service, http: httpx.AsyncClient
) -> None:
    tasks = [await submit(http, "stream_text", words=20 + n, delay=0.002) for n in range(3)]
    frames: dict[str, list[dict[str, Any]]] = {task["task_id"]: [] for task in tasks}
    async with asyncio.timeout(60), websockets.connect(f"{api.ws_url}/ws") as socket:
        for task in tasks:
            await socket.send(
                json.dumps({"op": "subscribe", "task_id": task["task_id"], "token": task["token"]})
            )
        ended = 0
        while ended < len(tasks):
            frame = json.loads(await socket.recv())
            frames[frame["task_id"]].append(frame)
            ended += frame.get("state") in TERMINAL
    for n, task in enumerate(tasks):
        assert_stream_complete(frames[task["task_id"]], 20 + n)


def parse_sse(body: str) -> list[tuple[int, dict[str, Any]]]:
    """(id, frame) of each message of a server-sent-events body (comments skipped)."""
    messages = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "data" in fields:
            messages.append((int(fields["id"]), json.loads(fields["data"])))
    return messages


async def test_server_sent_events_carry_the_same_frames_and_resume_after_last_event_id(
    api: Service, http: httpx.AsyncClient
) -> None:
    task = await submit(http, "stream_text", words=25, delay=0.004)
    url = f"/tasks/{task['task_id']}/events?token={task['token']}"
    sse = {"Accept": "text/event-stream"}
    async with http.stream("GET", url, headers=sse, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = "".join([text async for text in response.aiter_text()])
    messages = parse_sse(body)
    frames = [frame for _, frame in messages]
    assert [seq for seq, _ in messages] == [frame["seq"] for frame in frames]
    assert_stream_complete(frames, 25)
    websocket_frames, _ = await watch(api, task["task_id"])
    assert frames == websocket_frames
    middle = frames[10]["seq"]
    resumed = await http.get(url, headers={**sse, "Last-Event-ID": str(middle)}, timeout=30)
    assert [frame for _, frame in parse_sse(resumed.text)] == frames[middle:]
    by_query = await http.get(f"{url}&since={middle}", headers=sse, timeout=30)
    assert [frame for _, frame in parse_sse(by_query.text)] == frames[middle:]
    refused = await http.get(url, headers={**sse, "Last-Event-ID": "-1"})
    assert refused.status_code == 400 and refused.json()["status"] == 400


async def test_a_hundred_tasks_stream_at_once_and_every_watcher_gets_its_whole_text(
    api: Service, http: httpx.AsyncClient
) -> None:
    tasks = [await submit(http, "stream_text", words=40, delay=0.01) for _ in range(100)]
    results = await asyncio.gather(*(watch(api, task["task_id"], timeout=100) for task in tasks))
    for frames, code in results:
        assert code == 1000
        assert_stream_complete(frames, 40)


@pytest.mark.timeout(120)
async def test_chunks_survive_an_api_restart_mid_stream(
    redis_url: str, session_dir: Path, worker: Service
) -> None:
    port = free_port()
    api = start_api(redis_url, session_dir, name="api-stream-killed", port=port)
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            task = await submit(http, "stream_text", words=80, delay=0.02)
        frames: list[dict[str, Any]] = []
        async with websockets.connect(f"{api.ws_url}/ws/tasks/{task['task_id']}") as socket:
            async with asyncio.timeout(30):
                while len(chunks_of(frames)) < 10:
                    frames.append(json.loads(await socket.recv()))
            api.stop(signal.SIGKILL)
            with pytest.raises(websockets.ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:
                        frames.append(json.loads(await socket.recv()))
        api = start_api(redis_url, session_dir, name="api-stream-again", port=port)
        rest, code = await watch(api, task["task_id"], since=frames[-1]["seq"])
        assert code == 1000
        assert_stream_complete(frames + rest, 80)
    finally:
        api.stop()


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_chunks_survive_a_redis_restart_with_aof_in_order_and_once(session_dir: Path) -> None:
    directory = session_dir / f"streams-aof-{uuid.uuid4().hex[:6]}"
    directory.mkdir()
    aof = ("--appendonly", "yes", "--appendfsync", "always")
    server = start_redis(None, directory, *aof)
    worker = start_worker(server.url, session_dir, "streams-aof-worker", "--concurrency", "4")
    api = start_api(server.url, session_dir, name="streams-aof-api")
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            tasks = [await submit(http, "stream_text", words=150, delay=0.02) for _ in range(4)]
        client = redis.Redis.from_url(server.url)
        stream = events.stream_key(NAMESPACE, tasks[0]["task_id"])
        await until(lambda: client.zcard(stream) >= 20, timeout=30, what="chunks streaming")
        server.stop()
        # Down until the API has noticed (the tasks go on making chunks, which wait in the worker).
        await until(lambda: "event=bridge_disconnected" in api.log.read_text(), 30, "Redis seen down")
        server = start_redis(server.port, directory, *aof)
        for task in tasks:
            frames, code = await watch(api, task["task_id"], timeout=120)
            assert code == 1000
            assert_stream_complete(frames, 150)
        assert "stream_chunks_lost" not in worker.log.read_text()
    finally:
        api.stop()
        worker.stop()
        server.stop()


@pytest.mark.timeout(120)
async def test_a_reader_too_slow_for_a_stream_is_cut_with_1013_and_resumes_without_a_gap(
    redis_url: str, session_dir: Path
) -> None:
    api = start_api(redis_url, session_dir, name="api-stream-slow", SVC_WS_SEND_QUEUE="16")
    queue = f"slow-{uuid.uuid4().hex[:6]}"
    runner = None
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            task = await submit(http, "stream_text", words=100_000, delay=0, _options={"queue": queue})
        # A client that reads nothing, watching before the task runs (every chunk comes to it live): its
        # socket's buffers fill, then its outbox, then it is cut.
        url = f"{api.ws_url}/ws/tasks/{task['task_id']}"
        assert api.port is not None
        async with websockets.connect(
            url, sock=slow_socket(api.port), max_queue=1, ping_interval=None
        ) as slow:
            client = redis.Redis.from_url(redis_url)
            await until(lambda: subscribed(client, task["task_id"]), 30, "the slow client subscribed")
            client.close()
            runner = start_worker(redis_url, session_dir, "streams-slow-worker", "-Q", queue)
            await until(lambda: "event=slow_client_disconnected" in api.log.read_text(), 60, "cut")
            got: list[dict[str, Any]] = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    got.append(json.loads(await slow.recv()))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        seqs = [frame["seq"] for frame in got]
        assert seqs == list(range(1, len(seqs) + 1))  # nothing dropped before the cut
        # Once the task has ended it resumes, on a socket as slow, and takes the rest of the stream (now
        # history) at its own pace: a backlog is never cut.
        client = redis.Redis.from_url(redis_url)
        ended = events.task_key(NAMESPACE, task["task_id"])
        await until(lambda: client.hexists(ended, "terminal"), 60, "the task ended")
        client.close()
        rest: list[dict[str, Any]] = []
        since = seqs[-1] if seqs else 0
        resume = f"{api.ws_url}/ws/tasks/{task['task_id']}?since={since}"
        async with asyncio.timeout(90):
            async with websockets.connect(resume, sock=slow_socket(api.port), max_queue=1) as again:
                async for message in again:
                    rest.append(json.loads(message))
            assert again.close_code == 1000
        assert_stream_complete(got + rest, 100_000)
    finally:
        api.stop()
        if runner is not None:
            runner.stop()


@pytest.mark.timeout(120)
async def test_a_capped_stream_says_recovered_false_where_chunks_were_cut(
    session_dir: Path, redis_url: str
) -> None:
    namespace = f"capped{uuid.uuid4().hex[:6]}"
    settings = {"SVC_NAMESPACE": namespace, "SVC_STREAM_MAX": "10", "SVC_STREAM_TTL": "3"}
    worker = start_worker(redis_url, session_dir, "streams-capped-worker", **settings)
    api = start_api(redis_url, session_dir, name="streams-capped-api", **settings)
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            task = await submit(http, "stream_text", words=40, delay=0)
        live, code = await watch(api, task["task_id"])  # live: every chunk, whatever the cap
        assert code == 1000
        assert_stream_complete(live, 40)
        frames, code = await watch(api, task["task_id"])  # late: what the cap left
        assert code == 1000
        chunks = chunks_of(frames)
        assert [chunk["data"] for chunk in chunks] == words_of(40)[-10:]
        assert chunks[0]["recovered"] is False
        assert all("recovered" not in chunk for chunk in chunks[1:])
        assert frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == "".join(words_of(40))
        # Past SVC_STREAM_TTL the chunks are gone and the events are not: the frame after them says so.
        client = redis.Redis.from_url(redis_url)
        stream = events.stream_key(namespace, task["task_id"])
        await until(lambda: not client.exists(stream), timeout=30, what="the stream expired")
        client.close()
        expired, code = await watch(api, task["task_id"])
        assert code == 1000 and not chunks_of(expired)
        assert [frame["state"] for frame in expired] == [
            frame["state"] for frame in frames if "state" in frame
        ]
        assert expired[-1]["recovered"] is False and all("recovered" not in frame for frame in expired[:-1])
    finally:
        api.stop()
        worker.stop()


def test_a_stream_may_not_outlive_its_tasks_history() -> None:
    assert Settings(history_ttl=60).stream_expiry == 60
    assert Settings(history_ttl=60, stream_ttl=30).stream_expiry == 30
    with pytest.raises(ValueError, match="SVC_STREAM_TTL"):
        Settings(history_ttl=60, stream_ttl=61)


async def test_a_workflow_carries_its_steps_chunks(api: Service, http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/workflows",
        json={"chain": [{"task": "stream_text", "kwargs": {"words": 12, "delay": 0}}, {"task": "echo"}]},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    frames, code = await watch(api, body["workflow_id"])
    assert code == 1000
    seqs = [frame["seq"] for frame in frames]
    assert seqs == list(range(1, len(frames) + 1))
    step_chunks = chunks_of(frames)
    assert [chunk["data"] for chunk in step_chunks] == words_of(12)
    for chunk in step_chunks:
        events.StreamChunk.model_validate(chunk)
        assert chunk["workflow_id"] == body["workflow_id"] and chunk["step"] == 0
        assert chunk["task_id"] == body["task_ids"][0]
    step_seqs = [chunk["step_seq"] for chunk in step_chunks]
    assert step_seqs == list(range(step_seqs[0], step_seqs[0] + 12))
    assert frames[-1]["state"] == "SUCCESS" and frames[-1]["task_id"] == body["workflow_id"]


def test_svc_stream_outside_a_task_says_so() -> None:

    with pytest.raises(RuntimeError, match="inside a running task"):
        svc.stream("hello")
    with pytest.raises(RuntimeError, match="inside a running task"):
        svc.stream_from(["hello"])


def test_bad_chunks_raise_in_the_task_and_good_ones_are_stored_before_its_end(redis_url: str) -> None:
    namespace = f"streamcheck{uuid.uuid4().hex[:6]}"
    app = closing(Celery("streamcheck", broker=redis_url, backend=redis_url))
    app.conf.task_always_eager = True
    svc.instrument(app, Settings(redis_url=redis_url, namespace=namespace, stream_max_chunk=64))

    @app.task(name="check", shared=False)
    def check() -> dict[str, str]:
        refused = {}
        for label, data, name in [
            ("not JSON", object(), "output"),
            ("too big", "x" * 100, "output"),
            ("bad name", "x", "no spaces"),
            ("empty name", "x", ""),
        ]:
            try:
                svc.stream(data, name=name)
            except (TypeError, ValueError) as exc:
                refused[label] = type(exc).__name__
        assert list(svc.stream_from(iter(["a", "b"]), name="letters")) == ["a", "b"]
        svc.stream({"row": 1}, name="rows")
        return refused

    result = check.apply()
    assert result.get() == {
        "not JSON": "TypeError",
        "too big": "ValueError",
        "bad name": "ValueError",
        "empty name": "ValueError",
    }
    client = redis.Redis.from_url(redis_url)
    try:
        chunks = [json.loads(raw) for raw in client.zrange(events.stream_key(namespace, result.id), 0, -1)]
        history = [json.loads(raw) for raw in client.zrange(events.history_key(namespace, result.id), 0, -1)]
    finally:
        client.close()
    assert [(chunk["stream"], chunk["data"]) for chunk in chunks] == [
        ("letters", "a"),
        ("letters", "b"),
        ("rows", {"row": 1}),
    ]
    assert history[-1]["state"] == "SUCCESS" and history[-1]["seq"] > chunks[-1]["seq"]
    seqs = sorted([chunk["seq"] for chunk in chunks] + [event["seq"] for event in history])
    assert seqs == list(range(1, len(seqs) + 1))


def test_the_stream_script_stores_a_batch_sent_twice_once_and_nothing_after_the_end(
    redis_client: redis.Redis,
) -> None:
    settings = Settings(namespace=f"script{uuid.uuid4().hex[:6]}", stream_max=3)
    task_id = "t1"
    script = redis_client.register_script(events.STREAM_SCRIPT)
    prefix = events.stream_prefix(task_id, "output")
    bodies = [events.stream_body(prefix, json.dumps(word).encode()) for word in ["a", "b"]]

    def send(first: int, chunks: list[bytes], producer: str = "stream:p1") -> list[Any]:
        keys, args = events.stream_args(settings, task_id, producer, first, chunks)
        return list(script(keys=keys, args=args))

    assert send(0, bodies)[:2] == [2, 2]
    assert send(0, bodies)[:2] == [0, 0]  # the same batch again (a lost reply): stored once
    more = [events.stream_body(prefix, json.dumps(word).encode()) for word in ["c", "d"]]
    assert send(1, [bodies[1], more[0]])[:2] == [3, 1]  # overlapping: only the new one
    assert send(3, [more[1]])[:2] == [4, 1]
    stored = redis_client.zrange(events.stream_key(settings.namespace, task_id), 0, -1, withscores=True)
    assert [(json.loads(raw)["data"], int(score)) for raw, score in stored] == [("b", 2), ("c", 3), ("d", 4)]
    task = redis_client.hgetall(events.task_key(settings.namespace, task_id))
    assert task[b"stream_cut"] == b"1" and task[b"stream_last"] == b"4"  # the cap of 3 cut seq 1
    redis_client.hset(events.task_key(settings.namespace, task_id), "terminal", "SUCCESS")
    assert send(0, more, producer="stream:p2")[:2] == [0, 0]  # nothing after the task's end
