"""The event wire format: schema, Redis key and channel names, and the atomic publish script.

Imported by the worker (publisher) and the API (submit, bridge) alike, so the two sides cannot drift.
Per task, Redis holds:

- ``{ns}:task:{id}``          a hash: ``seq`` (last number given), ``state`` (the newest), ``terminal`` (the
                              final state, once set), ``revoked`` (cancelled by the API), and for a workflow
                              step ``workflow``/``step``; for a workflow ``kind``/``total``/``done``
- ``{ns}:task:{id}:history``  a sorted set of event JSON scored by ``seq``, capped and expiring
- ``{ns}:task:{id}:stream``   a sorted set of the task's stream chunks (``svc.stream``) scored by ``seq``,
                              with a cap and TTL of its own; the hash adds ``stream_last``/``stream_cut``
                              and a count of stored chunks per running attempt
- ``{ns}:task:{id}`` channel  a pub/sub notification carrying the same JSON (a batch of chunks: one message,
                              the frames joined by newlines)

and across tasks ``{ns}:recent``, a sorted set of the ids with events most recently (scored by Redis's
clock, capped at RECENT_MAX), from which the dashboard loads its table.

The script numbers, stores, trims, expires and publishes in one step, so history and live never disagree.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from svc.keyspace import (
    BUCKETS,
    Layout,
    channel_task_id,
    dead_letter_key,
    history_key,
    idempotency_key,
    probe_channel,
    recent_key,
    stream_key,
    task_channel,
    task_key,
    unclaimed_key,
    workers_key,
)
from svc.wire import jsonvalues

__all__ = [  # the single-Redis names, re-exported for the code and tests that read them from here
    "channel_task_id",
    "dead_letter_key",
    "history_key",
    "idempotency_key",
    "probe_channel",
    "recent_key",
    "stream_key",
    "task_channel",
    "task_key",
    "unclaimed_key",
    "workers_key",
]

if TYPE_CHECKING:
    from svc.settings import Settings

State = Literal["PENDING", "RECEIVED", "STARTED", "PROGRESS", "RETRY", "SUCCESS", "FAILURE", "REVOKED"]
TERMINAL_STATES: frozenset[str] = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
RECENT_MAX = 10_000  # task ids kept in ``{ns}:recent``
DEAD_LETTER_MAX = 10_000  # messages kept in ``{ns}:deadletter``
ONLY_IF_NEW = "NONE"  # the publish script's ``only_if`` for "only if the stream has no event yet"


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
    """One lifecycle step of one task (the SPEC's event): the one declaration of the frame.

    ``encode_body`` writes only these fields (it refuses others), the publish script adds ``seq``, and
    tests/test_wire.py holds every shape svc sends to this model, extra fields forbidden.
    """

    model_config = ConfigDict(extra="forbid")

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
    recovered: bool | None = Field(None, description="false: svc cannot prove no event was missed before it")
    lost: bool | None = Field(None, description="true: neither history nor result backend knows the task")
    result_repr: str | None = Field(None, description="the result's repr when JSON cannot carry it exactly")
    progress_repr: str | None = Field(None, description="the same for a progress report")
    args: str | None = Field(None, description="RECEIVED: a short summary of the arguments")
    runtime: float | None = Field(None, description="SUCCESS/FAILURE: seconds since STARTED")
    eta: str | None = Field(None, description="RETRY: ISO 8601 time of the next attempt")
    retries_exhausted: bool | None = Field(None, description="FAILURE: no retry is left")
    workflow_id: str | None = Field(None, description="a step's event in its workflow's stream")
    step: int | None = Field(None, description="the step's index in its workflow")
    step_seq: int | None = Field(None, description="the step event's own seq")
    steps: list[str] | None = Field(None, description="a workflow's step ids (its PENDING and SUCCESS)")
    failed_task_id: str | None = Field(None, description="the step that ended a workflow early")


EVENT_FIELDS = frozenset(Event.model_fields)
STREAM = "STREAM"  # the delivery state of a stream frame: never terminal, never coalesced or dropped
STREAM_NAME_MAX = 100


class StreamChunk(BaseModel):
    """One chunk of a task's named stream (the SPEC's stream frame): the one declaration of it.

    ``stream_body`` writes it without ``seq``; the stream script numbers it in the task's own ``seq``.
    """

    model_config = ConfigDict(extra="forbid")

    op: Literal["stream"]
    task_id: str
    seq: int
    stream: str = Field(max_length=STREAM_NAME_MAX)
    data: Any = None
    recovered: bool | None = Field(None, description="false: chunks before this one were cut (cap or TTL)")
    workflow_id: str | None = Field(None, description="a step's chunk in its workflow's stream")
    step: int | None = Field(None, description="the step's index in its workflow")
    step_seq: int | None = Field(None, description="the chunk's own seq in the step's stream")


# The body of both scripts below: number, store, trim, expire and announce one event of a stream.
# Returns {seq, revoked, workflow id, step}; seq is 0 when nothing was published: the stream already
# ended (a duplicate run after a lost ack must never produce a second terminal event, nor events after
# the first one), or its state was none of ``only_if`` (comma-separated states, NONE for a stream with no
# event yet; "" = any).
# A task's first event that is not PENDING also ends its wait in ``unclaimed`` (see submit below).
PUBLISH_FUNCTION = """
local function publish(task, history, recent, unclaimed, channel, body, cap, ttl, terminal, state, only_if,
                       stream_id, keep, feed)
  local info = redis.call('HMGET', task, 'revoked', 'workflow', 'step', 'state')
  if redis.call('HEXISTS', task, 'terminal') == 1 then return {0, info[1], info[2], info[3]} end
  if only_if ~= '' and not string.find(',' .. only_if .. ',', ',' .. (info[4] or 'NONE') .. ',', 1, true) then
    return {0, info[1], info[2], info[3]}
  end
  local seq = redis.call('HINCRBY', task, 'seq', 1)
  if seq == 1 then
    -- a new counter beside a surviving history (its hash was deleted or evicted): continue after it,
    -- so that no seq is ever given twice
    local newest = redis.call('ZRANGE', history, -1, -1, 'WITHSCORES')
    if newest[2] then
      seq = tonumber(newest[2]) + 1
      redis.call('HSET', task, 'seq', seq)
    end
  end
  redis.call('HSET', task, 'state', state)
  if info[4] == 'PENDING' and state ~= 'PENDING' then
    redis.call('HDEL', task, 'message', 'queue', 'tag')
    redis.call('ZREM', unclaimed, stream_id)
  end
  local event = '{"seq":' .. seq .. ',' .. string.sub(body, 2)
  redis.call('ZADD', history, seq, event)
  local size = redis.call('ZCARD', history)
  if size > tonumber(cap) then redis.call('ZREMRANGEBYRANK', history, 0, size - tonumber(cap) - 1) end
  if terminal ~= '' then redis.call('HSET', task, 'terminal', terminal) end
  redis.call('EXPIRE', task, ttl)
  redis.call('EXPIRE', history, ttl)
  local now = redis.call('TIME')
  redis.call('ZADD', recent, tonumber(now[1]) + tonumber(now[2]) / 1000000, stream_id)
  if redis.call('ZCARD', recent) > tonumber(keep) + 256 then
    redis.call('ZREMRANGEBYRANK', recent, 0, -tonumber(keep) - 1)
  end
  redis.call('PUBLISH', channel, event)
  if feed ~= '' then redis.call('PUBLISH', feed, event) end
  return {seq, info[1], info[2], info[3]}
