"""Task output streams: how fast one task can stream, and how soon a chunk reaches its watchers.

    python -m bench.streams [--chunks 100000] [--rounds 3] [--streams 100] [--per-stream 200]

One private redis-server, one ``svc api``, workers of bench/stream_app.py (``svc worker -A``):

- **Emit rate.** One prefork worker runs ``bench.emit(chunks, streaming)``: the same loop making
  token-sized strings, once calling ``svc.stream`` on each and once only keeping them (the task that
  does not stream), rounds interleaved. The time is the task's own ``runtime`` (STARTED → SUCCESS, as
  the worker publishes it), which includes writing the last batch before SUCCESS.
- **Chunk latency.** A thread-pool worker (concurrency = streams) runs ``--streams`` ``bench.timed``
  tasks at once, each streaming ``--per-stream`` chunks, one every 50 ms, each chunk the wall-clock
  time it was made. Delay = receive time minus that time, for every chunk, at each watcher: one
  ``WS /ws/tasks/{id}`` per task, and, as the baseline of the same run, one raw Redis subscriber of
  every task's channel (what the chunks cost before svc's API touches them: the worker's batching and
  Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import platform
import statistics
import time
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis
import uvloop
import websockets

from bench.common import (
    NAMESPACE,
    api_service,
    percentile,
    private_redis,
    provenance,
    worker_process,
    write_section,
)
from svc.wire import events

APP = ("-A", "bench.stream_app")


def runtime_of(client: redis.Redis, task_id: str) -> float:
    """The ``runtime`` of a finished task's SUCCESS event."""
    newest = client.zrange(events.history_key(NAMESPACE, task_id), -1, -1)
    event = orjson.loads(newest[0])
    if event["state"] != "SUCCESS":
        raise RuntimeError(f"task {task_id} ended {event['state']}: {event}")
    return float(event["runtime"])


def emit_rates(redis_url: str, chunks: int, rounds: int) -> dict[str, list[float]]:
    """Chunks per second of the streaming task and of its twin that keeps them, per round."""
    from bench.stream_app import app

    client = redis.Redis.from_url(redis_url)
    rates: dict[str, list[float]] = {"streaming": [], "not streaming": []}
    with worker_process(redis_url, *APP, concurrency=1):
        app.send_task("bench.emit", args=[1000, True]).get(timeout=60)  # warm: imports, connections
        for _ in range(rounds):
            for label, streaming in (("streaming", True), ("not streaming", False)):
                result = app.send_task("bench.emit", args=[chunks, streaming])
                result.get(timeout=600)
                time.sleep(0.2)  # the SUCCESS event is published after the result is stored
                rates[label].append(chunks / runtime_of(client, result.id))
                if streaming:
                    stored = client.zcard(events.stream_key(NAMESPACE, result.id))
                    if stored != chunks:
                        raise RuntimeError(f"the streaming task stored {stored} of its {chunks} chunks")
    client.close()
    app.close()
    return rates


async def watch_socket(ws_base: str, task_id: str, delays: list[float]) -> int:
    """Read one task's frames until its terminal event; the delay of every chunk into ``delays``."""
    chunks = 0
    async with websockets.connect(f"{ws_base}/ws/tasks/{task_id}", max_queue=None) as socket:
        async for message in socket:
            now = time.time()
            frame = orjson.loads(message)
            if frame.get("op") == "stream":
                delays.append(now - frame["data"])
                chunks += 1
    return chunks


async def watch_redis(redis_url: str, task_ids: list[str], delays: list[float], ready: asyncio.Event) -> None:
    """The baseline: every chunk's delay as a raw subscriber of the task channels receives it."""
    client = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.subscribe(*(events.task_channel(NAMESPACE, task_id) for task_id in task_ids))
    ready.set()
    left = set(task_ids)
    try:
        while left:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None:
                continue
            now = time.time()
            for raw in message["data"].split(b"\n"):
                frame = orjson.loads(raw)
                if frame.get("op") == "stream":
                    delays.append(now - frame["data"])
                elif frame.get("state") in events.TERMINAL_STATES:
                    left.discard(frame["task_id"])
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


