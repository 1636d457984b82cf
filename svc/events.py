"""The event wire format: schema, Redis key and channel names, and the atomic publish script.

Imported by the worker (publisher) and the API (submit, bridge) alike, so the two sides cannot drift.
Per task, Redis holds:

- ``{ns}:task:{id}``          a hash: ``seq`` (last number given), ``state`` (the newest), ``terminal`` (the
                              final state, once set), ``revoked`` (cancelled by the API), and for a workflow
                              step ``workflow``/``step``; for a workflow ``kind``/``total``/``done``
- ``{ns}:task:{id}:history``  a sorted set of event JSON scored by ``seq``, capped and expiring
- ``{ns}:task:{id}`` channel  a pub/sub notification carrying the same JSON

and across tasks ``{ns}:recent``, a sorted set of the ids with events most recently (scored by Redis's
clock, capped at RECENT_MAX), from which the dashboard loads its table.

The script numbers, stores, trims, expires and publishes in one step, so history and live never disagree.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel

if TYPE_CHECKING:
    from svc.settings import Settings

State = Literal["PENDING", "RECEIVED", "STARTED", "PROGRESS", "RETRY", "SUCCESS", "FAILURE", "REVOKED"]
TERMINAL_STATES: frozenset[str] = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
RECENT_MAX = 10_000  # task ids kept in ``{ns}:recent``


class TaskError(BaseModel):
    """An exception as clients see it: its class name and message, never a traceback."""

    type: str
    message: str


class Progress(BaseModel):
    """How far a task has got, as reported by the task itself."""

    current: float
    total: float | None = None
    message: str | None = None


class Event(BaseModel):
    """One lifecycle step of one task (the SPEC's event)."""

    task_id: str
    name: str | None
    seq: int
    state: State
    ts: float
    result: Any = None
    error: TaskError | None = None
    progress: Progress | None = None
    retries: int = 0
    worker: str | None = None
    recovered: bool | None = None


def task_key(namespace: str, task_id: str) -> str:
    """Hash holding a task's last ``seq`` and its terminal state."""
    return f"{namespace}:task:{task_id}"


def history_key(namespace: str, task_id: str) -> str:
    """Sorted set of a task's events, scored by ``seq``."""
    return f"{namespace}:task:{task_id}:history"


def task_channel(namespace: str, task_id: str) -> str:
    """Pub/sub channel on which a task's events are announced."""
    return f"{namespace}:task:{task_id}"


def recent_key(namespace: str) -> str:
    """Sorted set of the task ids with the newest events, scored by the time of their last event."""
    return f"{namespace}:recent"


def probe_channel(namespace: str, owner: str) -> str:
    """Service channel on which a bridge checks that its own pub/sub connection is alive."""
    return f"{namespace}:probe:{owner}"


def workers_key(namespace: str) -> str:
    """Sorted set of worker hostnames scored by their last heartbeat (unix time)."""
    return f"{namespace}:workers"


def idempotency_key(namespace: str, key: str) -> str:
    """Maps a client's Idempotency-Key to the task id of its first submit."""
    return f"{namespace}:idempotency:{key}"


def channel_task_id(namespace: str, channel: str) -> str | None:
    """The task id of a task channel name, or None for any other channel."""
    prefix = f"{namespace}:task:"
    return channel[len(prefix) :] if channel.startswith(prefix) else None


# KEYS[1] task hash, KEYS[2] history, KEYS[3] recent ids; ARGV[1] channel, ARGV[2] event JSON without seq,
# ARGV[3] history cap, ARGV[4] TTL seconds, ARGV[5] the state if this event is terminal, else "",
# ARGV[6] the state name to record, ARGV[7] publish only if the current state is this ("" = always),
# ARGV[8] the stream id, ARGV[9] how many ids ``recent`` keeps.
# Returns {seq, revoked, workflow id, step}; seq is 0 when nothing was published: the task already
# ended (a duplicate run after a lost ack must never produce a second terminal event, nor events
# after the first one), or its state was not ARGV[7].
PUBLISH_SCRIPT = """
local info = redis.call('HMGET', KEYS[1], 'revoked', 'workflow', 'step', 'state')
if redis.call('HEXISTS', KEYS[1], 'terminal') == 1 or (ARGV[7] ~= '' and info[4] ~= ARGV[7]) then
  return {0, info[1], info[2], info[3]}
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSET', KEYS[1], 'state', ARGV[6])
local event = '{"seq":' .. seq .. ',' .. string.sub(ARGV[2], 2)
redis.call('ZADD', KEYS[2], seq, event)
local cap = tonumber(ARGV[3])
local size = redis.call('ZCARD', KEYS[2])
if size > cap then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, size - cap - 1) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'terminal', ARGV[5]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local now = redis.call('TIME')
redis.call('ZADD', KEYS[3], tonumber(now[1]) + tonumber(now[2]) / 1000000, ARGV[8])
local keep = tonumber(ARGV[9])
if redis.call('ZCARD', KEYS[3]) > keep + 256 then redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -keep - 1) end
redis.call('PUBLISH', ARGV[1], event)
return {seq, info[1], info[2], info[3]}
"""


def _default(value: object) -> str:
    return repr(value)


def encode_body(
    task_id: str,
    name: str | None,
    state: str,
    *,
    result: Any = None,
    error: BaseException | dict[str, str] | None = None,
    progress: dict[str, Any] | None = None,
    retries: int = 0,
    worker: str | None = None,
    ts: float | None = None,
    **extra: Any,
) -> bytes:
    """Serialise an event without its ``seq`` (the publish script splices the number in first)."""
    if isinstance(error, BaseException):
        error = describe_error(error)
    body = {
        "task_id": task_id,
        "name": name,
        "state": state,
        "ts": round(time.time() if ts is None else ts, 6),
        "result": result,
        "error": error,
        "progress": progress,
        "retries": retries,
        "worker": worker,
        **extra,
    }
    return orjson.dumps(body, default=_default, option=orjson.OPT_NON_STR_KEYS)


def describe_error(exc: BaseException) -> dict[str, str]:
    """The client-facing shape of an exception: class name and message only."""
    return {"type": type(exc).__name__, "message": str(exc)}


def publish_args(
    namespace: str,
    task_id: str,
    state: str,
    body: bytes,
    cap: int,
    ttl: int,
    *,
    terminal: bool | None = None,
    only_if: str = "",
) -> tuple[list[str], list[str | bytes | int]]:
    """KEYS and ARGV for PUBLISH_SCRIPT (``terminal`` defaults to whether ``state`` is terminal)."""
    ends = state in TERMINAL_STATES if terminal is None else terminal
    keys = [task_key(namespace, task_id), history_key(namespace, task_id), recent_key(namespace)]
    args: list[str | bytes | int] = [
        task_channel(namespace, task_id),
        body,
        cap,
        ttl,
        state if ends else "",
        state,
        only_if,
        task_id,
        RECENT_MAX,
    ]
    return keys, args


def publish_command(
    settings: Settings, stream_id: str, state: str, body: bytes, *, only_if: str = ""
) -> tuple[Any, ...]:
    """The EVAL command that publishes ``body`` (for pipelines; EVAL so a restarted Redis never
    answers NOSCRIPT — Redis caches the script by its hash)."""
    keys, args = publish_args(
        settings.namespace,
        stream_id,
        state,
        body,
        settings.history_max,
        settings.history_ttl,
        only_if=only_if,
    )
    return ("EVAL", PUBLISH_SCRIPT, len(keys), *keys, *args)


def revoked_error(reason: str) -> dict[str, str]:
    """The ``error`` of a REVOKED event: why it was revoked (revoked, terminated or expired)."""
    return {"type": "TaskRevokedError", "message": reason}


def parse(raw: bytes | str) -> dict[str, Any]:
    """Decode one event frame."""
    value = orjson.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("an event is a JSON object")
    return value


def with_recovered_false(raw: bytes) -> bytes:
    """The same event marked ``"recovered": false``: the history could not prove there was no gap."""
    event = parse(raw)
    event["recovered"] = False
    return orjson.dumps(event)
