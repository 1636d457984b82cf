"""Faults found by trying to break svc from outside (issue 13), each against real processes.

- slow HTTP clients: headers or a body that trickle in are cut (408), and one address cannot hold
  more than ``SVC_HTTP_MAX_CONNECTIONS`` HTTP connections (429), so 1,100 slow clients under a
  1,024-descriptor limit starve no one; WebSockets do not count against that limit;
- task tokens never reach uvicorn's log lines, WebSocket handshakes included;
- ``svc dev`` stops everything it started, and removes its temporary folders, when its terminal
  closes (SIGHUP), and its children do not outlive it when it is killed outright.

The API processes here are this file's own: each test starts one with the settings it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from svc.embedded import free_port
from svc.settings import Settings

from .conftest import Service, start_api, submit, svc_env, until, wait_for

LOOPS = ["asyncio", "uvloop"]
OTHER = "127.0.0.2"  # a second client address on the loopback interface
SLOW_START = b"POST /tasks/add HTTP/1.1\r\nHost: x\r\n"
SUBMIT_REST = (
    b'content-type: application/json\r\ncontent-length: 16\r\nconnection: close\r\n\r\n{"args": [1, 2]}'
)


# helpers -----------------------------------------------------------------------------------------


def limit_open_files(count: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child may open at most ``count`` descriptors (soft and hard)."""

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))

    return preexec


def start_edge_api(
    redis_url: str,
    tmp: Path,
    name: str,
    loop: str = "asyncio",
    open_files: int | None = None,
    log_level: str = "warning",
    **env: str,
) -> Service:
    """``svc api`` on ``loop``, optionally under an open-files limit; returns once /healthz answers.

    Its health checks come from 127.0.0.2, so no connection from 127.0.0.1 is open when it returns.
    """
    port = free_port()
    log = tmp / f"{name}.log"
    full_env = svc_env(redis_url, **env)
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "svc",
                "api",
                "--port",
                str(port),
                "--log-level",
                log_level,
                "--loop",
                loop,
            ],
            env=full_env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=tmp,
            preexec_fn=limit_open_files(open_files) if open_files else None,
        )

    def healthy() -> bool:
        try:
            with httpx.Client(transport=httpx.HTTPTransport(local_address=OTHER), timeout=1) as client:
                return client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, 30, f"API {name}", process)
    return Service(process, log, port, full_env)