async def latencies(redis_url: str, ws_base: str, streams: int, per_stream: int) -> dict[str, Any]:
    """Chunk delays (ms) at the svc watchers and at the raw Redis subscriber, with streams at once."""
    import uuid

    from bench.stream_app import app

    task_ids = [str(uuid.uuid4()) for _ in range(streams)]
    svc_delays: list[float] = []
    redis_delays: list[float] = []
    ready = asyncio.Event()
    baseline = asyncio.create_task(watch_redis(redis_url, task_ids, redis_delays, ready))
    await ready.wait()
    sockets = [asyncio.create_task(watch_socket(ws_base, task_id, svc_delays)) for task_id in task_ids]
    client = aioredis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 60
    while (
        sum(
            [n for _, n in await client.pubsub_numsub(*(events.task_channel(NAMESPACE, t) for t in task_ids))]
        )
        < 2 * streams
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("the watchers did not subscribe")
        await asyncio.sleep(0.05)
    await client.aclose()
    started = time.monotonic()
    for task_id in task_ids:
        app.send_task("bench.timed", args=[per_stream, 0.05], task_id=task_id)
    received = await asyncio.gather(*sockets)
    elapsed = time.monotonic() - started
    await asyncio.wait_for(baseline, 60)
    app.close()
    return {
        "svc": [delay * 1000 for delay in svc_delays],
        "redis": [delay * 1000 for delay in redis_delays],
        "received": sum(received),
        "elapsed": elapsed,
    }


def report(rates: dict[str, list[float]], latency: dict[str, Any], options: argparse.Namespace) -> str:
    """The markdown section."""
    streaming = statistics.median(rates["streaming"])
    plain = statistics.median(rates["not streaming"])
    expected = options.streams * options.per_stream
    svc_ms, redis_ms = latency["svc"], latency["redis"]
    lines = [
        "## Streams: chunks one task can emit, and chunk latency",
        "",
        f"`python -m bench.streams --chunks {options.chunks} --rounds {options.rounds} --streams "
        f"{options.streams} --per-stream {options.per_stream}` — private Redis, one `svc api`, workers of "
        f"bench/stream_app.py (`svc worker -A`); {provenance()}; {platform.machine()}, "
        f"{dt.date.today().isoformat()}.",
        "",
        "**Emit rate**: one task (prefork worker, concurrency 1) making token-sized chunks, median of "
        f"{options.rounds} interleaved rounds; time is the task's `runtime` (STARTED → SUCCESS, the last "
        "batch written before SUCCESS included).",
        "",
        "| task | chunks | chunks / s | × the task that does not stream |",
        "| --- | ---: | ---: | ---: |",
        f"| `svc.stream` on each chunk | {options.chunks:,} | {streaming:,.0f} | {streaming / plain:.3f} |",
        f"| the same loop, chunks kept in a list (does not stream) | {options.chunks:,} | {plain:,.0f} "
        "| 1.000 |",
        "",
        f"`svc.stream` costs the task {(1 / streaming - 1 / plain) * 1e6:.1f} µs per chunk (the "
        "difference of the two rows' time per chunk): the chunk's JSON, a lock, and its share of the "
        "flusher thread's batches, which hold the GIL while they build and send each round trip.",
        "",
        f"**Chunk latency**: {options.streams} tasks streaming at once (a thread-pool worker), "
        f"{options.per_stream} chunks each, one every 50 ms; delay from `svc.stream` (the chunk's own "
        "timestamp) to receipt, for every chunk.",
        "",
        "| watcher | chunks received | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, values, count in (
        (
            "raw Redis subscriber of the task channels (baseline: the worker's batching and Redis)",
            redis_ms,
            len(redis_ms),
        ),
        ("svc: one `WS /ws/tasks/{id}` per task", svc_ms, latency["received"]),
    ):
        lines.append(
            f"| {label} | {count:,} of {expected:,} | {percentile(values, 50):.1f} | "
            f"{percentile(values, 99):.1f} | {max(values):.1f} |"
        )
    lines += [
        "",
        f"The {options.streams} streams took {latency['elapsed']:.1f} s (each "
        f"{options.per_stream * 0.05:.0f} s of sleeps). svc's delay over the baseline is the API's: the "
        "bridge's read, the frame written to each socket, and the client's read, all on the same 2 cores "
        "as the worker and Redis.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks a round (<= SVC_STREAM_MAX)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=100, help="tasks streaming at once")
    parser.add_argument("--per-stream", type=int, default=200, help="chunks each of them streams")
    options = parser.parse_args()
    with private_redis() as server:
        import os

        os.environ["SVC_REDIS_URL"], os.environ["SVC_NAMESPACE"] = server.url, NAMESPACE
        rates = emit_rates(server.url, options.chunks, options.rounds)
        with (
            api_service(server.url) as api,
            worker_process(server.url, *APP, "--pool", "threads", concurrency=options.streams),
        ):
            latency = uvloop.run(latencies(server.url, api.ws, options.streams, options.per_stream))
    text = report(rates, latency, options)
    print(text)
    write_section("streams", text)


if __name__ == "__main__":
    main()
