"""Many watched tasks through a failover: what tests/test_sentinel.py and tests/test_cluster.py both run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import websockets

from .conftest import Service


@dataclass
class Failover:
    """What the watchers of one run saw around a master's death."""

    watchers: int
    finished_before_kill: int  # watchers done when the master was killed (fewer than all: mid-run)
    not_recovered: int  # frames marked "recovered": false (what the failover really lost)
    missing: int  # PROGRESS steps (1 … n) a watcher never got (lost, or coalesced for a slow socket)
    duplicated: int  # PROGRESS steps a watcher got twice (a publish retried after its reply was lost)


async def watch_through(
    api: Service, tasks: int, task: str, body: dict[str, Any], kill: Callable[[], Awaitable[None]]
) -> Failover:
    """Submit ``tasks`` tasks (``body``'s first argument: the PROGRESS steps each reports), watch each on
    its own socket, ``kill()`` once the first PROGRESS is out; return once every watcher has its terminal
    frame, each checked to come once, in seq order."""
    progress_seen = asyncio.Event()
    finished = 0

    async def follow(submitted: dict[str, Any]) -> list[dict[str, Any]]:
        nonlocal finished
        frames = []
        url = f"{api.ws_url}/ws/tasks/{submitted['task_id']}?token={submitted['token']}"
        async with websockets.connect(url) as socket:
            async for raw in socket:
                frames.append(json.loads(raw))
                if frames[-1]["state"] == "PROGRESS":
                    progress_seen.set()
        finished += 1
        return frames

    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
        submitted = []
        for _ in range(tasks):
            answer = await http.post(f"/tasks/{task}", json=body)
            assert answer.status_code == 202, answer.text
            submitted.append(answer.json())
    watchers = [asyncio.create_task(follow(one)) for one in submitted]
    async with asyncio.timeout(60):
        await progress_seen.wait()
    finished_before_kill = finished
    await kill()
    async with asyncio.timeout(180):
        results = await asyncio.gather(*watchers)
    not_recovered = missing = duplicated = 0
    for frames in results:
        steps = [frame["progress"]["current"] for frame in frames if frame["state"] == "PROGRESS"]
        missing += len(set(range(1, body["args"][0] + 1)) - set(steps))
        duplicated += len(steps) - len(set(steps))
        states = [frame["state"] for frame in frames]
        assert states[-1] == "SUCCESS" and states.count("SUCCESS") == 1, states
        seqs = [frame["seq"] for frame in frames if frame["seq"]]
        assert seqs == sorted(set(seqs)), seqs
        not_recovered += sum(1 for frame in frames if frame.get("recovered") is False)
    return Failover(len(results), finished_before_kill, not_recovered, missing, duplicated)
