"""Reconnect storm: `svc api` restarted under thousands of resuming subscribers.

    python -m bench.storm [--subscribers 10000] [--tasks 100] [--clients 4]

1. a private Redis and one `svc api` on a fixed port; ``--tasks`` `add` tasks held in a queue no worker
   consumes yet; ``--clients`` client processes open one ``/ws/tasks/{id}`` socket per subscriber and
   wait for each one's first event (PENDING);
2. the API is stopped (SIGTERM: every socket gets its 1001) and every subscriber starts to resume the
   way svc's SDKs do: reconnect with ``since`` = the last seq it has, after a full-jitter backoff
   (svc.backoff.Reconnects: 0.1 s doubling, at most 2 s);
3. while the API is down, a worker runs every task: their RECEIVED, STARTED and SUCCESS are recorded in
   Redis and published to nobody;
4. a new `svc api` starts on the same port: every subscriber reconnects, reads what it missed from the
   history (one batched read per burst, svc/batcher.py) and gets its terminal event.

Reported: how many subscribers ended with every seq from 1 to their terminal event exactly once (lost
and duplicated seqs counted over all of them), the time from starting the new API to the last terminal
event (its own start-up given apart), the new API's CPU over that time, and the reconnect attempts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import platform
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import orjson
import redis
import uvloop
import websockets

from bench.common import (
    NAMESPACE,
    TERMINAL,
    api_service,
    cpu_seconds,
    private_redis,
    provenance,
    raise_nofile,
    start_clients,
    worker_process,
    write_section,
)
from bench.fanout import submit_held
from svc.backoff import Reconnects
from svc.embedded import free_port
from svc.wire import events

READY_TIMEOUT = 120.0
CATCH_UP_TIMEOUT = 180.0
BACKOFF_BASE, BACKOFF_CAP = 0.1, 2.0


@dataclass
class Resumed:
    """One subscriber's watch across the restart: every seq it received, in order."""

    seqs: list[int] = field(default_factory=list)
    attempts: int = 0  # connections opened or tried after the first
    finished_at: float | None = None  # wall time of its terminal event

    def lost(self) -> int:
        """Seqs between 1 and the terminal event's that never arrived."""
        return len(set(range(1, max(self.seqs, default=0) + 1)) - set(self.seqs))

    def duplicated(self) -> int:
        """Seqs that arrived more than once."""
        return len(self.seqs) - len(set(self.seqs))


async def resume_until_terminal(
    ws_base: str, task_id: str, token: str, source: str, first: asyncio.Future[bool]
) -> Resumed:
    """Watch ``task_id`` until its terminal event, reconnecting with ``since`` after every loss."""
    resumed = Resumed()
    reconnects = Reconnects(base=BACKOFF_BASE, cap=BACKOFF_CAP)
    while True:
        since = max(resumed.seqs, default=0)
        url = f"{ws_base}/ws/tasks/{task_id}?token={token}&since={since}"
        with contextlib.suppress(OSError, TimeoutError, websockets.WebSocketException):
            async with websockets.connect(
                url, local_addr=(source, 0), open_timeout=60, ping_interval=None, compression=None
            ) as socket:
                reconnects.connected()
                async for message in socket:
                    event = orjson.loads(message)
                    resumed.seqs.append(event["seq"])
                    if not first.done():
                        first.set_result(True)
                    if event["state"] in TERMINAL:
                        resumed.finished_at = time.time()
                        return resumed
        resumed.attempts += 1
        await asyncio.sleep(reconnects.next_delay())


def client_process(pipe: Connection, ws_base: str, jobs: list[tuple[str, str]], source: str) -> None:
    """One client process: watch every job, report once all are watching, then report the results."""
    uvloop.run(_watch_all(pipe, ws_base, jobs, source))


async def _watch_all(pipe: Connection, ws_base: str, jobs: list[tuple[str, str]], source: str) -> None:
    loop = asyncio.get_running_loop()
    firsts = [loop.create_future() for _ in jobs]
    gate = asyncio.Semaphore(100)  # handshakes in flight at once, per process, for the first connect

    async def watch(task_id: str, token: str, first: asyncio.Future[bool]) -> Resumed:
        async with gate:
            opened = asyncio.ensure_future(resume_until_terminal(ws_base, task_id, token, source, first))
            await asyncio.wait([first, opened], return_when=asyncio.FIRST_COMPLETED)
        return await opened

    watches = [asyncio.ensure_future(watch(*job, first)) for job, first in zip(jobs, firsts, strict=True)]
    await asyncio.gather(*firsts)
    pipe.send(("ready", len(jobs)))
    results = await asyncio.gather(*watches)
    pipe.send(("done", [(r.seqs, r.attempts, r.finished_at) for r in results]))


