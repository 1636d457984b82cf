"""Fan-out: 1,000 / 5,000 / 10,000 concurrent WebSocket subscribers on one server process.

    python -m bench.fanout [--subscribers 1000,5000,10000] [--tasks 100] [--clients 4]
                           [--servers svc,ceiling,socketio,broadcaster]

Per size and server, a fresh server process and a private Redis. The servers (``--servers``):

- ``svc``: ``svc api`` itself;
- ``ceiling``: bench/ceiling.py, each event's frame encoded once and written to every socket's
  transport, none of svc's guarantees;
- ``socketio``: python-socketio on its Redis manager (bench/peers/socketio_server.py), which the
  clients speak Socket.IO to (Engine.IO v4 over the WebSocket transport) and leave after the terminal
  event, as socket.io clients do;
- ``broadcaster``: encode/broadcaster's Redis backend under Starlette (bench/peers/broadcaster_server.py),
  as shipped, subscribe race and all: frames it loses show in the "got terminal" column.

For all but ``svc`` the tasks are still submitted through a ``svc api`` beside the server, whose CPU
is not counted. Each row's CPU per frame is also given as a multiple of the ceiling's at that size.

1. submit ``--tasks`` `add` tasks to a queue no worker consumes yet (``options.queue``);
2. ``--clients`` client processes (asyncio + websockets, each from its own 127.0.0.x address) open one
   socket per subscriber (``/ws/tasks/{id}``, or for ``socketio`` ``/socket.io/`` and a ``watch``
   emit), subscribers spread evenly over the tasks, and wait for each socket's first event (PENDING,
   from the history): now every subscriber is idle and watching;
3. the server's RSS (VmRSS) before vs after step 2 gives the memory per idle subscriber, and Redis's
   CLIENT LIST the connections the servers hold (all of them but ours at that point);
4. a raw ``redis.asyncio`` SUBSCRIBE client joins the tasks' channels (the baseline: what Redis alone
   delivers), then a worker starts on the queue; every live frame's delay is the receive time minus
   the event's ``ts`` (set by the worker when it publishes), on the same clock.

Completeness: every subscriber must receive its task's terminal event.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import importlib.metadata
import platform
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
import uvloop
import websockets
from websockets.asyncio.client import ClientConnection

from bench.common import (
    NAMESPACE,
    PEERS,
    TERMINAL,
    Api,
    Profile,
    api_service,
    ceiling_service,
    cpu_seconds,
    peer_service,
    percentile,
    private_redis,
    provenance,
    py_spy,
    raise_nofile,
    rss_kib,
    start_clients,
    worker_process,
    write_section,
)

DELIVERY_TIMEOUT = 120.0
FIRST_EVENT_TIMEOUT = 60.0  # a socket's handshake done, how long its first event may take to come
# ``svc-ws``: svc api again, its subscribers on the multiplexed ``/ws`` (a subscribe frame each, and the
# client closes after the terminal event) instead of ``/ws/tasks/{id}``.
MULTIPLEXED = "svc-ws"
# ``svc-2``: `svc api --workers 2`, its subscribers on ``/ws/tasks/{id}`` as for ``svc``: the scaling of one
# machine's API over two processes (CPU and memory are the two processes' and their parent's).
TWO_PROCESSES = "svc-2"
SERVERS = ("svc", MULTIPLEXED, TWO_PROCESSES, "ceiling", *PEERS)
# The one server whose clients speak Socket.IO (Engine.IO v4 over the WebSocket transport, straight
# away: no polling first); every other one serves svc's plain /ws/tasks/{id} frames.
SOCKETIO = "socketio"
SOCKETIO_PATH = "/socket.io/?EIO=4&transport=websocket"
# The library whose version a row's server is, for the report.
LIBRARIES = {"socketio": "python-socketio", "broadcaster": "broadcaster"}


@dataclass
class Outcome:
    """What one size measured."""

    subscribers: int
    tasks: int
    server: str = "svc"
    connected: int = 0
    terminals: int = 0
    svc_delays: list[float] = field(default_factory=list)
    redis_delays: list[float] = field(default_factory=list)
    rss_before: int = 0
    rss_after: int = 0
    redis_clients: int = 0
    redis_pubsub: int = 0
    connect_seconds: float = 0.0
    connect_cpu: float = 0.0  # the serving process's CPU seconds while the subscribers connected
    deliver_seconds: float = 0.0
    deliver_cpu: float = 0.0  # the API process's CPU seconds from the worker's start to the last report
    errors: list[str] = field(default_factory=list)
    profile: Profile | None = None

    @property
    def cpu_per_frame_us(self) -> float:
        """The API's CPU per live frame delivered (its pub/sub reads, sends and closes included)."""
        return self.deliver_cpu / max(len(self.svc_delays), 1) * 1e6

    @property
    def handshakes_per_cpu_second(self) -> float:
        """Subscribers connected (handshake, checks, subscribe, history, first frame) per second of the
        server's CPU: the rate one process sustains when the clients are elsewhere."""
        return self.connected / self.connect_cpu if self.connect_cpu else 0.0

    @property
    def kib_per_subscriber(self) -> float:
        """API memory per idle subscriber."""
        return (self.rss_after - self.rss_before) / max(self.connected, 1)


