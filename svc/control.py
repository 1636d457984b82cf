"""Cancelling tasks and workflows (``DELETE /tasks/{id}``)."""

from __future__ import annotations

from typing import Any, cast

import anyio.to_thread
import orjson

from svc import events
from svc.errors import ServiceUnavailable, UnknownTaskId
from svc.runtime import Runtime


async def cancel(runtime: Runtime, task_id: str, terminate: bool) -> dict[str, Any]:
    """Revoke a task (every step, for a workflow id) so that it never starts, or stops if ``terminate``.

    1. flag it in Redis: a worker that receives it later (even one that missed the broadcast) drops it;
    2. broadcast Celery's revoke to the workers online;
    3. if no worker has picked it up yet (its state is still PENDING), store REVOKED in the result
       backend and announce it at once, so watchers are not left waiting for a worker.
    """
    settings = runtime.settings
    if await runtime.history.latest(task_id) is None and await runtime.history.stored_result(task_id) is None:
        raise UnknownTaskId(f"no task with id {task_id!r} is known")
    key = events.task_key(settings.namespace, task_id)
    kind_raw, ids = await runtime.redis.hmget(key, "kind", "ids")
    kind = kind_raw.decode() if isinstance(kind_raw, bytes) else None
    targets = cast(list[str], orjson.loads(ids)) if kind and ids else [task_id]
    for target in targets:
        await runtime.redis.hset(events.task_key(settings.namespace, target), "revoked", 1)
    try:
        await anyio.to_thread.run_sync(
            lambda: runtime.app.control.revoke(targets, terminate=terminate, signal="SIGTERM")
        )
        for target in targets:
            await _end_if_unclaimed(runtime, target)
    except (OSError, ConnectionError) as exc:
        raise ServiceUnavailable(f"could not reach the broker: {type(exc).__name__}") from exc
    if kind:
        body = events.encode_body(task_id, kind, "REVOKED", error=events.revoked_error("revoked"))
        await runtime.submitter.events_batcher.execute(
            events.publish_command(settings, task_id, "REVOKED", body)
        )
    return {"task_id": task_id, "revoked": True, "terminate": terminate, "task_ids": targets}


async def _end_if_unclaimed(runtime: Runtime, task_id: str) -> None:
    settings = runtime.settings
    state = await runtime.redis.hget(events.task_key(settings.namespace, task_id), "state")
    if state != b"PENDING":
        return
    await anyio.to_thread.run_sync(lambda: runtime.app.backend.mark_as_revoked(task_id, "revoked"))
    latest = await runtime.history.latest(task_id)
    name = events.parse(latest).get("name") if latest else None
    body = events.encode_body(task_id, name, "REVOKED", error=events.revoked_error("revoked"))
    command = events.publish_command(settings, task_id, "REVOKED", body, only_if="PENDING")
    await runtime.submitter.events_batcher.execute(command)
