"""Which Redis configurations svc supports, checked against the Redis it is given.

svc supports a Redis that never evicts keys: with ``maxmemory`` set, only ``maxmemory-policy noeviction``
(a write past the limit then fails loudly and the submit answers 503). Under an evicting policy Redis
drops whatever it picks, svc's histories, idempotency keys and task counters included, and queued task
messages too: replays enqueue again, late watchers find nothing, guarantees silently stop holding. Such a
Redis makes the API not ready (/readyz says why) and is logged when the API starts.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import ResponseError


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
