"""Worker side of a workflow: a step's events copied into its workflow's stream, and the workflow's end.

The API planned the workflow (svc.enqueue.workflows) and tagged each step's task hash; the publish script
hands that tag back with every step event, and this module appends a copy of the event (with
``workflow_id``, ``step`` and ``step_seq``) to the workflow's stream. The step whose terminal event
decides the workflow publishes the workflow's own final event: SUCCESS with the last step's result (a
group: every step's result, in order), or FAILURE/REVOKED naming the first step that did not succeed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, cast

import orjson

from svc.keyspace import Layout
from svc.redis_clients import SyncClient
from svc.wire import events


class PublishTo(Protocol):
    """Publish one event body to one stream (svc.worker.state.Instrumentation.publish_to)."""

    def __call__(self, stream_id: str, state: str, body: bytes, *, terminal: bool | None = None) -> Any: ...


@dataclass(frozen=True)
class StepEvent:
    """One published event of a workflow's step."""

    workflow_id: str
    step: int
    task_id: str
    name: str | None
    state: str
    step_seq: int
    fields: dict[str, Any]


def record_step_event(publish_to: PublishTo, client: SyncClient, layout: Layout, event: StepEvent) -> None:
    """Copy a step's event into its workflow's stream; publish the workflow's end if this step decides it."""
    workflow_id, state, fields = event.workflow_id, event.state, event.fields
    copy = events.encode_body(
        event.task_id,
        event.name,
        state,
        workflow_id=workflow_id,
        step=event.step,
        step_seq=event.step_seq,
        **fields,
    )
    publish_to(workflow_id, state, copy, terminal=False)
    if state not in events.TERMINAL_STATES:
        return
    key = layout.task_key(workflow_id)
    kind_raw, total_raw, ids_raw = cast(list[bytes | None], client.hmget(key, "kind", "total", "ids"))
    if kind_raw is None or total_raw is None or ids_raw is None:
        return  # the workflow's record expired
    kind = kind_raw.decode()
    task_ids: list[str] = orjson.loads(ids_raw)
    if state == "SUCCESS":
        if int(client.hincrby(key, "done", 1)) < int(total_raw):
            return
        result = _group_results(client, layout, task_ids) if kind == "group" else fields.get("result")
        final = events.encode_body(workflow_id, kind, "SUCCESS", result=result, steps=task_ids)
    else:
        error = fields.get("error")
        if isinstance(error, BaseException):
            error = events.describe_error(error)
        final = events.encode_body(
            workflow_id, kind, state, error=error, step=event.step, failed_task_id=event.task_id
        )
    publish_to(workflow_id, state, final)


def _group_results(client: SyncClient, layout: Layout, task_ids: list[str]) -> list[Any]:
    """Each step's result, in step order, from the steps' newest events."""
    pipe = client.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.zrange(layout.history_key(task_id), -1, -1)
    return [events.parse(newest[0]).get("result") if newest else None for newest in pipe.execute()]