end
"""

# KEYS: task hash, history, recent ids, unclaimed ids. ARGV: channel, event JSON without seq, history cap,
# TTL seconds, the state if this event is terminal else "", the state to record, only_if, stream id,
# how many ids ``recent`` keeps, the monitor's feed channel ("" for none: on one Redis the monitor
# pattern-subscribes to the task channels).
PUBLISH_SCRIPT = (
    PUBLISH_FUNCTION
    + """
return publish(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
               ARGV[7], ARGV[8], ARGV[9], ARGV[10])
"""
)

# A submit as one atomic step (a Redis broker that is also the events Redis): claim the Idempotency-Key,
# record PENDING, keep a copy of the message until a worker says it has it (svc.enqueue.redelivery), and
# push it.
# KEYS: task hash, history, recent ids, unclaimed ids, the broker queue's list, the idempotency key ("" when
# the submit has none). ARGV: the publish function's ten, then the message, its delivery tag, the key's
# value and TTL, and "1" to keep the copy ("" not to). Returns false once enqueued, or the value already
# under the idempotency key (and then does nothing). Never run on a cluster: Celery's broker cannot be one.
SUBMIT_SCRIPT = (
    PUBLISH_FUNCTION
    + """
if KEYS[6] ~= '' then
  local existing = redis.call('GET', KEYS[6])
  if existing then return existing end
  redis.call('SET', KEYS[6], ARGV[13], 'EX', ARGV[14])
