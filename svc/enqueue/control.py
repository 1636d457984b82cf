"""Actions on submitted tasks: cancel (``DELETE /tasks/{id}``) and retry (``POST /tasks/{id}/retry``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import anyio.to_thread
import orjson
from celery import Celery

from svc.enqueue.message import SubmitOptions
from svc.enqueue.submit import Submitted, Submitter
from svc.errors import Conflict, ServiceUnavailable, UnknownTask, UnknownTaskId
from svc.exposure import ExposedTask
from svc.fanout.history import History
from svc.redis_clients import AsyncClient
from svc.settings import Settings
from svc.wire import events

RETRYABLE = frozenset({"FAILURE", "REVOKED", "SUCCESS"})
NOT_STARTED = ("PENDING", "RECEIVED", "RETRY")


@dataclass(frozen=True)
class TaskControl:
    """Cancel and retry for one app: what they read (history, the task hashes, the result backend) and
    what they write with (the submitter)."""

    settings: Settings
    app: Celery
    redis: AsyncClient
    history: History
    submitter: Submitter
    exposed: Mapping[str, ExposedTask]

    async def cancel(self, task_id: str, terminate: bool) -> dict[str, Any]:
        """Revoke a task (every step, for a workflow id) so that it never starts, or stops if ``terminate``.

        1. flag it in Redis: a worker that receives it later (even one that missed the broadcast) drops it;
        2. broadcast Celery's revoke to the workers online;
        3. if it has not started (its state is PENDING, or RECEIVED/RETRY: held by a worker until its
           countdown, eta or next attempt, which the broadcast makes the worker drop), store REVOKED in the
           result backend and announce it at once, so watchers are not left waiting for a worker or a clock.
        """
        settings = self.settings
        if await self.history.latest(task_id) is None and await self.history.stored_result(task_id) is None:
            raise UnknownTaskId(f"no task with id {task_id!r} is known")
        key = settings.layout.task_key(task_id)
        kind_raw, ids = await self.redis.hmget(key, "kind", "ids")
        kind = kind_raw.decode() if isinstance(kind_raw, bytes) else None
        targets = cast(list[str], orjson.loads(ids)) if kind and ids else [task_id]
        for target in targets:
            await self.redis.hset(settings.layout.task_key(target), "revoked", 1)
        try:
            await anyio.to_thread.run_sync(
                lambda: self.app.control.revoke(targets, terminate=terminate, signal="SIGTERM")
            )
            for target in targets:
                await self._end_if_not_started(target)
        except (OSError, ConnectionError) as exc:
            raise ServiceUnavailable(f"could not reach the broker: {type(exc).__name__}") from exc
        if kind:
            body = events.encode_body(task_id, kind, "REVOKED", error=events.revoked_error("revoked"))
            await self.submitter.events_batcher.execute(
                events.publish_command(settings, task_id, "REVOKED", body)
            )
        return {"task_id": task_id, "revoked": True, "terminate": terminate, "task_ids": targets}

    async def _end_if_not_started(self, task_id: str) -> None:
        settings = self.settings
        state = await self.redis.hget(settings.layout.task_key(task_id), "state")
        if not isinstance(state, bytes) or state.decode() not in NOT_STARTED:
            return
        await anyio.to_thread.run_sync(lambda: self.app.backend.mark_as_revoked(task_id, "revoked"))
        latest = await self.history.latest(task_id)
        name = events.parse(latest).get("name") if latest else None
        body = events.encode_body(task_id, name, "REVOKED", error=events.revoked_error("revoked"))
        command = events.publish_command(settings, task_id, "REVOKED", body, only_if=",".join(NOT_STARTED))
        await self.submitter.events_batcher.execute(command)

    async def retry(self, task_id: str) -> Submitted:
        """Submit a finished task again, as a new task with the same name and arguments.

        The arguments come from Celery's result backend (``result_extended``), so any task that ended can
        be retried, however it was submitted, as long as its task is exposed over HTTP.
        """
        key = self.settings.layout.task_key(task_id)
        state, terminal = await self.redis.hmget(key, "state", "terminal")
        if state is not None and terminal is None:
            shown = state.decode() if isinstance(state, bytes) else state
            raise Conflict(f"task {task_id!r} is {shown}: only a finished task can be retried")
        meta = await self.history.backend_meta(task_id)
        if meta is None:
            raise UnknownTaskId(f"no stored result for task {task_id!r}: it never ran, or its result expired")
        state = meta.get("status")
        if state not in RETRYABLE:
            raise Conflict(f"task {task_id!r} is {state}: only a finished task can be retried")
        name = str(meta.get("name"))
        exposed = self.exposed.get(name)
        if exposed is None:
            raise UnknownTask(f"no task named {name!r} is exposed")
        kwargs = exposed.validate(list(meta.get("args") or []), dict(meta.get("kwargs") or {}))
        return await self.submitter.submit(name, kwargs, SubmitOptions())