@dataclass
class Storm:
    """What one restart cost and lost."""

    subscribers: int
    complete: int = 0  # every seq from 1 to the terminal one, once
    lost: int = 0
    duplicated: int = 0
    attempts: int = 0
    start_seconds: float = 0.0  # the new API's start-up, until /healthz answers
    catch_up_seconds: float = 0.0  # new API started -> the last subscriber's terminal event
    cpu_seconds: float = 0.0  # the new API's, over the catch-up


def all_finished(client: redis.Redis, task_ids: list[str], namespace: str = NAMESPACE) -> bool:
    """True once every task's recorded history ends with a terminal event."""
    pipe = client.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.zrange(events.history_key(namespace, task_id), -1, -1)
    return all(last and orjson.loads(last[0])["state"] in TERMINAL for last in pipe.execute())


def run(subscribers: int, tasks: int, clients: int) -> Storm:
    """One storm on a private Redis (steps 1-4 of the module docstring)."""
    storm = Storm(subscribers)
    port = free_port()
    queue = f"storm-{uuid.uuid4().hex[:8]}"
    with private_redis() as server, contextlib.ExitStack() as stack:
        first_api = stack.enter_context(contextlib.ExitStack())
        api = first_api.enter_context(api_service(server.url, port=port))
        held = uvloop.run(submit_held(api.base, api.ws, tasks, queue, "svc"))
        jobs = [held[index % tasks] for index in range(subscribers)]
        pipes, processes = start_clients(client_process, api.ws, jobs, clients)
        for process in processes:
            stack.callback(process.kill)
        for pipe in pipes:
            if not pipe.poll(READY_TIMEOUT):
                raise RuntimeError("subscribers did not all connect")
            pipe.recv()
        first_api.close()  # SIGTERM: 1001 to every socket, and the subscribers start resuming
        stack.enter_context(worker_process(server.url, "-Q", queue))
        client = redis.Redis.from_url(server.url)
        task_ids = [task_id for task_id, _ in held]
        deadline = time.monotonic() + READY_TIMEOUT
        while not all_finished(client, task_ids):
            if time.monotonic() > deadline:
                raise RuntimeError("the tasks did not finish while the API was down")
            time.sleep(0.1)
        client.close()
        started = time.time()
        api = stack.enter_context(api_service(server.url, port=port))
        storm.start_seconds = time.time() - started
        cpu_before = cpu_seconds(api.pid)
        finished: list[float] = []
        for pipe in pipes:
            if not pipe.poll(CATCH_UP_TIMEOUT):
                raise RuntimeError("subscribers did not all get their terminal event")
            _, results = pipe.recv()
            for seqs, attempts, finished_at in results:
                resumed = Resumed(seqs, attempts, finished_at)
                storm.lost += resumed.lost()
                storm.duplicated += resumed.duplicated()
                storm.attempts += attempts
                storm.complete += not resumed.lost() and not resumed.duplicated()
                if finished_at is not None:
                    finished.append(finished_at)
        storm.cpu_seconds = cpu_seconds(api.pid) - cpu_before
        storm.catch_up_seconds = max(finished) - started
    return storm


def report(storm: Storm, options: argparse.Namespace) -> str:
    """The markdown section."""
    return "\n".join(
        [
            "## Reconnect storm: the API restarted under resuming subscribers",
            "",
            f"`python -m bench.storm --subscribers {options.subscribers} --tasks {options.tasks} "
            f"--clients {options.clients}` — {provenance()}; {platform.machine()}, "
            f"{dt.date.today().isoformat()}. The subscribers watch `add` tasks held in a queue; `svc api` is "
            "stopped (1001), every task runs meanwhile, and a new `svc api` starts on the same port while "
            f"each subscriber reconnects with `since` (full-jitter backoff, {BACKOFF_BASE} s doubling to "
            f"{BACKOFF_CAP} s). Catch-up runs from starting the new API to the last terminal event, "
            "its start-up included; the CPU is the new API's over it. Target (issue 15): 10,000 caught up "
            "in under 15 s, nothing lost or duplicated.",
            "",
            "| subscribers | complete | lost seqs | duplicated seqs | reconnect attempts | API start s "
            "| catch-up s | API CPU s |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {storm.subscribers:,} | {storm.complete:,} | {storm.lost:,} | {storm.duplicated:,} | "
            f"{storm.attempts:,} | {storm.start_seconds:.1f} | {storm.catch_up_seconds:.1f} | "
            f"{storm.cpu_seconds:.1f} |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    options = parser.parse_args()
    raise_nofile(options.subscribers)
    storm = run(options.subscribers, options.tasks, options.clients)
    text = report(storm, options)
    print(text)
    write_section("storm", text)


if __name__ == "__main__":
    main()