# client processes -------------------------------------------------------------------------------


class UnexpectedPacket(Exception):
    """A Socket.IO server sent something else than its handshake's next packet."""

    def __init__(self, expected: str, packet: str) -> None:
        super().__init__(f"expected a {expected!r} packet, got {packet[:80]!r}")
        self.expected, self.packet = expected, packet


def watch_url(ws_base: str, server: str, task_id: str, token: str) -> str:
    """Where a subscriber of ``server`` connects to watch ``task_id``."""
    if server == SOCKETIO:
        return ws_base + SOCKETIO_PATH
    if server == MULTIPLEXED:
        return f"{ws_base}/ws?token={token}"
    return f"{ws_base}/ws/tasks/{task_id}?token={token}"


def _text(message: str | bytes) -> str:
    return message if isinstance(message, str) else message.decode()


async def start_watching(socket: ClientConnection, server: str, task_id: str, token: str) -> None:
    """Nothing for a plain ``/ws/tasks/{id}`` socket; on ``/ws``, the subscribe frame; for Socket.IO,
    the Engine.IO open packet (``0{…}``), the namespace connect (``40`` → ``40{…}``), then
    ``42["watch", task_id]``."""
    if server == MULTIPLEXED:
        await socket.send(orjson.dumps({"op": "subscribe", "task_id": task_id, "token": token}).decode())
    if server != SOCKETIO:
        return
    opened = _text(await socket.recv())
    if not opened.startswith("0"):
        raise UnexpectedPacket("0", opened)
    await socket.send("40")
    connected = _text(await socket.recv())
    while connected == "2":  # a ping may come first on a slow start
        await socket.send("3")
        connected = _text(await socket.recv())
    if not connected.startswith("40"):
        raise UnexpectedPacket("40", connected)
    await socket.send("42" + orjson.dumps(["watch", task_id]).decode())


async def task_events(
    socket: ClientConnection, server: str
) -> AsyncGenerator[tuple[float, dict[str, Any]], None]:
    """Each event the server sends, with the time it was received, until the server ends the watch.
    Socket.IO: Engine.IO pings (``2``) are answered (``3``), ``42["event", {…}]`` frames are events,
    a ``41`` (the server disconnected the namespace) ends the stream."""
    async for message in socket:
        received = time.time()
        if server != SOCKETIO:
            event = orjson.loads(message)
            if "op" in event:  # svc's {"op": "error"} frame
                raise UnexpectedPacket("event", _text(message))
            yield received, event
            continue
        packet = _text(message)
        if packet == "2":
            await socket.send("3")
        elif packet.startswith("42"):
            name, *args = orjson.loads(packet[2:])
            if name == "event":
                yield received, args[0]
        elif packet.startswith("41"):
            return


async def stop_watching(socket: ClientConnection, server: str) -> None:
    """What a client does after its terminal event, before closing its WebSocket: nothing for a plain
    socket (the server closes ``/ws/tasks/{id}``; on ``/ws`` the client's close follows), a Socket.IO
    disconnect (``41``) for ``socketio``."""
    if server == SOCKETIO:
        with contextlib.suppress(websockets.ConnectionClosed):
            await socket.send("41")


def client_process(
    pipe: Connection, ws_base: str, jobs: list[tuple[str, str]], source: str, server: str
) -> None:
    """Entry point of one client process: watch every job's task, report readiness, then the results."""
    uvloop.run(_watch_all(pipe, ws_base, jobs, source, server))


