"""What ``GET /readyz`` checks: Redis and the broker answer, Redis keeps what svc writes (see
svc.monitor.redis_policy), a worker is online."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import redis.asyncio as aioredis
from celery import Celery

from svc.errors import ServiceUnavailable
from svc.monitor.redis_policy import eviction_problem
from svc.redis_clients import AsyncClient


async def check(
    redis: AsyncClient,
    eviction: Callable[[], Awaitable[str | None]],
    broker_redis: aioredis.Redis | None,
    app: Celery,
    broker_timeout: float,
    online_workers: Callable[[], Awaitable[list[str]]],
    bridge_connected: bool,
) -> dict[str, Any]:
    """The readiness answer; raises ServiceUnavailable (503) with the first reason the API is not ready.
    ``broker_redis`` is the broker's client when the broker is Redis, else None (then ``app``'s broker
    connection is tried, in a thread, for at most ``broker_timeout`` seconds); ``eviction`` says why the
    events Redis (each primary of a cluster) may evict svc's keys, or None."""
    try:
        await redis.ping()
        problem = await eviction()
        workers = await online_workers()
        if broker_redis is not None:
            await broker_redis.ping()
            if problem is None and broker_redis is not redis:
                problem = await eviction_problem(broker_redis)
        else:
            await anyio.to_thread.run_sync(_ping_broker, app, broker_timeout)
    except Exception as exc:  # any failure to reach a dependency means not ready
        raise ServiceUnavailable(f"a dependency is unreachable: {type(exc).__name__}") from None
    if problem is not None:
        raise ServiceUnavailable(problem)
    if not workers:
        raise ServiceUnavailable("no worker is online")
    return {"status": "ready", "workers": workers, "bridge_connected": bridge_connected}


def _ping_broker(app: Celery, timeout: float) -> None:
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout)
