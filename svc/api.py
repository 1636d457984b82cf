"""HTTP and WebSocket routes (SPEC "HTTP" and "WebSocket"): parse, call one domain function, shape."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Depends, FastAPI, Header, Query, Request, Response, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, ValidationError
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from svc import schedules
from svc.edge import auth, dashboard, ws
from svc.edge.access_log import redact_request_logs
from svc.edge.fastpath import SubmitFastPath, WebSocketFastPath
from svc.edge.limits import BodyLimit, arguments_too_deep, json_depth
from svc.enqueue import control, workflows
from svc.enqueue.submit import SubmitRequest
from svc.errors import (
    BadRequest,
    InvalidArguments,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    SvcError,
    UnknownTask,
    UnknownTaskId,
)
from svc.monitor import readiness
from svc.monitor.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from svc.runtime import Runtime
from svc.settings import get_settings
from svc.tasks import EXPOSED

log = logging.getLogger("svc.api")
Body = TypeVar("Body", bound=BaseModel)

STATIC = Path(__file__).parent / "static"
# The JS SDK the pages import: inside an installed wheel (setup.py copies it there), else this checkout's.
SDK_SOURCE = next(
    (
        path
        for path in (STATIC / "sdk", Path(__file__).resolve().parents[1] / "clients" / "js" / "src")
        if path.is_dir()
    ),
    None,
)
PROBLEM = "application/problem+json"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the process's Redis clients and bridge for the app's lifetime (and keep task tokens out of
    the server's logs, however the app is served)."""
    redact_request_logs()
    runtime = await Runtime.start(get_settings())
    app.state.runtime = runtime
    try:
        yield
    finally:
        await ws.shut_down_all(runtime)  # anything `svc api`'s graceful shutdown did not reach
        await runtime.stop()


class Problem(BaseModel):
    """An error (RFC 9457 problem details); some carry more members, e.g. ``errors`` or ``retry_after``."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries declaring problem-details bodies for these statuses."""
    content = {PROBLEM: {"schema": Problem.model_json_schema()}}
    return {status: {"description": HTTPStatus(status).phrase, "content": content} for status in statuses}


app = FastAPI(
    title="svc",
    responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 500, 503),
    summary="Submit Celery tasks without blocking and watch them live over WebSockets.",
    version="0.1.0",
    lifespan=lifespan,
    # Off unless asked for: even with no OpenTelemetry provider configured, FastAPI looks for one on
    # every request.
    telemetry=None if get_settings().otel else {"tracing": False, "metrics": False, "logs": False},
)
app.add_middleware(BodyLimit, limit=get_settings().max_body_bytes)


def openapi() -> dict[str, Any]:
    """FastAPI's schema, plus the models of bodies that routes parse themselves (``SubmitRequest``)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        submit_schema = SubmitRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(submit_schema.pop("$defs", {}))
        components["SubmitRequest"] = submit_schema
        app.openapi_schema = schema
    return app.openapi_schema


app.openapi = openapi  # type: ignore[method-assign]


def runtime_of(request: Request | WebSocket) -> Runtime:
    """The process's runtime (connections opened at startup)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def problem(error: SvcError, headers: dict[str, str] | None = None) -> JSONResponse:
    """A problem-details response for ``error`` (with Retry-After when rate-limited)."""
    if isinstance(error, RateLimited):
        headers = {**(headers or {}), "Retry-After": str(error.retry_after)}
    return JSONResponse(error.problem(), status_code=error.status, media_type=PROBLEM, headers=headers)


@app.exception_handler(SvcError)
async def _svc_error(_: Request, exc: SvcError) -> JSONResponse:
    return problem(exc)


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(error.get("type") in ("json_invalid", "json_type") for error in errors):
        return problem(BadRequest("the body is not valid JSON"))
    cleaned = [{key: error[key] for key in ("loc", "msg", "type") if key in error} for error in errors]
    return problem(InvalidArguments("the request does not match its schema", errors=cleaned))


def parse_body(model: type[Body], raw: bytes) -> Body:
    """Validate a JSON body (empty means all defaults): 400 when it is not JSON, 422 when it does not
    fit ``model``, with the errors in FastAPI's shape."""
    if not raw.strip():
        return model()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        if any(error["type"] == "json_invalid" for error in errors):
            raise BadRequest("the body is not valid JSON") from None
        cleaned = [
            {"loc": ["body", *error["loc"]], "msg": error["msg"], "type": error["type"]} for error in errors
        ]
        raise InvalidArguments("the request does not match its schema", errors=cleaned) from None


