"""The live view of the whole namespace that the dashboard and /metrics read: recent tasks, rates,
runtimes, queue depths and workers.

Every API process sees every task event: the monitor holds one pattern subscription
(``PSUBSCRIBE {ns}:task:*``) beside the bridge's connection, and on start loads the newest tasks from
``{ns}:recent``. On a Redis Cluster, where sharded pub/sub has no patterns, the publish script also
announces each event on its bucket's feed channel (svc/keyspace.py): the monitor holds one
connection per primary, subscribed to the feed channels of that primary's slots, and loads the newest
tasks from every bucket's recent set. A lost connection there (a failover) reloads the slot map and
starts every feed again; the events of the gap are missed by the counters, not by the rows, which the
reload of the recent sets brings back. Stream chunks are not announced on the feeds, so
``stream_chunks_published`` counts only on one Redis.

It keeps at most ``RECENT_MAX`` rows, and per task name per-minute counts and a window
of runtimes; nothing here grows without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from celery import Celery
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from svc.backoff import Reconnects
from svc.monitor.metrics import Metrics
from svc.monitor.workers import WorkerBoard
from svc.redis_clients import AsyncClient
from svc.settings import Settings
from svc.topology import Topology
from svc.wire import events

log = logging.getLogger("svc.monitor.live")


class StaleConnection(Exception):
    """The pattern subscription stopped answering (no reply to a PING)."""


RATE_MINUTES = 15  # per-minute counts kept per task name
RUNTIME_WINDOW = 1000  # runtimes kept per task name for p50/p95
SUMMARY_MAX = 160
QUEUE_POLL_SECONDS = 2.0
LOAD_CHUNK = 500
IDLE_PING = 10.0  # seconds of silence on the pattern subscription before it is asked to PONG
MALFORMED_LOG_EVERY = 60.0  # seconds between two log lines about malformed events
NUMERIC_FIELDS = ("ts", "seq", "retries", "runtime")
# kombu's Redis transport keeps one list per priority step beside the plain one.
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def summary(value: Any) -> str | None:
    """A one-line JSON form of a value, cut to SUMMARY_MAX characters."""
    if value is None:
        return None
    text = orjson.dumps(value, default=repr).decode()
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…"


@dataclass(slots=True)
class TaskRow:
    """One task as the dashboard's table shows it."""

    id: str
    name: str | None = None
    state: str = "PENDING"
    seq: int = 0
    args: str | None = None
    worker: str | None = None
    retries: int = 0
    progress: dict[str, Any] | None = None
    result: str | None = None
    error: str | None = None
    submitted: float | None = None
    started: float | None = None
    ended: float | None = None
    runtime: float | None = None
    updated: float = 0.0
    workflow_id: str | None = None

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event (of any age: it keeps the newest state) into the row."""
        ts = float(event.get("ts") or 0.0)
        state = str(event.get("state"))
        self.name = event.get("name") or self.name
        if state == "PENDING" or self.submitted is None:
            self.submitted = ts if self.submitted is None else min(self.submitted, ts)
        if state == "RECEIVED" and event.get("args") is not None:
            self.args = str(event["args"])
        if state == "STARTED":
            self.started = ts
        if event.get("workflow_id"):
            self.workflow_id = str(event["workflow_id"])
        seq = int(event.get("seq") or 0)
        if seq < self.seq and state not in events.TERMINAL_STATES:
            return  # an older event loaded after a newer one: only its details count
        self.seq = max(self.seq, seq)
        self.state, self.updated = state, ts
        self.worker = event.get("worker") or self.worker
        self.retries = int(event.get("retries") or 0)
        if state == "PROGRESS":
            self.progress = event.get("progress")
        if state in events.TERMINAL_STATES:
            self.ended = ts
            self.runtime = event.get("runtime")
            self.result = summary(event.get("result"))
            error = event.get("error")
            if isinstance(error, dict):
                self.error = f"{error.get('type')}: {error.get('message')}"[:SUMMARY_MAX]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form sent to dashboards."""
        return {slot: getattr(self, slot) for slot in self.__slots__}


