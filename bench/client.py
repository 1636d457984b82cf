"""The Python client (svc.client) watching many tasks on its one socket: events per second it takes.

    python -m bench.client [--tasks 1000] [--rounds 2]

One private redis-server, one ``svc api``. Each round submits ``--tasks`` ``add`` tasks to a queue no
worker consumes yet, watches them all, then starts a worker (prefork, concurrency 2) on that queue and
times the delivery from the worker's start to the last terminal event:

- svc.client: one ``AsyncClient``, ``await task.result()`` for every task (one ``/ws``, a handle each,
  each frame checked for order and kept in its handle's history);
- baseline, same run: a bare ``websockets`` client on one ``/ws`` that subscribes the same way and only
  counts frames until every terminal event came.

Reported: events received, events/s over the delivery, and the client process's CPU µs per event.
Delivery speed is the worker's (it makes the events); CPU per event is the client's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import orjson
import uvloop
import websockets

from bench.common import TERMINAL, api_service, private_redis, provenance, worker_process, write_section
from svc.client import AsyncClient, AsyncTask

SVC = "svc.client `AsyncClient` (handles, order checks, history)"
RAW = "bare `websockets` on `/ws` (counts frames)"
Watch = Callable[[list[AsyncTask], Callable[[], Awaitable[float]]], Awaitable[tuple[int, float]]]


async def held(client: AsyncClient, tasks: int, queue: str) -> list[AsyncTask]:
    """``tasks`` add tasks sent to ``queue``, which no worker consumes yet."""
    return [await client.submit("add", args=[n, 1], options={"queue": queue}) for n in range(tasks)]


async def with_client(
    base: str, handles: list[AsyncTask], start: Callable[[], Awaitable[float]]
) -> tuple[int, float]:
    """Watch every task on one AsyncClient, start the worker, wait for every result: (events, seconds)."""
    async with AsyncClient(base) as client:
        mine = [client.task(handle.id, handle.token) for handle in handles]
        waiting = [asyncio.ensure_future(handle.result(timeout=300)) for handle in mine]
        deadline = time.monotonic() + 60
        while sum(1 for handle in mine if handle.last_seq) < len(mine):  # each one's PENDING came
            if time.monotonic() > deadline:
                raise RuntimeError("the client's subscriptions did not all answer")
            await asyncio.sleep(0.01)
        began = await start()
        await asyncio.gather(*waiting)
        return sum(len(handle.history) for handle in mine), time.monotonic() - began


async def with_raw_socket(
    ws_base: str, handles: list[AsyncTask], start: Callable[[], Awaitable[float]]
) -> tuple[int, float]:
    """The baseline: one bare /ws, a subscribe frame each, frames counted until every terminal event."""
    frames, left = 0, {handle.id for handle in handles}
    async with websockets.connect(f"{ws_base}/ws", max_size=None) as socket:
        for handle in handles:
            frame = {"op": "subscribe", "task_id": handle.id, "token": handle.token, "since": 0}
            await socket.send(orjson.dumps(frame).decode())
        pending = len(handles)
        while pending:  # each task's PENDING comes back first: subscribed
            if orjson.loads(await socket.recv()).get("state") == "PENDING":
                pending -= 1
                frames += 1
        began = await start()
        while left:
            frame = orjson.loads(await socket.recv())
            frames += 1
            if frame.get("state") in TERMINAL:
                left.discard(frame["task_id"])
    return frames, time.monotonic() - began


async def measure(redis_url: str, tasks: int, rounds: int) -> dict[str, list[tuple[int, float, float]]]:
    """(events, seconds, client CPU seconds) per round, for each way of watching."""
    results: dict[str, list[tuple[int, float, float]]] = {SVC: [], RAW: []}
    with api_service(redis_url) as api:
        ways: dict[str, Watch] = {
            SVC: lambda handles, start: with_client(api.base, handles, start),
            RAW: lambda handles, start: with_raw_socket(api.ws, handles, start),
        }
        async with AsyncClient(api.base, timeout=60) as submitter:
            for _ in range(rounds):
                for label, watch in ways.items():
                    queue = f"client-{uuid.uuid4().hex[:8]}"
                    handles = await held(submitter, tasks, queue)
                    with contextlib.ExitStack() as workers:

                        async def start(queue: str = queue, workers: contextlib.ExitStack = workers) -> float:
                            """Start the worker (in a thread: it waits for its heartbeat) and return when
                            it is ready."""
                            await asyncio.to_thread(
                                workers.enter_context, worker_process(redis_url, "-Q", queue)
                            )
                            return time.monotonic()

                        cpu = time.process_time()
                        count, seconds = await watch(handles, start)
                        results[label].append((count, seconds, time.process_time() - cpu))
    return results


def report(results: dict[str, list[tuple[int, float, float]]], options: argparse.Namespace) -> str:
    """The markdown section."""
    lines = [
        "## Python client: 1,000 tasks on one socket"
        if options.tasks == 1000
        else f"## Python client: {options.tasks:,} tasks on one socket",
        "",
        f"`python -m bench.client --tasks {options.tasks} --rounds {options.rounds}` — `add` tasks held in a "
        "queue until every one is watched, then one worker (prefork, concurrency 2) runs them; delivery "
        "timed from the worker's start to the last terminal event; medians of the rounds; private Redis, "
        f"one `svc api`; {provenance()}; {platform.machine()}, {dt.date.today().isoformat()}.",
        "",
        "| watcher | events received | events / s | client CPU µs / event |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, rows in results.items():
        events = statistics.median(row[0] for row in rows)
        rate = statistics.median(row[0] / row[1] for row in rows)
        cpu = statistics.median(row[2] / row[0] * 1e6 for row in rows)
        lines.append(f"| {label} | {events:,.0f} | {rate:,.0f} | {cpu:.1f} |")
    lines += [
        "",
        "Events / s is the worker's pace (it makes the events); the client's own cost is its CPU per event, "
        "the submit round trips before the clock starts excluded. Both watchers got every terminal event.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    with private_redis() as server:
        results = uvloop.run(measure(server.url, options.tasks, options.rounds))
    text = report(results, options)
    print(text)
    write_section("client", text)


if __name__ == "__main__":
    main()