end
publish(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7],
        ARGV[8], ARGV[9], ARGV[10])
if ARGV[15] == '1' then
  redis.call('HSET', KEYS[1], 'message', ARGV[11], 'queue', KEYS[5], 'tag', ARGV[12])
  local now = redis.call('TIME')
  redis.call('ZADD', KEYS[4], tonumber(now[1]) + tonumber(now[2]) / 1000000, ARGV[8])
end
redis.call('LPUSH', KEYS[5], ARGV[11])
return false
"""
)

SUBMIT_SHA = hashlib.sha1(SUBMIT_SCRIPT.encode()).hexdigest()

# Append a batch of chunks to a task's stream as one atomic step: number them in the task's own seq,
# store, cap, expire, and announce them in one PUBLISH (the frames joined by newlines, which JSON
# frames never hold). A batch is idempotent: ``producer`` (a field of the task hash, one per running
# attempt of the task) counts the chunks of that attempt already stored, and a batch sent again after
# a lost reply stores only those it has not. Nothing is stored once the task has ended.
# The task hash gets ``stream_last`` (the newest chunk's seq) and, once the cap cut chunks,
# ``stream_cut`` (the newest cut chunk's seq): what tells a subscriber that chunks it asked for are gone.
# KEYS: task hash, stream, history. ARGV: channel, cap, stream TTL, history TTL, producer field, the
# producer's index of the batch's first chunk, then the chunks (JSON objects without seq).
# Returns {seq of the last chunk stored (0: none), chunks stored now, workflow id, step}.
STREAM_SCRIPT = """
local task, stream, history = KEYS[1], KEYS[2], KEYS[3]
local cap, first, given = tonumber(ARGV[2]), tonumber(ARGV[6]), #ARGV - 6
local info = redis.call('HMGET', task, 'terminal', ARGV[5], 'workflow', 'step')
local stored = tonumber(info[2] or '0')
if info[1] then return {0, 0, info[3], info[4]} end
local skip = stored - first
if skip < 0 then skip = 0 end
local count = given - skip
if count <= 0 then return {0, 0, info[3], info[4]} end
local last = redis.call('HINCRBY', task, 'seq', count)
if last == count then
  -- a new counter beside surviving records: continue after them, so that no seq is given twice
  local newest = 0
  for _, key in ipairs({history, stream}) do
    local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    if top[2] and tonumber(top[2]) > newest then newest = tonumber(top[2]) end
  end
  if newest > 0 then
    last = newest + count
    redis.call('HSET', task, 'seq', last)
  end
end
local base = last - count
local members, frames = {}, {}
for i = 1, count do
  local seq = base + i
  local frame = '{"seq":' .. seq .. ',' .. string.sub(ARGV[6 + skip + i], 2)
  members[2 * i - 1] = seq
  members[2 * i] = frame
  frames[i] = frame
end
redis.call('ZADD', stream, unpack(members))
local size = redis.call('ZCARD', stream)
if size > cap then
  local cut = redis.call('ZRANGE', stream, size - cap - 1, size - cap - 1, 'WITHSCORES')
  redis.call('ZREMRANGEBYRANK', stream, 0, size - cap - 1)
  redis.call('HSET', task, 'stream_cut', cut[2])