@app.exception_handler(RecursionError)
async def _too_deep(_: Request, exc: RecursionError) -> JSONResponse:
    return problem(BadRequest("the body nests too deeply"))


@app.exception_handler(Exception)
async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    return problem_for(exc)


def problem_for(exc: Exception) -> JSONResponse:
    """The problem response for any exception: its own for an SvcError, 503 for Redis, and for anything
    unforeseen a 500 with no detail (no traceback, no paths), the exception logged here in full."""
    if isinstance(exc, SvcError):
        return problem(exc)
    if isinstance(exc, RedisError):
        return problem(ServiceUnavailable(f"Redis is unreachable: {type(exc).__name__}"))
    log.exception("event=unhandled_error", exc_info=exc)
    return problem(SvcError("an unexpected error occurred; it has been logged"))


@app.exception_handler(RedisError)
async def _redis_error(_: Request, exc: RedisError) -> JSONResponse:
    return problem_for(exc)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (405, …) in the same problem shape."""
    error = SvcError(str(exc.detail))
    error.status, error.title = exc.status_code, HTTPStatus(exc.status_code).phrase
    return problem(error, headers=dict(exc.headers) if exc.headers else None)


AuthHeader = Annotated[str | None, Header(alias="authorization", include_in_schema=False)]


async def api_key_required(authorization: AuthHeader = None) -> None:
    """Dependency: 401 unless auth is off or a configured key is shown (checked before the body)."""
    auth.require_api_key(get_settings(), authorization)


KeyRequired = [Depends(api_key_required)]
TokenQuery = Annotated[str | None, Query(description="the task's token (from submit)", max_length=200)]


@app.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@app.get("/readyz", tags=["health"], responses={503: {"description": "not ready, with the reason"}})
async def readyz(request: Request) -> Any:
    """Redis and the broker answer, Redis will not evict svc's keys, and at least one worker is online."""
    try:
        return await readiness.check(runtime_of(request))
    except ServiceUnavailable as exc:
        return problem(exc)


@app.get("/tasks", tags=["tasks"], dependencies=KeyRequired)
async def catalogue() -> dict[str, list[dict[str, Any]]]:
    """The tasks that may be submitted, with their argument JSON schemas."""
    return {"tasks": [task.catalogue_entry() for task in EXPOSED.values()]}


class Accepted(BaseModel):
    """Response of a submit (SPEC "POST /tasks/{name}")."""

    task_id: str
    name: str
    state: str
    status_url: str
    ws_url: str
    token: str


SUBMIT_BODY = {
    "required": False,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SubmitRequest"}}},
}
IDEMPOTENCY_HEADER = {
    "name": "idempotency-key",
    "in": "header",
    "required": False,
    "description": "a repeated submit with the same key returns the first task id (for SVC_IDEMPOTENCY_TTL)",
    "schema": {"type": "string", "maxLength": 200},
}


@app.post(
    "/tasks/{name}",
    status_code=202,
    tags=["tasks"],
    response_model=Accepted,
    openapi_extra={"requestBody": SUBMIT_BODY, "parameters": [IDEMPOTENCY_HEADER]},
)
async def submit(name: str, request: Request) -> Response:
    """Enqueue a task; its events can be watched at ``ws_url`` with ``token``."""
    # Served by svc.edge.fastpath in front of the app; this route documents it and is the fallback.
    client = request.client.host if request.client else None
    return await submit_from_asgi(request.scope, name, request.headers, await request.body(), client)


SUBMIT_OUTCOMES = {404: "unknown", 422: "invalid", 429: "rate_limited", 503: "unavailable"}


async def submit_from_asgi(
    scope: Scope, name: str, headers: Headers, raw: bytes, host: str | None
) -> Response:
    """The submit, from what ASGI gives (the body and headers read by hand, not by FastAPI's parameter
    machinery); counts its outcome in ``svc_submits_total``."""
    runtime: Runtime = app.state.runtime
    outcome = "error"
    try:
        response = await _submit(runtime, name, headers, raw, host)
        outcome = "accepted"
        return response
    except SvcError as exc:
        outcome = SUBMIT_OUTCOMES.get(exc.status, "error")
        raise
    finally:
        runtime.metrics.submits[name if name in EXPOSED else "(unknown)", outcome] += 1


