"""Chains, groups and chords: planned by the API, followed by the worker, watched as one stream.

A workflow has an id of its own and an event stream of its own (``{ns}:task:{workflow_id}``, the same
keys and channel a task has), so ``/ws/tasks/{workflow_id}``, ``since`` and history work unchanged:

- the API records PENDING for the workflow and every step, and tags each step's task hash with
  ``workflow``/``step``, before Celery's canvas is sent;
- the worker's publish script returns that tag with every step event, and the worker appends a copy of
  the event, with ``workflow_id``, ``step`` and ``step_seq``, to the workflow's stream;
- the workflow's final event (its ``task_id`` is the workflow id) is SUCCESS with the last step's result
  (a group: every step's result, in order) once every step succeeded, or FAILURE/REVOKED naming the
  first step that did not — after which Celery runs no further chain step.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson
from celery import Celery, chain, chord, group
from pydantic import BaseModel, ConfigDict, Field

from svc.errors import InvalidArguments, UnknownTask
from svc.exposure import EXPOSED
from svc.settings import Settings, get_settings
from svc.wire import events

MAX_STEPS = 100
Kind = Literal["chain", "group", "chord"]


class Step(BaseModel):
    """One task of a workflow."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=200)
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class ChainRequest(BaseModel):
    """A chain: each step's result is the next step's first argument."""

    model_config = ConfigDict(extra="forbid")

    chain: list[Step] = Field(min_length=1, max_length=MAX_STEPS)

    @property
    def kind(self) -> Kind:
        """Always "chain"."""
        return "chain"

    def steps(self) -> list[tuple[Step, bool]]:
        """Every step in order, each with whether Celery passes it the previous result first."""
        return [(step, index > 0) for index, step in enumerate(self.chain)]


class GroupRequest(BaseModel):
    """A group (steps run in parallel), or with ``callback`` a chord."""

    model_config = ConfigDict(extra="forbid")

    group: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    callback: Step | None = Field(None, description="run on the list of the group's results (a chord)")

    @property
    def kind(self) -> Kind:
        """ "group", or "chord" with a callback."""
        return "chord" if self.callback is not None else "group"

    def steps(self) -> list[tuple[Step, bool]]:
        """Every step in order, each with whether Celery passes it the previous result(s) first."""
        steps = [(step, False) for step in self.group]
        return steps + ([(self.callback, True)] if self.callback is not None else [])


WorkflowRequest = ChainRequest | GroupRequest


@dataclass(frozen=True)
class Plan:
    """A validated workflow: its ids, the Redis commands that record it, and the canvas to send."""

    workflow_id: str
    kind: Kind
    task_ids: list[str]
    commands: list[tuple[Any, ...]]
    canvas: Any


def plan(app: Celery, request: WorkflowRequest, settings: Settings) -> Plan:
    """Validate every step against its task's schema and build the workflow; no I/O."""
    workflow_id = str(uuid.uuid4())
    signatures, task_ids = [], []
    for index, (step, receives_previous) in enumerate(request.steps()):
        exposed = EXPOSED.get(step.task)
        if exposed is None:
            raise UnknownTask(f"step {index}: no task named {step.task!r} is exposed")
        try:
            kwargs = exposed.validate(step.args, step.kwargs, first_supplied=receives_previous)
        except InvalidArguments as exc:
            raise InvalidArguments(f"step {index}: {exc.detail}", **exc.extra) from None
        task_id = str(uuid.uuid4())
        task_ids.append(task_id)
        signatures.append(app.signature(step.task, kwargs=kwargs).set(task_id=task_id))
    kind = request.kind
    if kind == "chain":
        canvas = chain(*signatures)
    elif kind == "group":
        canvas = group(*signatures)
    else:
        canvas = chord(group(*signatures[:-1]), signatures[-1])
    return Plan(workflow_id, kind, task_ids, _record(settings, workflow_id, kind, task_ids, request), canvas)


def _record(
    settings: Settings, workflow_id: str, kind: Kind, task_ids: list[str], request: WorkflowRequest
) -> list[tuple[Any, ...]]:
    """Commands that tag every step, describe the workflow, and record PENDING for all of them."""
    ns, ttl = settings.namespace, settings.history_ttl
    commands: list[tuple[Any, ...]] = []
    workflow_key = events.task_key(ns, workflow_id)
    commands.append(
        ("HSET", workflow_key, "kind", kind, "total", len(task_ids), "ids", orjson.dumps(task_ids))
    )
    commands.append(("EXPIRE", workflow_key, ttl))
    commands.append(_pending(settings, workflow_id, kind, steps=task_ids))
    for index, ((step, _), task_id) in enumerate(zip(request.steps(), task_ids, strict=True)):
        step_key = events.task_key(ns, task_id)
        commands.append(("HSET", step_key, "workflow", workflow_id, "step", index))
        commands.append(("EXPIRE", step_key, ttl))
        commands.append(_pending(settings, task_id, step.task, workflow_id=workflow_id, step=index))
    return commands


def _pending(settings: Settings, stream_id: str, name: str, **extra: Any) -> tuple[Any, ...]:
    body = events.encode_body(stream_id, name, "PENDING", **extra)
    return events.publish_command(settings, stream_id, "PENDING", body)


# Worker side -------------------------------------------------------------------------------------


def record_step_event(
    workflow_id: str,
    step: int,
    task_id: str,
    name: str | None,
    state: str,
    step_seq: int,
    fields: dict[str, Any],
) -> None:
    """Copy a step's event into its workflow's stream; publish the workflow's end if this step decides it."""
    from svc.worker.publisher import publish_to, redis_client

    copy = events.encode_body(
        task_id, name, state, workflow_id=workflow_id, step=step, step_seq=step_seq, **fields
    )
    publish_to(workflow_id, state, copy, terminal=False)
    if state not in events.TERMINAL_STATES:
        return
    client = redis_client()
    key = events.task_key(get_settings().namespace, workflow_id)
    kind_raw, total_raw, ids_raw = cast(list[bytes | None], client.hmget(key, "kind", "total", "ids"))
    if kind_raw is None or total_raw is None or ids_raw is None:
        return  # the workflow's record expired
    kind = kind_raw.decode()
    task_ids: list[str] = orjson.loads(ids_raw)
    if state == "SUCCESS":
        if int(client.hincrby(key, "done", 1)) < int(total_raw):
            return
        result = _group_results(client, task_ids) if kind == "group" else fields.get("result")
        final = events.encode_body(workflow_id, kind, "SUCCESS", result=result, steps=task_ids)
    else:
        error = fields.get("error")
        if isinstance(error, BaseException):
            error = events.describe_error(error)
        final = events.encode_body(workflow_id, kind, state, error=error, step=step, failed_task_id=task_id)
    publish_to(workflow_id, state, final)


def _group_results(client: Any, task_ids: list[str]) -> list[Any]:
    """Each step's result, in step order, from the steps' newest events."""
    ns = get_settings().namespace
    pipe = client.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.zrange(events.history_key(ns, task_id), -1, -1)
    return [events.parse(newest[0]).get("result") if newest else None for newest in pipe.execute()]
