"""Per-client submit rate limit, shared by every API process: GCRA in one Lua script on Redis's clock.

Each client (an API key, or the client's IP with auth off) may submit ``rate`` tasks a second on
average and ``burst`` at once; past that, 429 with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import math

from svc.batcher import AnyBatcher
from svc.errors import RateLimited

# KEYS[1] the client's theoretical arrival time (ms); ARGV[1] ms per request, ARGV[2] burst window (ms).
# Returns 0 when allowed, else the milliseconds to wait.
GCRA_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local interval, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - window > now then return tat - window - now end
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil(next_tat - now) + 1000)
return 0
"""


def client_key(namespace: str, identity: str) -> str:
    """Redis key of a client's rate state (the identity is hashed: API keys never reach Redis)."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
    return f"{namespace}:rate:{digest}"


class RateLimiter:
    """Checks and counts one submit per call; disabled when ``rate`` is 0."""

    def __init__(self, batcher: AnyBatcher, namespace: str, rate: float, burst: int) -> None:
        self.batcher = batcher
        self.namespace = namespace
        self.interval_ms = 1000.0 / rate if rate > 0 else 0.0
        self.window_ms = self.interval_ms * burst

    async def check(self, identity: str) -> None:
        """Count a submit for ``identity``; raise RateLimited (429) when over the limit."""
        if not self.interval_ms:
            return
        command = (
            "EVAL",
            GCRA_SCRIPT,
            1,
            client_key(self.namespace, identity),
            self.interval_ms,
            self.window_ms,
        )
        (wait_ms,) = await self.batcher.execute(command)
        if int(wait_ms) > 0:
            retry_after = max(1, math.ceil(int(wait_ms) / 1000))
            raise RateLimited("too many submits: slow down", retry_after=retry_after)