end
redis.call('HSET', task, ARGV[5], first + given, 'stream_last', last)
redis.call('EXPIRE', stream, ARGV[3])
redis.call('EXPIRE', task, ARGV[4])
redis.call('EXPIRE', history, ARGV[4])
redis.call('PUBLISH', ARGV[1], table.concat(frames, '\\n'))
return {last, count, info[3], info[4]}
"""
# The same scripts for a Redis Cluster: sharded pub/sub (``SPUBLISH``), which the shard owning the
# channel's slot delivers, instead of ``PUBLISH``, which a cluster broadcasts to every node.
SHARDED_PUBLISH_SCRIPT = PUBLISH_SCRIPT.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
SHARDED_STREAM_SCRIPT = STREAM_SCRIPT.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")


def publish_script(layout: Layout) -> str:
    """The publish script for ``layout`` (PUBLISH_SCRIPT, or its sharded twin on a cluster)."""
    return SHARDED_PUBLISH_SCRIPT if layout.sharded else PUBLISH_SCRIPT


def stream_script(layout: Layout) -> str:
    """The stream script for ``layout`` (STREAM_SCRIPT, or its sharded twin on a cluster)."""
    return SHARDED_STREAM_SCRIPT if layout.sharded else STREAM_SCRIPT


STREAM_BATCH_MAX = 1000  # chunks per script call (Lua's unpack takes a few thousand values at most)


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
    """Serialise an event without its ``seq`` (the publish script splices the number in first; see
    ``numbered``). ``extra`` may hold only fields of ``Event`` (TypeError otherwise).

    Never fails on a value: what JSON cannot carry exactly is replaced as svc.wire.jsonvalues says (a
    ``result`` of 2**64 becomes ``"result": null, "result_repr": "18446744073709551616"``).
    """
    if extra and not extra.keys() <= EVENT_FIELDS:
        raise TypeError(f"not fields of an event: {sorted(extra.keys() - EVENT_FIELDS)}")
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
    try:
        encoded = jsonvalues.dumps(body)
    except TypeError:  # an integer beyond 64 bits, a lone surrogate
        return jsonvalues.dumps(jsonvalues.carried(body))
    if result is None and progress is None and not extra:
        return encoded  # nothing of the task's own (PENDING, RECEIVED, …): nothing to look into
    values = (result, progress, *extra.values())
    if any(value is not None and jsonvalues.has_non_finite(value) for value in values):
        return jsonvalues.dumps(jsonvalues.carried(body))
    return encoded


def stream_prefix(task_id: str, name: str) -> bytes:
    """The start of every chunk of one stream of one task, up to its ``data`` (see ``stream_body``)."""
    return (
        b'{"op":"stream","task_id":'
        + orjson.dumps(task_id)
        + b',"stream":'
        + orjson.dumps(name)
        + b',"data":'
    )


def stream_body(prefix: bytes, data: bytes) -> bytes:
    """A chunk without its ``seq`` (the stream script numbers it): ``prefix`` (``stream_prefix``) and
    ``data``, already JSON."""
    return prefix + data + b"}"


def step_chunk(body: bytes, workflow_id: str, step: int, step_seq: int) -> bytes:
    """A step's chunk (``stream_body``) as its workflow's stream carries it: with ``workflow_id``,
    ``step`` and the chunk's own seq as ``step_seq``."""
    extra = orjson.dumps({"workflow_id": workflow_id, "step": step, "step_seq": step_seq})
    return body[:-1] + b"," + extra[1:]


def stream_args(
    settings: Settings,
    task_id: str,
    producer: str,
    first: int,
    bodies: list[bytes],
) -> tuple[list[str], list[str | bytes | int]]:
    """KEYS and ARGV for STREAM_SCRIPT: ``bodies`` are chunks ``first``, ``first + 1``, … of ``producer``."""
    layout = settings.layout
    keys = [layout.task_key(task_id), layout.stream_key(task_id), layout.history_key(task_id)]
    args: list[str | bytes | int] = [
        layout.task_channel(task_id),
        settings.stream_max,
        settings.stream_expiry,
        settings.history_ttl,
        producer,
        first,
        *bodies,
    ]
    return keys, args


