"""What ``POST /tasks/{name}`` and ``POST /workflows`` do between the request and the broker: check the
caller, parse and validate what it sent, apply the rate limit, enqueue, and say where to watch.

One function per route, called by the route (and, for a task, by its fast lane); the routes only
read the request and shape the response.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers

from svc.edge import auth
from svc.edge.limits import arguments_too_deep, json_depth
from svc.edge.problems import parse_body
from svc.edge.receipts import WorkflowAccepted, accepted, workflow_accepted
from svc.enqueue import workflows
from svc.enqueue.submit import SubmitRequest
from svc.errors import InvalidArguments, SvcError, UnknownTask
from svc.runtime import Runtime

SUBMIT_OUTCOMES = {404: "unknown", 422: "invalid", 429: "rate_limited", 503: "unavailable"}
IDEMPOTENCY_KEY_MAX = 200


async def submit_task(
    runtime: Runtime, prefix: str, name: str, headers: Headers, raw: bytes, host: str | None
) -> dict[str, Any]:
    """Enqueue the exposed task ``name`` from a raw JSON body (``args``, ``kwargs``, ``options``); the
    fields of the 202 answer. Counts its outcome in ``svc_submits_total``; raises the SvcError a
    client gets (401, 400, 404, 409, 422, 429, 503)."""
    outcome = "error"
    try:
        answer = await _submit_task(runtime, prefix, name, headers, raw, host)
        outcome = "accepted"
        return answer
    except SvcError as exc:
        outcome = SUBMIT_OUTCOMES.get(exc.status, "error")
        raise
    finally:
        runtime.metrics.submits[name if name in runtime.exposed else "(unknown)", outcome] += 1


async def _submit_task(
    runtime: Runtime, prefix: str, name: str, headers: Headers, raw: bytes, host: str | None
) -> dict[str, Any]:
    settings = runtime.settings
    authorization = headers.get("authorization")
    auth.require_api_key(settings, authorization)
    idempotency_key = headers.get("idempotency-key")
    if idempotency_key is not None and len(idempotency_key) > IDEMPOTENCY_KEY_MAX:
        raise InvalidArguments(f"the Idempotency-Key header is longer than {IDEMPOTENCY_KEY_MAX} characters")
    body = parse_body(SubmitRequest, raw)
    exposed = runtime.exposed.get(name)
    if exposed is None:
        raise UnknownTask(f"no task named {name!r} is exposed")
    if arguments_too_deep(raw, body.args, body.kwargs, settings.max_json_depth):
        raise InvalidArguments(f"arguments nest deeper than {settings.max_json_depth} levels")
    kwargs = exposed.validate(body.args, body.kwargs)
    await runtime.limiter.check(auth.client_identity(settings, authorization, host))
    submitted = await runtime.submitter.submit(name, kwargs, body.options, idempotency_key)
    return accepted(settings, prefix, submitted.task_id, name)


async def submit_workflow(
    runtime: Runtime,
    prefix: str,
    body: workflows.WorkflowRequest,
    authorization: str | None,
    host: str | None,
) -> WorkflowAccepted:
    """Validate every step against its task's schema, apply the rate limit and enqueue the workflow."""
    settings = runtime.settings
    if json_depth(body.model_dump(mode="json")) > settings.max_json_depth + 4:
        raise InvalidArguments(f"arguments nest deeper than {settings.max_json_depth} levels")
    plan = workflows.plan(runtime.app, body, settings, runtime.exposed)
    await runtime.limiter.check(auth.client_identity(settings, authorization, host))
    await runtime.submitter.submit_workflow(plan)
    return workflow_accepted(settings, prefix, plan.workflow_id, plan.kind, plan.task_ids)