async def _watch_all(
    pipe: Connection, ws_base: str, jobs: list[tuple[str, str]], source: str, server: str
) -> None:
    delays: list[float] = []
    terminals = 0
    errors: list[str] = []
    gate = asyncio.Semaphore(64)  # handshakes in flight: keep under the server's accept backlog
    loop = asyncio.get_running_loop()
    watching = [loop.create_future() for _ in jobs]

    async def watch(task_id: str, token: str, first: asyncio.Future[bool]) -> None:
        nonlocal terminals
        url = watch_url(ws_base, server, task_id, token)
        try:
            async with gate:
                socket = await websockets.connect(
                    url, local_addr=(source, 0), open_timeout=120, ping_interval=None, compression=None
                )
            async with socket, contextlib.aclosing(task_events(socket, server)) as stream:
                async with asyncio.timeout(FIRST_EVENT_TIMEOUT):
                    await start_watching(socket, server, task_id, token)
                    first_event = await anext(stream, None)  # the history's PENDING
                if first_event is None:
                    errors.append("closed before the first event")
                    return
                first.set_result(True)
                async for received, event in stream:
                    delays.append(received - event["ts"])
                    if event["state"] in TERMINAL:
                        terminals += 1
                        await stop_watching(socket, server)
                        return
        except (OSError, TimeoutError, websockets.WebSocketException, UnexpectedPacket) as exc:
            errors.append(repr(exc))
        finally:
            if not first.done():
                first.set_result(False)

    tasks = [asyncio.create_task(watch(*job, first)) for job, first in zip(jobs, watching, strict=True)]
    connected = sum(await asyncio.gather(*watching))
    pipe.send(("ready", connected))
    _, pending = await asyncio.wait(tasks, timeout=DELIVERY_TIMEOUT)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    pipe.send(("done", terminals, delays, errors[:5], len(errors)))


# the benchmark -----------------------------------------------------------------------------------