async def _submit(runtime: Runtime, name: str, headers: Headers, raw: bytes, host: str | None) -> Response:
    settings = runtime.settings
    authorization = headers.get("authorization")
    auth.require_api_key(settings, authorization)
    idempotency_key = headers.get("idempotency-key")
    if idempotency_key is not None and len(idempotency_key) > 200:
        raise InvalidArguments("the Idempotency-Key header is longer than 200 characters")
    body = parse_body(SubmitRequest, raw)
    exposed = EXPOSED.get(name)
    if exposed is None:
        raise UnknownTask(f"no task named {name!r} is exposed")
    if arguments_too_deep(raw, body.args, body.kwargs, settings.max_json_depth):
        raise InvalidArguments(f"arguments nest deeper than {settings.max_json_depth} levels")
    kwargs = exposed.validate(body.args, body.kwargs)
    await runtime.limiter.check(auth.client_identity(settings, authorization, host))
    submitted = await runtime.submitter.submit(name, kwargs, body.options, idempotency_key)
    return accepted(runtime, submitted.task_id, name)


def accepted(runtime: Runtime, task_id: str, name: str, **extra: str) -> Response:
    """The 202 answer of a submit: where to watch the task, and its token."""
    body = {
        "task_id": task_id,
        "name": name,
        "state": "PENDING",
        "status_url": f"/tasks/{task_id}",
        "ws_url": f"/ws/tasks/{task_id}",
        "token": auth.issue_token(runtime.settings, task_id),
        **extra,
    }
    return Response(orjson.dumps(body), status_code=202, media_type="application/json")


@app.get("/tasks/{task_id}", tags=["tasks"])
async def task_state(
    task_id: str, request: Request, token: TokenQuery = None, authorization: AuthHeader = None
) -> Response:
    """The task's latest event (the polling fallback)."""
    runtime = runtime_of(request)
    await auth.require_task_access(runtime.settings, task_id, token, authorization, runtime.workflow_of)
    latest = await runtime.history.latest(task_id) or await runtime.history.stored_result(task_id)
    if latest is None:
        raise UnknownTaskId(f"no task with id {task_id!r} is known")
    return Response(latest, media_type="application/json")


@app.get("/tasks/{task_id}/events", tags=["tasks"])
async def task_events(
    task_id: str, request: Request, token: TokenQuery = None, authorization: AuthHeader = None
) -> Response:
    """Every recorded event of the task, oldest first (what a WebSocket with ``since=0`` replays)."""
    runtime = runtime_of(request)
    await auth.require_task_access(runtime.settings, task_id, token, authorization, runtime.workflow_of)
    recorded = await runtime.history.all(task_id)
    if not recorded:
        raise UnknownTaskId(f"no events are recorded for task {task_id!r}")
    return Response(b"[" + b",".join(recorded) + b"]", media_type="application/json")


@app.post("/tasks/{task_id}/retry", status_code=202, tags=["tasks"], response_model=Accepted)
async def retry(
    task_id: str, request: Request, token: TokenQuery = None, authorization: AuthHeader = None
) -> Response:
    """Submit a finished task again with the same arguments, as a new task (``retry_of`` names the old)."""
    runtime = runtime_of(request)
    await auth.require_task_access(runtime.settings, task_id, token, authorization, runtime.workflow_of)
    host = request.client.host if request.client else None
    await runtime.limiter.check(auth.client_identity(runtime.settings, authorization, host))
    submitted = await control.retry(runtime, task_id)
    return accepted(runtime, submitted.task_id, submitted.name, retry_of=task_id)


@app.delete("/tasks/{task_id}", status_code=202, tags=["tasks"])
async def cancel(
    task_id: str,
    request: Request,
    token: TokenQuery = None,
    terminate: bool = False,
    authorization: AuthHeader = None,
) -> dict[str, Any]:
    """Revoke the task (every step, for a workflow id), stopping it if it runs and ``terminate`` is true.

    A queued task never starts; watchers get REVOKED.
    """
    runtime = runtime_of(request)
    await auth.require_task_access(runtime.settings, task_id, token, authorization, runtime.workflow_of)
    return await control.cancel(runtime, task_id, terminate)


class WorkflowAccepted(BaseModel):
    """Response of ``POST /workflows``."""

    workflow_id: str
    kind: str
    task_ids: list[str]
    status_url: str
    ws_url: str
    token: str


