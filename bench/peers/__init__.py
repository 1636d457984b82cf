"""Peer servers for bench.fanout: other Python libraries doing svc's ``/ws/tasks/{id}`` job.

Each module is a standalone server, started like bench/ceiling.py:

    python -m bench.peers.<name> --port P --redis URL --namespace NS

It serves a task's recorded history, then its live events from svc's task channel, and the watch ends
after the terminal event, each the way a user of that library would write it. They all run the same
way, as that user would deploy them: uvicorn on uvloop, the sans-I/O ``websockets`` implementation,
per-message-deflate off, and ``{"listening": P}`` printed once the port accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
import uvicorn
import uvloop

from svc.wire import events


@dataclass(frozen=True)
class Options:
    """Where a peer listens and which Redis and svc namespace it reads."""

    port: int
    redis_url: str
    namespace: str


def parse_options(description: str) -> Options:
    """The command line every peer takes: ``--port``, ``--redis`` and ``--namespace``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--namespace", required=True)
    parsed = parser.parse_args()
    return Options(parsed.port, parsed.redis, parsed.namespace)


def history_client(redis_url: str) -> aioredis.Redis:
    """A client for history reads, with the ceiling's pool: a burst of watches waits for one of 64
    connections (redis-py 8's default pool refuses a 101st connection with "Too many connections")."""
    pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=64, socket_timeout=None)
    return aioredis.Redis(connection_pool=pool)


async def history(redis: aioredis.Redis, namespace: str, task_id: str) -> list[bytes]:
    """The task's recorded events, oldest first, each one encoded event (``ZRANGE … 0 -1``)."""
    return cast(list[bytes], await redis.zrange(events.history_key(namespace, task_id), 0, -1))


async def _serve(app: Callable[..., Any], port: int) -> None:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # it failed to start: raise its error
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.02)
    print(orjson.dumps({"listening": port}).decode(), flush=True)
    await serving


def run(app: Callable[..., Any], port: int) -> None:
    """Serve ``app`` on 127.0.0.1:``port`` under uvicorn and uvloop until killed; print
    ``{"listening": port}`` once uvicorn has started (lifespan done, socket bound)."""
    uvloop.run(_serve(app, port))