async def submit_held(base: str, ws_base: str, count: int, queue: str, server: str) -> list[tuple[str, str]]:
    """``count`` add tasks sent to ``queue`` (which no worker consumes yet): (task_id, token) each; the
    WebSocket path of ``server`` at ``ws_base`` is warmed with one of them."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        held = []
        for index in range(count):
            response = await http.post("/tasks/add", json={"args": [index, 1], "options": {"queue": queue}})
            response.raise_for_status()
            body = response.json()
            held.append((body["task_id"], body["token"]))
        # warm the WebSocket path so that its one-off imports and caches are not counted per subscriber
        task_id, token = held[0]
        async with (
            asyncio.timeout(FIRST_EVENT_TIMEOUT),
            websockets.connect(watch_url(ws_base, server, task_id, token)) as socket,
            contextlib.aclosing(task_events(socket, server)) as stream,
        ):
            await start_watching(socket, server, task_id, token)
            await anext(stream)
    return held


async def redis_baseline(redis_url: str, task_ids: list[str], delays: list[float]) -> None:
    """Subscribe to the tasks' channels with plain redis.asyncio and record each message's delay."""
    from svc.wire import events

    client = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(*(events.task_channel(NAMESPACE, task_id) for task_id in task_ids))
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                delays.append(time.time() - orjson.loads(message["data"])["ts"])
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


async def api_redis_connections(redis_url: str) -> tuple[int, int]:
    """Redis clients other than this one (all the API's, at that point) and how many are pub/sub."""
    client = aioredis.Redis.from_url(redis_url)
    mine = await client.client_id()
    others = [entry for entry in await client.client_list() if int(entry["id"]) != mine]
    await client.aclose()
    pubsub = [entry for entry in others if int(entry.get("sub", 0)) > 0 or int(entry.get("psub", 0)) > 0]
    return len(others), len(pubsub)


async def measure(
    redis_url: str,
    api: Api,
    subscribers: int,
    tasks: int,
    clients: int,
    profile: bool,
    served: Api,
    server: str,
) -> Outcome:
    """One size, on a fresh server process: tasks submitted through ``api``, watched on ``served``."""
    outcome = Outcome(subscribers, tasks, server)
    queue = f"fanout-{uuid.uuid4().hex[:8]}"
    held = await submit_held(api.base, served.ws, tasks, queue, server)
    api = served  # from here on: the server the clients watch, its memory and CPU
    gc.collect()
    await asyncio.sleep(0.5)
    outcome.rss_before = rss_kib(api.pid)
    jobs = [held[index % tasks] for index in range(subscribers)]
    connect_cpu_before = cpu_seconds(api.pid)
    started = time.perf_counter()
    pipes, processes = start_clients(client_process, api.ws, jobs, clients, server)
    loop = asyncio.get_running_loop()
    try:
        for pipe in pipes:
            _, connected = await loop.run_in_executor(None, pipe.recv)
            outcome.connected += connected
        outcome.connect_seconds = time.perf_counter() - started
        outcome.connect_cpu = cpu_seconds(api.pid) - connect_cpu_before
        await asyncio.sleep(1.0)  # let the API settle before reading its memory
        outcome.rss_after = rss_kib(api.pid)
        outcome.redis_clients, outcome.redis_pubsub = await api_redis_connections(redis_url)
        channels = [task_id for task_id, _ in held]
        baseline = asyncio.create_task(redis_baseline(redis_url, channels, outcome.redis_delays))
        await asyncio.sleep(0.5)
        with contextlib.ExitStack() as stack:
            spy = stack.enter_context(py_spy(api.pid, 6)) if profile else []
            worker = worker_process(redis_url, "-Q", queue)
            cpu_before = cpu_seconds(api.pid)
            await asyncio.to_thread(stack.enter_context, worker)
            started = time.perf_counter()
            for pipe in pipes:
                _, terminals, delays, errors, error_count = await loop.run_in_executor(None, pipe.recv)
                outcome.terminals += terminals
                outcome.svc_delays.extend(delays)
                outcome.errors.extend(errors)
                if error_count > len(errors):
                    outcome.errors.append(f"… {error_count - len(errors)} more")
            outcome.deliver_seconds = time.perf_counter() - started
            outcome.deliver_cpu = cpu_seconds(api.pid) - cpu_before
            await asyncio.sleep(0.5)
            baseline.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await baseline
            await asyncio.to_thread(stack.close)
        if spy:
            outcome.profile = spy[0]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    return outcome


def run_size(
    subscribers: int, tasks: int, clients: int, profile: bool = False, server: str = "svc", **api_env: str
) -> Outcome:
    """Measure one size on a private Redis and a fresh API process (and, for any ``server`` but
    ``svc``, that server beside it: the ceiling or a peer)."""
    with contextlib.ExitStack() as stack:
        redis_server = stack.enter_context(private_redis())
        workers = 2 if server == TWO_PROCESSES else 1
        api = stack.enter_context(api_service(redis_server.url, workers=workers, **api_env))
        if server == "ceiling":
            served = stack.enter_context(ceiling_service(redis_server.url))
        elif server in PEERS:
            served = stack.enter_context(peer_service(server, redis_server.url))
        else:
            served = api
        return uvloop.run(
            measure(redis_server.url, api, subscribers, tasks, clients, profile, served, server)
        )


def ms(values: list[float], q: float) -> str:
    """The q-th percentile in ms, or a dash."""
    return f"{percentile(values, q) * 1000:.1f}" if values else "-"


SERVER_PROSE = {
    "svc": "`svc` is `svc api` itself",
    "svc-2": "`svc-2` is `svc api --workers 2`, two processes on one port, each its own bridge (CPU and "
    "memory are the two processes' and their parent's)",
    "svc-ws": "`svc-ws` is `svc api` with its subscribers on the multiplexed `/ws` (a subscribe frame "
    "each; the client closes after the terminal event)",
    "ceiling": "`ceiling` is bench/ceiling.py (each event's frame encoded once and written to every "
    "socket's transport; no framework, none of svc's guarantees)",
    "socketio": "`socketio` is python-socketio {version} on its Redis manager under uvicorn "
    "(bench/peers/socketio_server.py; the manager's client allowed past redis-py 8's default cap of 100 "
    "connections, which its publishes hit): clients speak Socket.IO to it (Engine.IO v4 over the WebSocket "
    "transport, a `watch` emit), a relay psubscribed to the task channels emits each event to the "
    "task's room through the manager (which also publishes it for other server processes), and each "
    "client disconnects itself after its terminal event",
    "broadcaster": "`broadcaster` is encode/broadcaster {version}'s Redis backend with a Starlette "
    "endpoint under uvicorn (bench/peers/broadcaster_server.py), in its documented usage and as "
    "shipped: one subscription context per socket, an unbounded queue each, and subscribe races that "
    "lose frames, worse with redis-py 8, whose first subscribe stops the backend's listener until a "
    "later one wakes it (lost frames show in got terminal)",
}


def describe_servers(servers: list[str]) -> str:
    """One sentence on each server measured, with the version of a peer's library."""
    parts = []
    for server in servers:
        library = LIBRARIES.get(server)
        version = importlib.metadata.version(library) if library else ""
        parts.append(SERVER_PROSE[server].format(version=version))
    return "; ".join(parts) + "."


# The BENCHMARKS.md sections a run may write (``--section``), with their headings: the comparison of
# every server, and a run of svc's one process against two kept beside it.
SECTIONS = {
    "fanout": "## Fan-out: concurrent WebSocket subscribers on one server process (or two: `svc-2`)",
    "fanout-scaling": "## Fan-out scaling: `svc api` with one process and with two (`svc-2`), same run",
}


def report(outcomes: list[Outcome], options: argparse.Namespace) -> str:
    """The markdown section."""
    servers = list(dict.fromkeys(out.server for out in outcomes))
    lines = [
        SECTIONS[options.section],
        "",
        f"`python -m bench.fanout --subscribers {options.subscribers} --tasks {options.tasks} "
        f"--clients {options.clients} --servers {options.servers}"
        + ("" if options.section == "fanout" else f" --section {options.section}")
        + "` — subscribers spread evenly over "
        f"{options.tasks} `add` tasks held "
        f"in a queue until everyone watches; {options.clients} client processes; a fresh server process "
        f"per size and server; one worker (concurrency 2); {provenance()}; {platform.machine()}, "
        f"{dt.date.today().isoformat()}. {describe_servers(servers)} Every server but `svc`, `svc-ws` and "
        "`svc-2` has a `svc api` beside it that takes the submits; only the serving process is measured. "
        "Delay = client receive time minus the event's `ts` (worker's publish), over every live frame "
        "(RECEIVED, STARTED, SUCCESS). Baseline: one raw `redis.asyncio` SUBSCRIBE client on the same "
        "channels, same run. Server CPU per frame: the serving process's CPU time over the delivery "
        "(pub/sub reads, frame sends, closing handshakes) divided by the live frames its clients "
        "received; × ceiling divides it by the ceiling's at the same size. Handshakes / CPU s: subscribers "
        "connected (upgrade, checks, subscribe, history read, first frame) per second of the serving "
        "process's CPU over the connect phase, the rate one process sustains with its clients elsewhere; "
        "connect s is the wall time, with the clients on the same 2 cores.",
        "",
        "| server | subscribers | watching | got terminal | p50 / p99 ms | Redis-only p50 / p99 ms "
        "| p50 × Redis | server CPU µs / frame | × ceiling | KiB / idle sub | Redis conns (pub/sub) "
        "| connect s | handshakes / CPU s | deliver s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    ceilings = {out.subscribers: out.cpu_per_frame_us for out in outcomes if out.server == "ceiling"}
    for out in outcomes:
        ceiling = ceilings.get(out.subscribers)
        times = f"{out.cpu_per_frame_us / ceiling:.1f}" if ceiling else "-"
        ratio = (
            f"{percentile(out.svc_delays, 50) / percentile(out.redis_delays, 50):.0f}"
            if out.svc_delays and out.redis_delays
            else "-"
        )
        lines.append(
            f"| {out.server} | {out.subscribers:,} | {out.connected:,} | {out.terminals:,} | "
            f"{ms(out.svc_delays, 50)} / {ms(out.svc_delays, 99)} | "
            f"{ms(out.redis_delays, 50)} / {ms(out.redis_delays, 99)} | {ratio} | "
            f"{out.cpu_per_frame_us:.0f} | {times} | {out.kib_per_subscriber:.1f} | "
            f"{out.redis_clients} ({out.redis_pubsub}) | "
            f"{out.connect_seconds:.1f} | {out.handshakes_per_cpu_second:,.0f} | {out.deliver_seconds:.1f} |"
        )
    short = [out for out in outcomes if out.terminals < out.subscribers]
    missing = "; ".join(
        f"{out.server} at {out.subscribers:,}: {out.terminals:,} of {out.subscribers:,}" for out in short
    )
    lines += ["", f"Every subscriber got its terminal event: **{f'NO** ({missing})' if short else 'yes**'}."]
    if short:
        lines[-1] += (
            f" The clients of a row short of terminal events waited {DELIVERY_TIMEOUT:.0f} s for the "
            "missing ones: its deliver s is mostly that wait, and its CPU column includes the server's "
            "idle CPU over it."
        )
    svc_rows = [out for out in outcomes if out.server == "svc"]
    if svc_rows:
        biggest = max(svc_rows, key=lambda out: out.subscribers)
        lines[-1] += (
            f" At {biggest.subscribers:,} subscribers svc's API holds "
            f"**{biggest.kib_per_subscriber:.1f} KiB** per idle subscriber (issue 15's target: ≤ 15 KiB) and "
            f"{biggest.redis_pubsub} pub/sub connection to Redis."
        )
    lines[-1] += (
        " A burst of frames queues behind the CPU that sends it and the CPU that reads it: the client "
        "processes share the machine's 2 cores with the server and the worker and take one frame per "
        "subscriber, where the Redis-only column takes each event once; the server's own cost is the "
        'CPU column. "deliver s" runs from starting the worker to the last client\'s report, worker '
        "start-up included. The Redis connections of every server but `svc`, `svc-ws` and `svc-2` include "
        "those of the `svc api` beside it that submitted the tasks; the ceiling's memory per subscriber is "
        "what a socket costs with no framework and no buffers of its own."
    )
    lines += scaling(outcomes)
    for out in outcomes:
        if out.errors:
            lines.append(f"\nClient errors, {out.server} at {out.subscribers:,}: {'; '.join(out.errors[:3])}")
    return "\n".join(lines)


def scaling(outcomes: list[Outcome]) -> list[str]:
    """Lines comparing ``svc-2`` with ``svc`` at each size both were measured at."""
    one = {out.subscribers: out for out in outcomes if out.server == "svc"}
    lines = []
    for two in (out for out in outcomes if out.server == TWO_PROCESSES and out.subscribers in one):
        single = one[two.subscribers]
        p50 = f"p50 {ms(two.svc_delays, 50)} against {ms(single.svc_delays, 50)} ms"
        deliver = f"deliver {two.deliver_seconds:.1f} against {single.deliver_seconds:.1f} s"
        cpu = f"{two.cpu_per_frame_us:.0f} against {single.cpu_per_frame_us:.0f} µs of CPU per frame"
        connect = f"connect {two.connect_seconds:.1f} against {single.connect_seconds:.1f} s"
        lines.append(
            f"\nTwo processes against one at {two.subscribers:,} subscribers: {p50}, {deliver}, {cpu}, "
            f"{connect} (the clients share the same 2 cores, so the wall times cannot show what a second "
            "core of the API's own would give)."
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", default="1000,5000,10000", help="comma-separated sizes")
    parser.add_argument("--tasks", type=int, default=100, help="tasks the subscribers spread over")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument(
        "--servers", default="svc,ceiling", help=f"comma-separated, from: {', '.join(SERVERS)}"
    )
    parser.add_argument(
        "--section", default="fanout", choices=sorted(SECTIONS), help="the BENCHMARKS.md section to write"
    )
    options = parser.parse_args()
    servers = options.servers.split(",")
    unknown = [server for server in servers if server not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s) {', '.join(unknown)} in --servers; choose from {', '.join(SERVERS)}")
    sizes = [int(size) for size in options.subscribers.split(",")]
    raise_nofile(max(sizes))
    outcomes = []
    for size in sizes:
        for server in servers:
            outcome = run_size(size, options.tasks, options.clients, server=server)
            print(
                f"{server} at {size:,} subscribers: {outcome.connected:,} watching, "
                f"{outcome.terminals:,} terminal, {outcome.cpu_per_frame_us:.0f} µs CPU per frame",
                flush=True,
            )
            outcomes.append(outcome)
    text = report(outcomes, options)
    print(text)
    write_section(options.section, text)


if __name__ == "__main__":
    main()