@app.post(
    "/workflows",
    status_code=202,
    tags=["workflows"],
    response_model=WorkflowAccepted,
    dependencies=KeyRequired,
)
async def submit_workflow(
    body: workflows.WorkflowRequest, request: Request, authorization: AuthHeader = None
) -> dict[str, Any]:
    """Run a chain, a group or a chord; its WebSocket carries every step's events and a final one."""
    runtime = runtime_of(request)
    settings = runtime.settings
    if json_depth(body.model_dump(mode="json")) > settings.max_json_depth + 4:
        raise InvalidArguments(f"arguments nest deeper than {settings.max_json_depth} levels")
    plan = workflows.plan(runtime.app, body, settings)
    host = request.client.host if request.client else None
    await runtime.limiter.check(auth.client_identity(settings, authorization, host))
    await runtime.submitter.submit_workflow(plan)
    workflow_id = plan.workflow_id
    return {
        "workflow_id": workflow_id,
        "kind": plan.kind,
        "task_ids": plan.task_ids,
        "status_url": f"/tasks/{workflow_id}",
        "ws_url": f"/ws/tasks/{workflow_id}",
        "token": auth.issue_token(runtime.settings, workflow_id),
    }


@app.get("/schedules", tags=["schedules"], dependencies=KeyRequired)
async def list_schedules() -> dict[str, list[dict[str, Any]]]:
    """Beat's periodic tasks with their next run times (UTC)."""
    return {"schedules": schedules.describe(get_settings())}


async def websocket_from_asgi(scope: Scope, receive: Receive, send: Send) -> bool:
    """Serve ``/ws/tasks/{task_id}`` and ``/ws`` (what the routes below declare, through the same
    functions, so the two ways in answer alike); False for other paths."""
    path: str = scope["path"]
    if path == "/ws":
        await ws.serve_many_socket(app.state.runtime, WebSocket(scope, receive, send))
        return True
    task_id = path.removeprefix("/ws/tasks/")
    if task_id == path or not task_id or "/" in task_id:
        return False
    await ws.serve_task_socket(app.state.runtime, WebSocket(scope, receive, send), task_id)
    return True


@app.websocket("/ws/tasks/{task_id}")
async def watch_task(websocket: WebSocket, task_id: str) -> None:
    """History then live events of one task (``?token=…&since=…``); closes 1000 after its terminal event."""
    await ws.serve_task_socket(runtime_of(websocket), websocket, task_id)


@app.websocket("/ws")
async def watch_many(websocket: WebSocket) -> None:
    """Many tasks on one connection (``?token=…``), driven by subscribe/unsubscribe frames (the JS SDK)."""
    await ws.serve_many_socket(runtime_of(websocket), websocket)


@app.websocket("/ws/dashboard")
async def watch_dashboard(websocket: WebSocket) -> None:
    """Workers, recent tasks, rates and queues: a snapshot, then changes twice a second."""
    await dashboard.serve_dashboard(runtime_of(websocket), websocket)


@app.get(
    "/metrics",
    tags=["health"],
    dependencies=KeyRequired,
    response_class=Response,
    responses={200: {"content": {METRICS_CONTENT_TYPE: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process (text exposition format)."""
    return Response(runtime_of(request).metrics.render(), media_type=METRICS_CONTENT_TYPE)


@app.get("/dashboard", include_in_schema=False)
async def dashboard_page(request: Request) -> FileResponse:
    """The live monitoring dashboard (its data comes over /ws/dashboard, behind the API key)."""
    if not runtime_of(request).settings.monitor:
        raise NotFound("the dashboard is off in this process (SVC_MONITOR=false)")
    return FileResponse(STATIC / "dashboard.html", media_type="text/html")


@app.get("/demo", include_in_schema=False)
async def demo() -> FileResponse:
    """The live demo page (uses the JS SDK served at /sdk)."""
    return FileResponse(STATIC / "demo.html", media_type="text/html")


if SDK_SOURCE is not None:
    app.mount("/sdk", StaticFiles(directory=SDK_SOURCE), name="sdk")


# What uvicorn serves (`svc api`): the fast lanes of submit and the task WebSockets in front of the
# FastAPI app, outside its middleware stack, which they would otherwise pay for on every request and
# every open socket; everything else (and the lifespan) goes to the app. See svc/fastpath.py.
asgi = WebSocketFastPath(
    SubmitFastPath(app, submit_from_asgi, problem_for, get_settings().max_body_bytes), websocket_from_asgi
)