def is_stream_message(raw: bytes) -> bool:
    """True for a task channel's message of stream chunks (one, or several joined by newlines)."""
    return raw.find(b'"op":"stream"', 0, 48) != -1


def describe_error(exc: BaseException) -> dict[str, str]:
    """The client-facing shape of an exception: class name and message only."""
    return {"type": type(exc).__name__, "message": str(exc)}


def publish_args(
    layout: Layout,
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
    keys = [
        layout.task_key(task_id),
        layout.history_key(task_id),
        layout.recent_key(task_id),
        layout.unclaimed_key(task_id),
    ]
    args: list[str | bytes | int] = [
        layout.task_channel(task_id),
        body,
        cap,
        ttl,
        state if ends else "",
        state,
        only_if,
        task_id,
        RECENT_MAX // BUCKETS + 1 if layout.sharded else RECENT_MAX,
        layout.feed_channel(task_id),
    ]
    return keys, args


def publish_command(
    settings: Settings, stream_id: str, state: str, body: bytes, *, only_if: str = ""
) -> tuple[Any, ...]:
    """The EVAL command that publishes ``body`` (for pipelines; EVAL so a restarted Redis never
    answers NOSCRIPT — Redis caches the script by its hash)."""
    keys, args = publish_args(
        settings.layout,
        stream_id,
        state,
        body,
        settings.history_max,
        settings.history_ttl,
        only_if=only_if,
    )
    return ("EVAL", publish_script(settings.layout), len(keys), *keys, *args)


def submit_command(
    settings: Settings,
    task_id: str,
    body: bytes,
    queue_key: str,
    message: bytes,
    delivery_tag: str,
    claim_key: str,
    claim_value: str,
    *,
    by_hash: bool = True,
) -> tuple[Any, ...]:
    """The call of SUBMIT_SCRIPT: PENDING ``body``, the broker ``message`` pushed on ``queue_key`` (and kept
    for redelivery unless SVC_REDELIVER_AFTER is 0), and, unless ``claim_key`` is "", the Idempotency-Key
    claimed with ``claim_value``. ``by_hash``: EVALSHA, which spares Redis reading and hashing the
    script's text on every submit; a Redis that answers NOSCRIPT (restarted, or flushed) gets the EVAL."""
    keys, args = publish_args(
        settings.layout, task_id, "PENDING", body, settings.history_max, settings.history_ttl
    )
    return (
        *(("EVALSHA", SUBMIT_SHA) if by_hash else ("EVAL", SUBMIT_SCRIPT)),
        len(keys) + 2,
        *keys,
        queue_key,
        claim_key,
        *args,
        message,
        delivery_tag,
        claim_value,
        settings.idempotency_ttl,
        "1" if settings.redeliver_after else "",
    )


def revoked_error(reason: str) -> dict[str, str]:
    """The ``error`` of a REVOKED event: why it was revoked (revoked, terminated or expired)."""
    return {"type": "TaskRevokedError", "message": reason}


def parse(raw: bytes | str) -> dict[str, Any]:
    """Decode one event frame."""
    value = orjson.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("an event is a JSON object")
    return value


def lost_snapshot(task_id: str, state: str) -> bytes:
    """What a subscriber is told when neither the history nor the result backend knows the task any more
    (both expired, or lost with a Redis that kept no data): the last state this server sent it (PENDING,
    Celery's word for unknown, if none), ``seq`` 0, ``"recovered": false`` and ``"lost": true``. The task
    may still be running (its next events follow) or be gone with the broker's queue: svc cannot tell."""
    return numbered(0, encode_body(task_id, None, state, recovered=False, lost=True))


def numbered(seq: int, body: bytes) -> bytes:
    """An encoded body with its ``seq`` first, exactly as the publish script writes it."""
    return b'{"seq":%d,' % seq + body[1:]


def with_recovered_false(raw: bytes) -> bytes:
    """The same event marked ``"recovered": false``: the history could not prove there was no gap."""
    event = parse(raw)
    event["recovered"] = False
    return orjson.dumps(event)
