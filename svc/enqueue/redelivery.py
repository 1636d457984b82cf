"""Resend task messages that were lost between a Redis broker and the worker that popped them.

kombu's Redis transport takes a message with ``BRPOP`` and records it as unacknowledged only once the
worker has read the reply. A message popped in the instant a Redis shuts down, or a connection dies, is
then in no queue, not in ``unacked`` and in no worker: lost, although Redis persisted the pop (seen with
AOF and ``appendfsync always``: one task in 200 across a restart).

svc's atomic submit keeps a copy of each message it pushes, in the task's hash (``message``, ``queue``,
``tag``), and the task's id in ``{ns}:unclaimed``, until the task's first event after PENDING (a worker
has it). This sweeper, run by every API process (one at a time, under a lock), looks at tasks that have
been waiting longer than ``SVC_REDELIVER_AFTER`` seconds: one whose message is still in its queue or in
``unacked`` is waiting its turn; one whose message is in neither is marked, and if it is still nowhere
``SVC_REDELIVER_AFTER`` seconds later (far longer than any message spends on the wire), its copy is
pushed back onto its queue. A task may therefore run twice after a broker failure (Celery's own
at-least-once rule); its events never show a second terminal state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from svc.wire import events

log = logging.getLogger("svc.enqueue.redelivery")

BATCH = 100  # candidates looked at per sweep

# KEYS[1] unclaimed ids; ARGV[1] seconds a task must have waited, ARGV[2] how many ids at most.
# The ids waiting longer, oldest first.
CANDIDATES_SCRIPT = """
local now = redis.call('TIME')
local before = tonumber(now[1]) + tonumber(now[2]) / 1000000 - tonumber(ARGV[1])
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', before, 'LIMIT', 0, tonumber(ARGV[2]))
"""

# KEYS[1] the task's hash, KEYS[2] unclaimed ids, KEYS[3] kombu's unacked hash; ARGV[1] the task id.
# Returns what became of it: claimed (a worker has it, or nothing to resend), waiting (in its queue or
# unacked), missing (nowhere: marked, looked at again later) or resent.
CHECK_SCRIPT = """
local task = redis.call('HMGET', KEYS[1], 'state', 'message', 'queue', 'tag', 'missing')
local now = redis.call('TIME')
local stamp = tonumber(now[1]) + tonumber(now[2]) / 1000000
if task[1] ~= 'PENDING' or not task[2] or not task[3] then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 'claimed'
end
if (task[4] and redis.call('HEXISTS', KEYS[3], task[4]) == 1)
    or redis.call('LPOS', task[3], task[2], 'RANK', -1) then
  redis.call('HDEL', KEYS[1], 'missing')
  redis.call('ZADD', KEYS[2], stamp, ARGV[1])
  return 'waiting'
end
redis.call('ZADD', KEYS[2], stamp, ARGV[1])
if not task[5] then
  redis.call('HSET', KEYS[1], 'missing', 1)
  return 'missing'
end
redis.call('HDEL', KEYS[1], 'missing')
redis.call('LPUSH', task[3], task[2])
return 'resent'
"""


class Redelivery:
    """The sweeper of one API process; ``start`` runs it every ``interval`` seconds until ``stop``."""

    def __init__(self, redis: aioredis.Redis, namespace: str, after: float, unacked_key: str) -> None:
        self.redis = redis
        self.namespace = namespace
        self.after = after
        self.interval = max(0.5, min(after / 2, 10.0))
        self.unacked_key = unacked_key
        self.owner = uuid.uuid4().hex
        self.resent = 0  # messages this process pushed back
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Sweep in the background."""
        self._task = asyncio.create_task(self._run(), name="redelivery")

    async def stop(self) -> None:
        """Stop sweeping."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except RedisError as exc:
                log.warning("event=redelivery_failed error=%r", exc)
            except Exception:  # never let one bad record stop the sweeper for good
                log.exception("event=redelivery_failed")

    async def sweep(self) -> dict[str, int]:
        """Look at the tasks that have waited longest, if no other process is doing so; what became of
        each, counted by outcome."""
        lock = f"{events.unclaimed_key(self.namespace)}:sweeper"
        if not await self.redis.set(lock, self.owner, nx=True, px=int(self.interval * 1000)):
            return {}
        unclaimed = events.unclaimed_key(self.namespace)
        ids: list[Any] = await self.redis.eval(CANDIDATES_SCRIPT, 1, unclaimed, self.after, BATCH)
        outcomes: dict[str, int] = {}
        for raw in ids:
            task_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            keys = (events.task_key(self.namespace, task_id), unclaimed, self.unacked_key)
            outcome = await self.redis.eval(CHECK_SCRIPT, 3, *keys, task_id)
            outcome = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome == "resent":
                self.resent += 1
                log.warning("event=task_redelivered task_id=%s", task_id)
        return outcomes
