"""`svc api --workers N`: N processes on one port, each with its own bridge; a parent that restarts a
process that dies and stops them all gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from .conftest import Service, free_port, spawn, svc_env, wait_for, wait_until_answers

pytestmark = pytest.mark.timeout(90)


def children_of(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (Linux /proc)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def established_on(pid: int, port: int) -> int:
    """How many established TCP connections process ``pid`` holds on local ``port``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                count += 1
    return count


@pytest.fixture
def two_processes(redis_url: str, session_dir: Path, worker: Service) -> Iterator[Service]:
    port = free_port()
    log = session_dir / f"api-workers-{port}.log"
    env = svc_env(redis_url)
    process = spawn(["api", "--port", str(port), "--workers", "2", "--log-level", "warning"], env, log)
    service = Service(process, log, port, env)
    wait_until_answers(f"{service.base_url}/healthz", process, "svc api --workers 2")
    wait_for(lambda: len(children_of(process.pid)) == 2, 30, "two API processes", process)
    yield service
    service.stop()


async def watch_to_the_end(service: Service, task: dict[str, str]) -> tuple[list[str], int | None]:
    """The states a /ws/tasks/{id} socket receives, and its close code."""
    states = []
    async with websockets.connect(f"{service.ws_url}{task['ws_url']}?token={task['token']}") as socket:
        async with asyncio.timeout(30):
            async for raw in socket:
                states.append(json.loads(raw)["state"])
        return states, socket.close_code


async def test_two_processes_share_the_port_and_each_delivers_every_event(two_processes: Service) -> None:
    parent = two_processes.process.pid
    async with httpx.AsyncClient(base_url=two_processes.base_url, timeout=10) as http:
        # Each socket is held open (a slow task) until both processes have been seen holding some.
        tasks = [(await http.post("/tasks/sleep", json={"args": [3]})).json() for _ in range(24)]
    watchers = [asyncio.create_task(watch_to_the_end(two_processes, task)) for task in tasks]
    port = two_processes.port
    assert port is not None

    def both_hold_sockets() -> bool:
        held = [established_on(child, port) for child in children_of(parent)]
        return len(held) == 2 and sum(held) >= 24 and min(held) > 0

    # Which process holds a socket is the kernel's state, with nothing to await: it is polled.
    await asyncio.to_thread(wait_for, both_hold_sockets, 20, "both processes holding sockets")
    results = await asyncio.gather(*watchers)
    for states, code in results:
        assert states[0] == "PENDING" and states[-1] == "SUCCESS" and code == 1000, states


async def test_a_process_that_dies_is_started_again_and_sigterm_stops_them_all(
    two_processes: Service,
) -> None:
    parent = two_processes.process.pid
    first, second = children_of(parent)
    os.kill(first, signal.SIGKILL)
    wait_for(
        lambda: len(children_of(parent)) == 2 and first not in children_of(parent),
        30,
        "a new API process in place of the killed one",
        two_processes.process,
    )
    async with httpx.AsyncClient(base_url=two_processes.base_url, timeout=10) as http:
        task = (await http.post("/tasks/sleep", json={"args": [30]})).json()
    async with websockets.connect(f"{two_processes.ws_url}{task['ws_url']}?token={task['token']}") as socket:
        async with asyncio.timeout(10):
            assert json.loads(await socket.recv())["state"] == "PENDING"
        os.kill(parent, signal.SIGTERM)  # the parent alone: it stops each process once
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(20):
                while True:
                    await socket.recv()
        assert socket.close_code == 1001
    assert await asyncio.to_thread(two_processes.process.wait, 20) == 0
    assert not await asyncio.to_thread(os.path.exists, f"/proc/{second}")  # the parent waited for it


def test_workers_must_be_a_whole_number_of_at_least_one(redis_url: str, session_dir: Path) -> None:
    for value in ("0", "two"):
        log = session_dir / f"api-workers-bad-{value}.log"
        process = spawn(["api", "--workers", value], svc_env(redis_url), log)
        assert process.wait(timeout=30) == 2
        assert "--workers" in log.read_text()


def test_a_port_in_use_is_one_line_and_exit_code_one(redis_url: str, session_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = session_dir / f"api-workers-taken-{port}.log"
        process = spawn(["api", "--workers", "2", "--port", str(port)], svc_env(redis_url), log)
        assert process.wait(timeout=30) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in log.read_text()
