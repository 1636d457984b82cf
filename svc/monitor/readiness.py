"""What ``GET /readyz`` checks: Redis and the broker answer, Redis keeps what svc writes (see
svc.monitor.redis_policy), a worker is online."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio.to_thread

from svc.errors import ServiceUnavailable
from svc.monitor.redis_policy import eviction_problem

if TYPE_CHECKING:
    from svc.runtime import Runtime


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
