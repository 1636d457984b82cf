"""Read side of the event store: a task's recorded history, and its stored Celery result as a fallback."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

import anyio.to_thread
import orjson
import redis.asyncio as aioredis
from celery import Celery

from svc.batcher import AnyBatcher, Batcher
from svc.keyspace import Layout
from svc.wire import events


@dataclass(frozen=True, slots=True)
class Backlog:
    """A task's records after a subscriber's ``seq``, oldest first."""

    events: list[bytes]
    chunks: list[bytes]
    cut_up_to: int  # the newest seq of a stream chunk that is gone (0: none is)
    newest_chunk: int  # the seq of the task's newest stream chunk ever stored (0: it never streamed)


class History:
    """Async reads of task histories (events Redis) and stored results (Celery's result backend)."""

    def __init__(
        self,
        redis: aioredis.Redis | None,
        namespace: str,
        app: Celery,
        backend_redis: aioredis.Redis | None,
        *,
        reads: AnyBatcher | None = None,
        layout: Layout | None = None,
    ):
        """Reads through ``reads`` (made over ``redis`` when not given; on a cluster, a ClusterBatcher)
        with ``layout``'s key names (one Redis's by default)."""
        self.namespace = namespace
        self.layout = layout or Layout(namespace)
        self.app = app
        self.backend_redis = backend_redis
        # History reads of many subscribers at once (10,000 clients reconnecting) go together, pipelined
        # on one connection, instead of each waiting for one of the pool's connections.
        if reads is None:
            if redis is None:
                raise ValueError("History needs a Redis client or a batcher of reads")
            reads = Batcher(redis)
        self.reads = reads

    async def all(self, task_id: str) -> list[bytes]:
        """Every recorded event of ``task_id``, oldest first."""
        return await self.after(task_id, 0)

    async def after(self, task_id: str, seq: int) -> list[bytes]:
        """Recorded events of ``task_id`` with a seq above ``seq``, oldest first."""
        key = self.layout.history_key(task_id)
        (recorded,) = await self.reads.execute(("ZRANGEBYSCORE", key, f"({seq}", "+inf"))
        return cast(list[bytes], recorded)

    async def backlog(self, task_id: str, seq: int) -> Backlog:
        """What a subscriber at ``seq`` has not been sent: the task's recorded events and stream chunks
        after it (one round trip), and what is known of chunks that are gone."""
        layout = self.layout
        recorded, chunks, (cut, last) = await self.reads.execute(
            ("ZRANGEBYSCORE", layout.history_key(task_id), f"({seq}", "+inf"),
            ("ZRANGEBYSCORE", layout.stream_key(task_id), f"({seq}", "+inf"),
            ("HMGET", layout.task_key(task_id), "stream_cut", "stream_last"),
        )
        cut_seq, last_seq = int(cut or 0), int(last or 0)
        # With chunks left, the stream's key lives and only the cap cut any; with none after ``seq``, a
        # newer chunk than ``seq`` that was recorded is gone (the stream's TTL, or the cap).
        horizon = cut_seq if chunks else max(cut_seq, last_seq)
        return Backlog(cast(list[bytes], recorded), cast(list[bytes], chunks), horizon, last_seq)

    async def latest(self, task_id: str) -> bytes | None:
        """The newest recorded event of ``task_id``, if any."""
        key = self.layout.history_key(task_id)
        (newest,) = await self.reads.execute(("ZRANGE", key, -1, -1))
        return cast(bytes, newest[0]) if newest else None

    async def stored_result(self, task_id: str) -> bytes | None:
        """A snapshot event built from Celery's result backend (``seq`` 0, ``recovered`` false), if any."""
        meta = await self.backend_meta(task_id)
        if meta is None or meta.get("status") in (None, "PENDING"):
            return None
        return snapshot_from_meta(task_id, meta)

    async def backend_meta(self, task_id: str) -> dict[str, Any] | None:
        """Celery's result-backend record of the task (with ``result_extended``: name, args, kwargs)."""
        if self.backend_redis is not None:
            raw = await self.backend_redis.get(self.app.backend.get_key_for_task(task_id))
            return orjson.loads(raw) if raw else None
        meta = await anyio.to_thread.run_sync(self.app.backend.get_task_meta, task_id)
        return dict(meta) if meta else None


def snapshot_from_meta(task_id: str, meta: dict[str, Any]) -> bytes:
    """A Celery result-backend record as an event (through the one encoder): ``seq`` 0, ``recovered``
    false, ``ts`` the record's ``date_done`` (now when it has none)."""
    state = meta.get("status", "PENDING")
    result = meta.get("result")
    error = None
    if state in ("FAILURE", "RETRY", "REVOKED") and isinstance(result, dict) and "exc_type" in result:
        message = result.get("exc_message")
        if isinstance(message, list | tuple):
            message = " ".join(str(part) for part in message)
        error = {"type": str(result["exc_type"]), "message": str(message)}
        result = None
    progress = result if state == "PROGRESS" and isinstance(result, dict) else None
    body = events.encode_body(
        task_id,
        meta.get("name"),
        state,
        result=result if state == "SUCCESS" else None,
        error=error,
        progress=progress,
        retries=meta.get("retries") or 0,
        worker=meta.get("worker"),
        ts=_timestamp(meta.get("date_done")),
        recovered=False,
    )
    return events.numbered(0, body)


def _timestamp(date_done: Any) -> float | None:
    """The unix time of Celery's ``date_done`` (an ISO string, or a datetime), if it is one."""
    if isinstance(date_done, dt.datetime):
        moment = date_done
    elif isinstance(date_done, str):
        try:
            moment = dt.datetime.fromisoformat(date_done)
        except ValueError:
            return None
    else:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()