class TaskStats:
    """Per task name: per-minute succeeded/failed/retried counts and a window of runtimes."""

    def __init__(self) -> None:
        self.minutes: dict[int, Counter[str]] = {}
        self.runtimes: deque[float] = deque(maxlen=RUNTIME_WINDOW)
        self.totals: Counter[str] = Counter()

    def count(self, state: str, ts: float, runtime: float | None) -> None:
        """Count one RETRY or terminal event."""
        minute = int(ts // 60)
        self.minutes.setdefault(minute, Counter())[state] += 1
        self.totals[state] += 1
        if runtime is not None:
            self.runtimes.append(float(runtime))
        for old in [key for key in self.minutes if key <= minute - RATE_MINUTES]:
            del self.minutes[old]

    def runtime(self) -> dict[str, float | int] | None:
        """p50 and p95 of the recent runtimes (seconds, STARTED → SUCCESS/FAILURE) and how many runs
        they are of; None before any."""
        ordered = sorted(self.runtimes)
        if not ordered:
            return None
        return {
            "p50": ordered[len(ordered) // 2],
            "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
            "runs": len(ordered),
        }

    def as_dict(self, now: float) -> dict[str, Any]:
        """Counts per minute (oldest first, the current minute last), totals, p50/p95 runtime."""
        current = int(now // 60)
        window = range(current - RATE_MINUTES + 1, current + 1)
        per_minute = {
            state: [self.minutes.get(minute, Counter())[state] for minute in window]
            for state in ("SUCCESS", "FAILURE", "RETRY")
        }
        runtime = self.runtime()
        return {
            "per_minute": per_minute,
            "totals": dict(self.totals),
            "p50": runtime["p50"] if runtime else None,
            "p95": runtime["p95"] if runtime else None,
        }


class Monitor:
    """Follows every task event of the namespace; feeds dashboards and metrics."""

    def __init__(
        self,
        settings: Settings,
        redis: AsyncClient,
        pubsub_redis: aioredis.Redis | None,
        broker_redis: aioredis.Redis | None,
        app: Celery,
        metrics: Metrics,
        pubsub_topology: Topology | None = None,
    ) -> None:
        """Follows ``settings``' namespace: pattern-subscribed through ``pubsub_redis`` on one Redis, or
        through ``pubsub_topology``'s node clients on a cluster (``settings.layout`` says which)."""
        self.settings = settings
        self.layout = settings.layout
        self.redis = redis
        self.pubsub_redis = pubsub_redis  # no socket timeout: a quiet pub/sub socket is not a dead one
        self.pubsub_topology = pubsub_topology
        self.broker_redis = broker_redis
        self.app = app
        self.metrics = metrics
        self.rows: OrderedDict[str, TaskRow] = OrderedDict()
        self.stats: dict[str, TaskStats] = {}
        self.queue_depth: dict[str, int] = {}
        self.dirty: set[str] = set()
        self.workers_dirty = False
        self.workers = WorkerBoard(app, self._workers_changed)
        self._tasks: list[asyncio.Task[None]] = []
        self._pattern = events.task_channel(settings.namespace, "*")
        self.reconnects = 0  # of the pattern subscription, after the first connection
        self.malformed = 0  # task-channel messages that were not events
        self._malformed_logged = -MALFORMED_LOG_EVERY

    async def start(self) -> None:
        """Load the newest tasks, then follow live events, workers and queue depths in the background."""
        await self.workers.start()
        self._tasks = [
            asyncio.create_task(self._follow()),
            asyncio.create_task(self._poll_queues()),
        ]

    async def stop(self) -> None:
        """Stop following."""
        await self.workers.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # events -------------------------------------------------------------------------------------

    def ingest(self, raw: bytes, live: bool = True) -> None:
        """Fold one published event into the rows (and, for a live one, into rates and metrics). Anything
        on a task channel may be malformed (any client can PUBLISH): such an event is counted in
        ``malformed`` and logged at most once a minute, and never stops the monitor."""
        try:
            self._fold(events.parse(raw), live)
        except (ValueError, TypeError, KeyError, AttributeError):
            self.malformed += 1
            now = time.monotonic()
            if now - self._malformed_logged >= MALFORMED_LOG_EVERY:
                self._malformed_logged = now
                log.warning("event=malformed_event count=%d sample=%r", self.malformed, raw[:200])

    def _fold(self, event: dict[str, Any], live: bool) -> None:
        if "step_seq" in event:
            return  # a step's copy in its workflow's stream: the step's own event is counted
        task_id = event.get("task_id")
        if not isinstance(task_id, str) or not isinstance(event.get("state"), str):
            raise ValueError("an event names its task and state")
        for field in NUMERIC_FIELDS:
            value = event.get(field)
            if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
                raise ValueError(f"an event's {field} is a number")
        row = self.rows.get(task_id)
        if row is None:
            row = self.rows[task_id] = TaskRow(task_id)
            if len(self.rows) > events.RECENT_MAX:
                evicted, _ = self.rows.popitem(last=False)
                self.dirty.discard(evicted)
        row.apply(event)
        self.dirty.add(task_id)
        if live:
            self._count(event, row)

    def _count(self, event: dict[str, Any], row: TaskRow) -> None:
        state = str(event.get("state"))
        self.metrics.events_published[state] += 1
        if state != "RETRY" and state not in events.TERMINAL_STATES:
            return
        name = row.name or "?"
        runtime = event.get("runtime")
        self.stats.setdefault(name, TaskStats()).count(state, float(event.get("ts") or time.time()), runtime)
        if state == "RETRY":
            return
        self.metrics.tasks_finished[name, state] += 1
        if runtime is not None:
            self.metrics.task_runtime.labels(name).observe(float(runtime))
        worker = event.get("worker")
        if isinstance(worker, str) and state in ("SUCCESS", "FAILURE"):
            board = self.workers.get(worker)
            if state == "SUCCESS":
                board.succeeded += 1
            else:
                board.failed += 1
            self.workers_dirty = True

    def _workers_changed(self) -> None:
        self.workers_dirty = True

    async def _follow(self) -> None:
        """Follow every task event of the namespace for the life of the process: reconnect with backoff
        after a lost connection, and keep going after anything unforeseen (logged), so the dashboard
        and /metrics never go quiet for good."""
        reconnects = Reconnects()
        while True:
            pubsubs: list[PubSub] = []
            try:
                if self.pubsub_topology is not None:
                    await self.pubsub_topology.refresh()
                    pubsubs = await self._subscribe_feeds(self.pubsub_topology)
                else:
                    assert self.pubsub_redis is not None
                    pubsubs = [self.pubsub_redis.pubsub()]
                    await pubsubs[0].psubscribe(self._pattern)
                reconnects.connected()
                await self._load_recent()
                async with asyncio.TaskGroup() as readers:
                    for pubsub in pubsubs:
                        readers.create_task(self._read(pubsub))
            except* (RedisError, OSError, StaleConnection) as group:
                failure = f"event=monitor_disconnected error={group.exceptions[0]!r}"
            except* Exception:
                log.exception("event=monitor_failed")
                failure = "event=monitor_restarting"
            finally:
                for pubsub in pubsubs:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
            delay = reconnects.next_delay()
            self.reconnects += 1
            log.warning("%s retry_in=%.2f", failure, delay)
            await asyncio.sleep(delay)

    async def _subscribe_feeds(self, topology: Topology) -> list[PubSub]:
        """One pub/sub connection per primary, subscribed to the feed channels of its slots (one
        SSUBSCRIBE per slot, as Redis requires)."""
        by_owner: dict[tuple[str, int], list[str]] = {}
        for channel in self.layout.feed_channels():
            by_owner.setdefault(topology.owner(channel), []).append(channel)
        pubsubs = []
        for address, channels in by_owner.items():
            pubsub = topology.client(address).pubsub()
            pubsubs.append(pubsub)
            for channel in channels:  # each bucket's feed is a slot of its own
                await pubsub.ssubscribe(channel)
        return pubsubs

    async def _read(self, pubsub: PubSub) -> None:
        """Fold every ``pmessage`` (``smessage`` from a cluster's feed) into the view. Every event of the
        namespace passes here, so the raw replies are read off the connection
        (``["pmessage", pattern, channel, data]``) rather than through
        ``PubSub.listen()``, whose per-message bookkeeping cost more than the submit that published the
        event. A connection quiet for IDLE_PING seconds is sent a PING; one that still says nothing
        after another IDLE_PING is given up (a half-open socket never raises on its own)."""
        connection = pubsub.connection
        if connection is None:
            raise RedisConnectionError("the pattern subscription has no connection")
        pinged = False
        while True:
            reply = await connection.read_response(timeout=IDLE_PING, push_request=True)
            if reply is None:  # quiet for IDLE_PING seconds: no error, the read can be retried
                if pinged:
                    raise StaleConnection(f"no answer to a PING within {IDLE_PING:.0f}s")
                await connection.send_command("PING")
                pinged = True
                continue
            pinged = False
            if not isinstance(reply, list):
                continue
            if len(reply) == 4 and reply[0] == b"pmessage":
                data = reply[3]
            elif len(reply) == 3 and reply[0] == b"smessage":
                data = reply[2]
            else:
                continue
            if events.is_stream_message(data):  # chunks: counted, no row of their own
                self.metrics.stream_chunks_published += data.count(b"\n") + 1
                continue
            self.ingest(data)

    async def _load_recent(self) -> None:
        """The newest tasks' first events (submit, args, start) and latest event, oldest task first."""
        ids = await self._recent_ids()
        for start in range(0, len(ids), LOAD_CHUNK):
            chunk = ids[start : start + LOAD_CHUNK]
            pipe = self.redis.pipeline(transaction=False)
            for task_id in chunk:
                history = self.layout.history_key(task_id)
                pipe.zrange(history, 0, 2)
                pipe.zrange(history, -1, -1)
            replies = await pipe.execute()
            for index in range(len(chunk)):
                for raw in [*replies[2 * index], *replies[2 * index + 1]]:
                    self.ingest(raw, live=False)

    async def _recent_ids(self) -> list[str]:
        """The ids of the newest tasks (at most RECENT_MAX), oldest first, from every part of the
        recent-ids view."""
        pipe = self.redis.pipeline(transaction=False)
        for key in self.layout.recent_keys():
            pipe.zrange(key, 0, -1, withscores=True)
        scored = [(score, raw) for part in await pipe.execute() for raw, score in part]
        scored.sort()
        return [raw.decode() for _, raw in scored[-events.RECENT_MAX :]]

    # queues -------------------------------------------------------------------------------------

    def queue_names(self) -> set[str]:
        """The default queue and every queue a worker consumes."""
        names = {str(self.app.conf.task_default_queue)}
        for worker in self.workers.all():
            names.update(worker.queues)
        return names

    async def _poll_queues(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                names = sorted(self.queue_names())
                if self.broker_redis is not None:
                    pipe = self.broker_redis.pipeline(transaction=False)
                    for name in names:
                        for suffix in PRIORITY_SUFFIXES:
                            pipe.llen(name + suffix)
                    lengths = await pipe.execute()
                    step = len(PRIORITY_SUFFIXES)
                    depth = {name: sum(lengths[i * step : (i + 1) * step]) for i, name in enumerate(names)}
                else:
                    depth = await asyncio.to_thread(self._amqp_depth, names)
                if depth != self.queue_depth:
                    self.queue_depth = depth
                    self.workers_dirty = True
            await asyncio.sleep(QUEUE_POLL_SECONDS)

    def _amqp_depth(self, names: list[str]) -> dict[str, int]:
        depth: dict[str, int] = {}
        with self.app.connection_for_read() as connection:
            channel = connection.default_channel
            for name in names:
                with contextlib.suppress(Exception):
                    depth[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
        return depth

    # views --------------------------------------------------------------------------------------

    def runtime_of(self, name: str) -> dict[str, float | int] | None:
        """What the recent runs of task ``name`` took (``TaskStats.runtime``), as far as this process saw."""
        stats = self.stats.get(name)
        return stats.runtime() if stats is not None else None

    def stats_view(self) -> dict[str, Any]:
        """Rates and runtimes per task name, queue depths, and workers."""
        now = time.time()
        return {
            "now": now,
            "rates": {name: stats.as_dict(now) for name, stats in sorted(self.stats.items())},
            "queues": self.queue_depth,
            "workers": [worker.as_dict() for worker in self.workers.all()],
        }

    def snapshot(self) -> bytes:
        """Everything a dashboard shows, for a dashboard that just connected."""
        return orjson.dumps(
            {
                "op": "snapshot",
                "tasks": [row.as_dict() for row in self.rows.values()],
                **self.stats_view(),
            }
        )

    def forget_changes(self) -> None:
        """Drop the record of what changed (no dashboard is connected to be told)."""
        self.dirty.clear()
        self.workers_dirty = False

    def take_update(self) -> bytes | None:
        """The rows and state changed since the last call, or None when nothing changed."""
        if not self.dirty and not self.workers_dirty:
            return None
        rows = [self.rows[task_id].as_dict() for task_id in self.dirty if task_id in self.rows]
        self.dirty.clear()
        self.workers_dirty = False
        return orjson.dumps({"op": "update", "tasks": rows, **self.stats_view()})
