"""Chains, groups and chords, planned by the API (the worker's half is svc.worker.workflow_steps).

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from celery import Celery, Signature, chain, chord, group
from celery.canvas import _chain
from pydantic import BaseModel, ConfigDict, Field

from svc.errors import InvalidArguments, UnknownTask
from svc.exposure import ExposedTask
from svc.settings import Settings
from svc.wire import events

MAX_STEPS = 100
Exposed = Mapping[str, ExposedTask]
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


def plan(app: Celery, request: WorkflowRequest, settings: Settings, exposed: Exposed) -> Plan:
    """Validate every step of a ``POST /workflows`` body against its task's schema and build the
    workflow; no I/O."""
    signatures = []
    for index, (step, receives_previous) in enumerate(request.steps()):
        task = exposed.get(step.task)
        if task is None:
            raise UnknownTask(f"step {index}: no task named {step.task!r} is exposed")
        try:
            kwargs = task.validate(step.args, step.kwargs, first_supplied=receives_previous)
        except InvalidArguments as exc:
            raise InvalidArguments(f"step {index}: {exc.detail}", **exc.extra) from None
        signatures.append(app.signature(step.task, kwargs=kwargs))
    return _build(settings, request.kind, signatures)


def plan_canvas(canvas: Signature, settings: Settings) -> Plan:
    """The workflow of a server-side canvas (``gateway.submit``): a chain of tasks, a group of tasks, or
    a chord of a group of tasks and a callback; TypeError for any other shape (a nested canvas). The
    caller's signatures are copied, never changed; no I/O."""
    if isinstance(canvas, chord):
        header = list(canvas.tasks.tasks if isinstance(canvas.tasks, group) else canvas.tasks)
        return _build(settings, "chord", [*_leaves(header), *_leaves([canvas.body])])
    if isinstance(canvas, group):
        return _build(settings, "group", _leaves(canvas.tasks))
    if isinstance(canvas, _chain):
        return _build(settings, "chain", _leaves(canvas.tasks))
    raise TypeError(f"not a chain, group or chord: {canvas!r}")


def _leaves(signatures: Any) -> list[Signature]:
    """Copies of plain task signatures; TypeError for a nested canvas."""
    leaves = []
    for signature in signatures:
        if isinstance(signature, _chain | group | chord) or not isinstance(signature, Signature):
            raise TypeError(
                f"svc follows chains, groups and chords of single tasks, not a nested {signature!r}"
            )
        leaves.append(signature.clone())
    if not leaves:
        raise TypeError("a workflow needs at least one task")
    return leaves


def _build(settings: Settings, kind: Kind, signatures: list[Signature]) -> Plan:
    """Give every step an id and build Celery's canvas, with the commands that record it."""
    workflow_id = str(uuid.uuid4())
    task_ids = [str(uuid.uuid4()) for _ in signatures]
    for signature, task_id in zip(signatures, task_ids, strict=True):
        signature.set(task_id=task_id)
    if kind == "chain":
        canvas: Signature = chain(*signatures)
    elif kind == "group":
        canvas = group(*signatures)
    else:
        canvas = chord(group(*signatures[:-1]), signatures[-1])
    names = [str(signature.task) for signature in signatures]
    return Plan(workflow_id, kind, task_ids, _record(settings, workflow_id, kind, task_ids, names), canvas)


def _record(
    settings: Settings, workflow_id: str, kind: Kind, task_ids: list[str], names: list[str]
) -> list[tuple[Any, ...]]:
    """Commands that tag every step, describe the workflow, and record PENDING for all of them."""
    ttl = settings.history_ttl
    commands: list[tuple[Any, ...]] = []
    workflow_key = settings.layout.task_key(workflow_id)
    commands.append(
        ("HSET", workflow_key, "kind", kind, "total", len(task_ids), "ids", orjson.dumps(task_ids))
    )
    commands.append(("EXPIRE", workflow_key, ttl))
    commands.append(_pending(settings, workflow_id, kind, steps=task_ids))
    for index, (name, task_id) in enumerate(zip(names, task_ids, strict=True)):
        step_key = settings.layout.task_key(task_id)
        commands.append(("HSET", step_key, "workflow", workflow_id, "step", index))
        commands.append(("EXPIRE", step_key, ttl))
        commands.append(_pending(settings, task_id, name, workflow_id=workflow_id, step=index))
    return commands


def _pending(settings: Settings, stream_id: str, name: str, **extra: Any) -> tuple[Any, ...]:
    body = events.encode_body(stream_id, name, "PENDING", **extra)
    return events.publish_command(settings, stream_id, "PENDING", body)