class Recorder(asyncio.Protocol):
    """A raw client connection: everything it receives, and a future set when the server closes it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.received = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.received.set()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.closed.done():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(port: int, source: str = "127.0.0.1", first: bytes = b"") -> Recorder:
    """A raw TCP connection to the API from ``source`` that sends ``first`` at once."""
    loop = asyncio.get_running_loop()
    _, recorder = await loop.create_connection(Recorder, "127.0.0.1", port, local_addr=(source, 0))
    if first:
        recorder.write(first)
    return recorder


def response_of(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one raw HTTP/1.1 response."""
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole response with a Content-Length."""
    head, found, body = bytes(data).partition(b"\r\n\r\n")
    return bool(found) and len(body) >= int(response_of(head + found)[1]["content-length"])


async def fetch(port: int, request: bytes, source: str = OTHER) -> tuple[int, dict[str, str], bytes]:
    """Send one request on a new connection (it must ask for ``connection: close``), read the answer."""
    connection = await connect(port, source, request)
    await connection.closed
    return response_of(connection.data)


async def settle(api: Service) -> None:
    """Return once the API has taken every connection opened before this call: the kernel hands them
    over in order, so by the time a request on a newer connection is answered, it has seen them all."""
    assert api.port is not None
    status, _, _ = await fetch(api.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n")
    assert status == 200


async def trickle(connection: Recorder, interval: float) -> int:
    """Be a slow client: one more header line every ``interval`` seconds until the server closes the
    connection; returns how many were sent."""
    sent = 0
    while not connection.closed.done():
        await asyncio.wait([connection.closed], timeout=interval)
        if not connection.closed.done():
            connection.write(b"x-slow-%d: y\r\n" % sent)
            sent += 1
    return sent


def assert_problem(data: bytes, status: int) -> dict[str, Any]:
    """The raw response is ``status`` with a problem-details body and ``connection: close``."""
    code, headers, body = response_of(data)
    assert code == status, data
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    problem: dict[str, Any] = json.loads(body)
    assert problem["status"] == status and problem["title"] and problem["type"].startswith("https://")
    return problem


def open_descriptors(pid: int) -> int:
    """How many file descriptors a process holds."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def accepted_connections(pid: int, port: int) -> int:
    """How many TCP connections to ``port`` (not the listening socket) a process holds open: its clients'
    connections, apart from whatever else it has open (its Redis connections come and go with its pools)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
                if local_port == port and state != "0A" and inode in inodes:  # 0A: LISTEN
                    count += 1
    return count


# slow clients ------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("loop", LOOPS)
async def test_headers_that_trickle_in_get_408_and_the_connection_closed(
    loop: str, redis_url: str, session_dir: Path
) -> None:
    api = start_edge_api(
        redis_url, session_dir, f"api-slow-headers-{loop}", loop, SVC_HTTP_HEADER_TIMEOUT="2"
    )
    assert api.port is not None
    try:
        started = time.monotonic()
        connection = await connect(api.port, first=SLOW_START)
        silent = await connect(api.port)  # never sends a byte
        async with asyncio.timeout(30):  # without the guard, the server would wait for ever
            sent = await trickle(connection, 1.0)
            await silent.closed
        elapsed = time.monotonic() - started
        problem = assert_problem(connection.data, 408)
        assert "2 seconds" in problem["detail"]
        assert elapsed >= 2  # not before its time,
        assert sent >= 1  # and a header every second did not reset the clock
        assert silent.data == b""  # no request begun: closed without an answer
        await until(lambda: "event=http_header_timeout client=127.0.0.1" in api.log.read_text(), 10)
    finally:
        api.stop()


@pytest.mark.timeout(90)
async def test_the_header_clock_of_a_later_request_starts_at_its_first_byte(
    redis_url: str, session_dir: Path
) -> None:
    api = start_edge_api(redis_url, session_dir, "api-header-clock", SVC_HTTP_HEADER_TIMEOUT="2")
    assert api.port is not None
    try:
        connection = await connect(api.port, first=b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(30):
            while not complete(connection.data):
                connection.received.clear()
                await connection.received.wait()
        assert response_of(connection.data)[0] == 200
        connection.data.clear()
        # Idle for half the header timeout (uvicorn's keep-alive is 5 s): a clock that ran from the
        # connection, or from the last response, would cut the next request early.
        await asyncio.sleep(1.0)
        first_byte = time.monotonic()
        connection.write(SLOW_START)
        async with asyncio.timeout(30):
            await trickle(connection, 0.5)
        assert time.monotonic() - first_byte >= 2
        assert_problem(connection.data, 408)

        # Empty lines between requests (which the parser skips, and which cancel uvicorn's keep-alive
        # timer) start the next request's clock too.
        connection = await connect(api.port, first=b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(30):
            await connection.received.wait()
            first_byte = time.monotonic()
            while not connection.closed.done():
                connection.write(b"\r\n")
                await asyncio.wait([connection.closed], timeout=0.5)
        assert time.monotonic() - first_byte >= 2
        assert response_of(connection.data)[0] == 200  # the first answer, and nothing after it
        assert connection.data.count(b"HTTP/1.1 ") == 1
    finally:
        api.stop()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("loop", LOOPS)
async def test_a_body_that_trickles_in_is_cut_and_one_sent_in_time_is_served(
    loop: str, redis_url: str, session_dir: Path, worker: Service
) -> None:
    api = start_edge_api(redis_url, session_dir, f"api-slow-body-{loop}", loop, SVC_HTTP_BODY_TIMEOUT="3")
    assert api.port is not None
    head = b"POST /tasks/add HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
    try:
        # in three pieces, well within the timeout: served
        connection = await connect(api.port, first=head + b"content-length: 16\r\nconnection: close\r\n\r\n")
        for piece in (b'{"args"', b": [1, ", b"2]}"):
            await asyncio.sleep(0.2)  # a client on a slow link
            connection.write(piece)
        async with asyncio.timeout(30):
            await connection.closed
        assert response_of(connection.data)[0] == 202

        # a byte every half second: cut when the body timeout is up, whatever the pace of the bytes
        headers_sent = time.monotonic()  # before the server can have them: its 3 s start later
        connection = await connect(api.port, first=head + b"content-length: 100\r\n\r\n{")
        async with asyncio.timeout(30):
            while not connection.closed.done():
                await asyncio.wait([connection.closed], timeout=0.5)
                connection.write(b" ")
        # (an event loop may fire a timer up to a clock tick early: 50 ms allowed for that)
        assert time.monotonic() - headers_sent >= 3 - 0.05
        assert "body" in assert_problem(connection.data, 408)["detail"]
        await until(lambda: "event=http_body_timeout client=127.0.0.1" in api.log.read_text(), 10)
        log = api.log.read_text()
        assert "Traceback" not in log and "Exception in ASGI application" not in log
    finally:
        api.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_1100_slow_clients_of_one_address_under_1024_descriptors_starve_no_one(
    redis_url: str, session_dir: Path, worker: Service
) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"this client needs about 1,200 descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limit = int(Settings.model_fields["http_max_connections"].default)  # the shipped default, 128
    count = 1100
    api = start_edge_api(
        redis_url,
        session_dir,
        "api-flood",
        open_files=1024,
        SVC_HTTP_MAX_CONNECTIONS=str(limit),  # the suite's processes run without it
        SVC_HTTP_HEADER_TIMEOUT="3600",
    )
    assert api.port is not None
    slow: list[Recorder] = []
    try:
        ceiling = 1024 - 64  # descriptors: the process's limit, less room for Redis and the listener
        # Opened in steps of 100, each settled before the next: the kernel completes handshakes before
        # the server accepts, and asyncio accepts up to `backlog` of them before any protocol code
        # runs, so a single burst of more connections than free descriptors would fail accept()
        # whatever the guard does. What is measured here is what they cost once the server has them.
        for _ in range(0, count, 100):
            slow += await asyncio.gather(*(connect(api.port, first=SLOW_START) for _ in range(100)))
            async with asyncio.timeout(60):
                await settle(api)
            held = accepted_connections(api.process.pid, api.port)
            # Checked at each step, so that an unguarded server fails here, before it runs out of
            # descriptors and floods its log.
            assert held <= limit + 8, f"{held} client connections held after {len(slow)} slow clients"
            assert open_descriptors(api.process.pid) < ceiling
        assert held >= limit, f"{held} client connections counted, while the guard keeps {limit}"
        trickles = [asyncio.create_task(trickle(connection, 1.0)) for connection in slow]

        # Meanwhile another client submits and watches its tasks.
        transport = httpx.AsyncHTTPTransport(local_address=OTHER)
        async with httpx.AsyncClient(base_url=api.base_url, transport=transport, timeout=30) as http:
            bodies = [await submit(http, "add", n, 1) for n in range(5)]
        for n, body in enumerate(bodies):
            frames = []
            async with asyncio.timeout(60):
                url = f"{api.ws_url}/ws/tasks/{body['task_id']}"
                async with websockets.connect(url, local_addr=(OTHER, 0)) as socket:
                    frames = [json.loads(message) async for message in socket]
            assert frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == n + 1, frames

        # The connections the server kept finish their request; the others were answered long ago.
        await settle(api)
        for task in trickles:
            task.cancel()
        await asyncio.gather(*trickles, return_exceptions=True)
        for connection in slow:
            connection.write(SUBMIT_REST)
        async with asyncio.timeout(120):
            await asyncio.gather(*(connection.closed for connection in slow))
        statuses = Counter(response_of(connection.data)[0] for connection in slow)
        assert statuses == {202: limit, 429: count - limit}, statuses
        refused = next(connection for connection in slow if response_of(connection.data)[0] == 429)
        assert_problem(refused.data, 429)
        log = api.log.read_text()
        assert "Too many open files" not in log
        assert f"event=http_connection_refused client=127.0.0.1 open={limit}" in log
    finally:
        for connection in slow:
            connection.close()
        api.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("loop", LOOPS)
async def test_websockets_do_not_count_against_the_http_connection_limit(
    loop: str, redis_url: str, session_dir: Path
) -> None:
    api = start_edge_api(
        redis_url,
        session_dir,
        f"api-ws-limit-{loop}",
        loop,
        SVC_HTTP_MAX_CONNECTIONS="4",
        SVC_HTTP_HEADER_TIMEOUT="3600",
    )
    assert api.port is not None
    client = "127.0.0.3"
    partial = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    sockets = []
    try:
        for _ in range(10):  # each handshake completes before the next: upgraded, it stops counting
            sockets.append(await websockets.connect(f"{api.ws_url}/ws", local_addr=(client, 0)))

        async def the_limit_holds() -> None:
            held = [await connect(api.port, client, partial) for _ in range(4)]
            refused = await connect(api.port, client, partial)
            async with asyncio.timeout(30):
                await refused.closed
            assert "4 open connections" in assert_problem(refused.data, 429)["detail"]
            with pytest.raises(InvalidStatus) as handshake:  # a handshake is HTTP until it upgrades
                await websockets.connect(f"{api.ws_url}/ws", local_addr=(client, 0), open_timeout=30)
            assert handshake.value.response.status_code == 429
            for connection in held:  # the four were kept, not refused: they are served
                connection.write(b"connection: close\r\n\r\n")
            async with asyncio.timeout(30):
                await asyncio.gather(*(connection.closed for connection in held))
            assert [response_of(connection.data)[0] for connection in held] == [200] * 4

        await the_limit_holds()
        async with asyncio.timeout(30):
            pongs = [await socket.ping() for socket in sockets]
            await asyncio.gather(*pongs)  # all ten are still open
        for socket in sockets:
            await socket.close()
        await settle(api)
        await the_limit_holds()  # closing the WebSockets and the four did not skew the count
    finally:
        for socket in sockets:
            await socket.close()
        api.stop()


# tokens in uvicorn's log lines --------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_tokens_are_redacted_from_websocket_handshake_and_request_lines(
    redis_url: str, session_dir: Path, worker: Service
) -> None:
    api = start_api(redis_url, session_dir, name="api-redact", log_level="info")
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            body = await submit(http, "add", 2, 3)
            task_id, token = body["task_id"], body["token"]
            async with asyncio.timeout(30):
                async with websockets.connect(f"{api.ws_url}/ws/tasks/{task_id}?token={token}") as socket:
                    frames = [json.loads(message) async for message in socket]
            assert frames[-1]["state"] == "SUCCESS"
            with pytest.raises(InvalidStatus):
                await websockets.connect(f"{api.ws_url}/ws/nowhere?token={token}")
            assert (await http.get(f"/tasks/{task_id}", params={"token": token})).status_code == 200
        logged = [
            f'"WebSocket /ws/tasks/{task_id}?token=',
            '"WebSocket /ws/nowhere?token=',
            f'"GET /tasks/{task_id}?token=',
        ]
        await until(lambda: all(line in api.log.read_text() for line in logged), 10, "the three log lines")
        log = api.log.read_text()
        assert token not in log
        assert f'"WebSocket /ws/tasks/{task_id}?token=[redacted]" [accepted]' in log
        assert '"WebSocket /ws/nowhere?token=[redacted]" 403' in log
        assert f'"GET /tasks/{task_id}?token=[redacted] HTTP/1.1" 200' in log
    finally:
        api.stop()


# svc dev ----------------------------------------------------------------------------------------


def process_tree(root: int) -> dict[int, str]:
    """``root`` and every process descended from it (sessions of their own included): pid -> cmdline."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])  # the command name may hold spaces
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        try:
            tree[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        todo += children.get(pid, [])
    return tree


def wait_all_exit(pidfds: dict[int, int], timeout: float) -> dict[int, float]:
    """Wait until every process (by pidfd) has exited; returns when each was seen gone."""
    poller = select.poll()
    for fd in pidfds.values():
        poller.register(fd, select.POLLIN)
    by_fd = {fd: pid for pid, fd in pidfds.items()}
    gone: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(gone) < len(pidfds):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for fd, _ in poller.poll(remaining * 1000):
            gone[by_fd[fd]] = time.monotonic()
            poller.unregister(fd)
    return gone


class Dev:
    """A running ``svc dev`` with its own Redis, its TMPDIR and its whole process tree."""

    def __init__(self, tmp: Path) -> None:
        self.tmpdir = tmp / "tmp"
        self.tmpdir.mkdir()
        self.log = tmp / "dev.log"
        self.port = free_port()
        env = svc_env("redis://unused", TMPDIR=str(self.tmpdir))
        del env["SVC_REDIS_URL"]  # so that it starts a private one
        with self.log.open("wb") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "svc", "dev", "--port", str(self.port)],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=tmp,
            )
        self.tree: dict[int, str] = {}
        self.pidfds: dict[int, int] = {}

    def wait_ready(self) -> None:
        """Until /readyz answers 200 (Redis, broker and a fresh worker heartbeat); then note the tree."""

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 120, "svc dev ready", self.process)
        self.tree = process_tree(self.process.pid)
        self.pidfds = {pid: os.pidfd_open(pid) for pid in self.tree}
        commands = list(self.tree.values())
        assert any("redis-server" in command for command in commands), commands
        for part in ("svc api", "svc beat"):
            assert sum(part in command for command in commands) == 1, commands
        assert sum("svc worker" in command for command in commands) >= 3, commands  # with its pool

    def pid_of(self, part: str) -> int:
        return next(pid for pid, command in self.tree.items() if part in command)

    def close(self) -> None:
        """Kill whatever of the tree is left (a failed test) and close the pidfds."""
        for fd in self.pidfds.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    running = Dev(tmp_path)
    try:
        running.wait_ready()
        yield running
    finally:
        running.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_svc_dev_stops_everything_and_cleans_up_when_its_terminal_closes(dev: Dev) -> None:
    os.killpg(dev.process.pid, signal.SIGHUP)  # what a closing terminal sends its foreground group
    gone = wait_all_exit(dev.pidfds, 90)
    assert set(gone) == set(dev.tree), {pid: dev.tree[pid] for pid in set(dev.tree) - set(gone)}
    assert dev.process.wait(timeout=10) == 0
    redis = dev.pid_of("redis-server")
    others = [when for pid, when in gone.items() if pid not in (redis, dev.process.pid)]
    assert gone[redis] >= max(others), "Redis is stopped last"
    assert sorted(dev.tmpdir.iterdir()) == []
    assert "svc dev: stopped" in dev.log.read_text()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_svc_dev_killed_outright_takes_its_children_with_it(dev: Dev) -> None:
    dev.process.kill()
    assert dev.process.wait(timeout=10) == -signal.SIGKILL
    gone = wait_all_exit(dev.pidfds, 90)
    assert set(gone) == set(dev.tree), {pid: dev.tree[pid] for pid in set(dev.tree) - set(gone)}
