"""Latency: submit → terminal event, svc's WebSockets against Celery's AsyncResult.get() and polling.

    python -m bench.latency [--tasks 1000] [--poll-tasks 200]

One private redis-server, one worker (concurrency 2), one API process. Each task is `add(2, 3)`, one
at a time; the clock runs from just before the submit to receipt of the SUCCESS frame (or answer).
The WebSocket paths and the Celery baseline take turns task by task, so noise hits all alike:

- baseline: a plain Celery client on the same Redis, `send_task` + `AsyncResult.get()` (Redis pub/sub);
- svc `/ws` (the JS SDK's path): POST, then a subscribe frame on one long-lived multiplexed socket;
- svc `/ws/tasks/{id}`: POST, then a fresh WebSocket per task;
- polling: POST, then `GET /tasks/{id}` every 100 ms (fewer tasks: each takes ~100 ms).

HTTP goes over a bare keep-alive connection (bench.common.RawHttp) so the client's own overhead is
a few microseconds, as it is for the Celery client.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import platform
import time
from collections.abc import Awaitable, Callable

import orjson
import uvloop
import websockets
from celery import Celery

from bench.common import (
    NAMESPACE,
    TERMINAL,
    RawHttp,
    api_service,
    percentile,
    private_redis,
    provenance,
    worker_process,
    write_section,
)
from svc.celery_app import deployment_settings

BODY = b'{"args": [2, 3]}'
BASELINE = "Celery `send_task` + `AsyncResult.get()`"
MUX = "svc: POST + subscribe on `/ws` (SDK path)"
ONE = "svc: POST + `WS /ws/tasks/{id}`"
POLL = "svc: POST + poll `GET /tasks/{id}` every 100 ms"


def plain_celery(redis_url: str) -> Celery:
    """A Celery client that knows nothing of svc, as another service of the user's would run it (set up
    as the README says a client of the demo app must be: its queue and result keys follow the namespace)."""
    celery = Celery("elsewhere", broker=redis_url, backend=redis_url)
    celery.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        **deployment_settings(NAMESPACE),
    )
    return celery


async def submit(http: RawHttp) -> dict[str, str]:
    """POST /tasks/add; the 202 body."""
    status, body = await http.request("POST", "/tasks/add", BODY)
    if status != 202:
        raise RuntimeError(f"submit answered {status}: {body!r}")
    accepted: dict[str, str] = orjson.loads(body)
    return accepted


async def via_one_socket(http: RawHttp, ws_base: str) -> float:
    """Seconds from submit to SUCCESS on a per-task WebSocket opened after the 202."""
    start = time.perf_counter()
    task = await submit(http)
    async with websockets.connect(f"{ws_base}{task['ws_url']}?token={task['token']}") as socket:
        async for message in socket:
            if orjson.loads(message)["state"] in TERMINAL:
                return time.perf_counter() - start
    raise RuntimeError("the socket closed before the terminal event")


async def via_mux(http: RawHttp, socket: websockets.ClientConnection) -> float:
    """Seconds from submit to SUCCESS on the shared ``/ws`` connection."""
    start = time.perf_counter()
    task = await submit(http)
    frame = {"op": "subscribe", "task_id": task["task_id"], "token": task["token"], "since": 0}
    await socket.send(orjson.dumps(frame).decode())
    while True:
        event = orjson.loads(await socket.recv())
        if event.get("task_id") == task["task_id"] and event.get("state") in TERMINAL:
            return time.perf_counter() - start


async def via_polling(http: RawHttp, interval: float = 0.1) -> float:
    """Seconds from submit to a terminal answer of ``GET /tasks/{id}`` polled every ``interval``."""
    start = time.perf_counter()
    task = await submit(http)
    while True:
        _, body = await http.request("GET", task["status_url"])
        if orjson.loads(body)["state"] in TERMINAL:
            return time.perf_counter() - start
        await asyncio.sleep(interval)


def via_celery(celery: Celery) -> float:
    """Seconds from send_task to AsyncResult.get() returning (the result backend's pub/sub)."""
    start = time.perf_counter()
    celery.send_task("add", args=[2, 3]).get(timeout=30)
    return time.perf_counter() - start


async def measure(redis_url: str, tasks: int, poll_tasks: int, warmup: int) -> dict[str, list[float]]:
    """Latencies in ms per path."""
    with api_service(redis_url) as api, worker_process(redis_url, concurrency=2):
        celery = plain_celery(redis_url)
        http = await RawHttp.connect(api.base)

        async def baseline() -> float:
            return via_celery(celery)

        async with websockets.connect(f"{api.ws}/ws") as mux:
            paths: dict[str, Callable[[], Awaitable[float]]] = {
                BASELINE: baseline,
                MUX: lambda: via_mux(http, mux),
                ONE: lambda: via_one_socket(http, api.ws),
            }
            for path in paths.values():  # connections, imports, worker pool warm
                for _ in range(warmup):
                    await path()
            results: dict[str, list[float]] = {label: [] for label in [*paths, POLL]}
            order = list(paths)
            for index in range(tasks):
                rotated = order[index % len(order) :] + order[: index % len(order)]
                for label in rotated:
                    results[label].append(await paths[label]() * 1000)
            for _ in range(poll_tasks):
                results[POLL].append(await via_polling(http) * 1000)
        await http.close()
        celery.close()
    return results


def report(results: dict[str, list[float]], options: argparse.Namespace) -> str:
    """The markdown section."""
    base50 = percentile(results[BASELINE], 50)
    lines = [
        "## Latency: submit → terminal event",
        "",
        f"`python -m bench.latency --tasks {options.tasks} --poll-tasks {options.poll_tasks}` — `add(2, 3)`, "
        f"one at a time, interleaved task by task with the baseline; one worker (prefork, concurrency 2), "
        f"one API process, private Redis; {provenance()}; {platform.machine()}, "
        f"{dt.date.today().isoformat()}.",
        "",
        "| path | tasks | p50 ms | p95 ms | p99 ms | p50 - baseline | × baseline p50 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, values in results.items():
        p50, p95, p99 = (percentile(values, q) for q in (50, 95, 99))
        lines.append(
            f"| {label} | {len(values)} | {p50:.2f} | {p95:.2f} | {p99:.2f} | "
            f"{p50 - base50:+.2f} ms | {p50 / base50:.2f} |"
        )
    best = min((MUX, ONE), key=lambda label: percentile(results[label], 50))
    gap = percentile(results[best], 50) - base50
    verdict = "meets" if gap <= 1.0 else "misses"
    lines += [
        "",
        f"Baseline is the first row. Best svc path: {best}, p50 **{gap:+.2f} ms** from "
        f"`AsyncResult.get()` ({verdict} the target of ≤ 1 ms). Both svc paths include the HTTP submit "
        "(uvicorn + validation + one Redis round trip) where Celery's client enqueues straight to Redis.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per WebSocket path and the baseline")
    parser.add_argument("--poll-tasks", type=int, default=200, help="tasks for the polling path")
    parser.add_argument("--warmup", type=int, default=20)
    options = parser.parse_args()
    with private_redis() as server:
        results = uvloop.run(measure(server.url, options.tasks, options.poll_tasks, options.warmup))
    text = report(results, options)
    print(text)
    write_section("latency", text)


if __name__ == "__main__":
    main()
