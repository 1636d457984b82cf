"""What ``GET /readyz`` checks: Redis and the broker answer, Redis keeps what svc writes, a worker is online.

svc supports a Redis that never evicts keys: with ``maxmemory`` set, only ``maxmemory-policy noeviction``
(a write past the limit then fails loudly and the submit answers 503). Under an evicting policy Redis
drops whatever it picks, svc's histories, idempotency keys and task counters included, and queued task
messages too: replays enqueue again, late watchers find nothing, guarantees silently stop holding. Such a
Redis makes the API not ready, with the reason, and is logged at startup.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from svc.errors import ServiceUnavailable

if TYPE_CHECKING:
    from svc.runtime import Runtime

log = logging.getLogger("svc.readiness")


async def eviction_problem(client: aioredis.Redis) -> str | None:
    """Why ``client``'s Redis may evict svc's keys, or None when it will not (or cannot be asked:
    managed services that disable CONFIG are taken at their word)."""
    try:
        limit = await client.config_get("maxmemory")
        policy = await client.config_get("maxmemory-policy")
    except ResponseError:
        return None
    if int(limit.get("maxmemory", 0) or 0) == 0:
        return None
    name = policy.get("maxmemory-policy", "noeviction")
    if name == "noeviction":
        return None
    return (
        f"Redis evicts keys (maxmemory-policy {name} with maxmemory set): svc needs noeviction, or no"
        " maxmemory, to keep task histories, idempotency keys and queued tasks"
    )


async def check(runtime: Runtime) -> dict[str, Any]:
    """The readiness answer; raises ServiceUnavailable (503) with the first reason the API is not ready."""
    try:
        await runtime.redis.ping()
        problem = await eviction_problem(runtime.redis)
        workers = await runtime.online_workers()
        submitter = runtime.submitter
        if submitter.broker_is_redis:
            await submitter.broker_redis.ping()
            if problem is None and submitter.broker_redis is not runtime.redis:
                problem = await eviction_problem(submitter.broker_redis)
        else:
            await anyio.to_thread.run_sync(_ping_broker, runtime)
    except Exception as exc:  # any failure to reach a dependency means not ready
        raise ServiceUnavailable(f"a dependency is unreachable: {type(exc).__name__}") from None
    if problem is not None:
        raise ServiceUnavailable(problem)
    if not workers:
        raise ServiceUnavailable("no worker is online")
    return {"status": "ready", "workers": workers, "bridge_connected": runtime.bridge.connected.is_set()}


def _ping_broker(runtime: Runtime) -> None:
    with runtime.app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=runtime.settings.redis_timeout)
