"""HTTP and WebSocket routes (SPEC "HTTP" and "WebSocket"): parse, call one domain function, shape.

The routes are declared once, on ``router``; ``build_asgi(gateway)`` makes a FastAPI app of them for one
gateway, with the fast lanes of svc.edge.fastpath in front serving some of the same routes. Every route
finds its gateway in ``request.app.state.gateway`` and shapes URLs with the request's ``root_path``, so
the API works alike served alone (``svc api``, ``uvicorn svc.demo:app``) or mounted under a prefix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Protocol

import orjson
from celery import Celery
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from svc import schedules
from svc.edge import auth, dashboard, sse, submissions, ws
from svc.edge.fastpath import FastLanes
from svc.edge.limits import BodyLimit
from svc.edge.problems import EXCEPTION_HANDLERS, problem, problem_for, problem_responses
from svc.edge.receipts import Accepted, WorkflowAccepted, accepted
from svc.enqueue import workflows
from svc.enqueue.submit import SubmitRequest
from svc.errors import BadRequest, NotFound, ServiceUnavailable, TooManyConnections, UnknownTaskId
from svc.monitor.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from svc.runtime import Runtime
from svc.settings import Settings


class ServingGateway(Protocol):
    """What the routes need of the gateway that serves them (svc.gateway.Gateway)."""

    @property
    def app(self) -> Celery: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def runtime(self) -> Runtime: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *_: object) -> None: ...


STATIC = Path(__file__).parent / "static"
DASHBOARD_ASSETS = STATIC / "dashboard"
# The JS SDK the pages import: inside an installed wheel (setup.py copies it there), else this checkout's.
SDK_SOURCE = next(
    (
        path
        for path in (STATIC / "sdk", Path(__file__).resolve().parents[1] / "clients" / "js" / "src")
        if path.is_dir()
    ),
    None,
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Served alone (``svc api``, ``uvicorn svc.demo:app``), the app starts its gateway; mounted, the
    parent app's ``gateway.lifespan`` does (Starlette runs no lifespan of a mounted app)."""
    async with gateway_of(app):
        yield


# Every route's error answers are problem details (for OpenAPI: each route carries them).
router = APIRouter(responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 429, 500, 503))


def gateway_of(owner: FastAPI | Request | WebSocket) -> ServingGateway:
    """The gateway whose FastAPI app serves ``owner`` (the app, a request, a socket)."""
    app = owner if isinstance(owner, FastAPI) else owner.app
    gateway: ServingGateway = app.state.gateway
    return gateway


def settings_of(request: Request | WebSocket) -> Settings:
    """The serving gateway's settings."""
    return gateway_of(request).settings


def openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, plus the models of bodies that routes parse themselves (``SubmitRequest``)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        submit_schema = SubmitRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(submit_schema.pop("$defs", {}))
        components["SubmitRequest"] = submit_schema
        app.openapi_schema = schema
    return app.openapi_schema


def runtime_of(request: Request | WebSocket) -> Runtime:
    """The serving gateway's runtime (503 when its lifespan has not started it)."""
    return gateway_of(request).runtime


def prefix_of(scope: Scope) -> str:
    """The path the API is served under (a mount, a proxy's root path): every URL it returns carries it."""
    root: str = scope.get("root_path", "")
    return root.rstrip("/")


AuthHeader = Annotated[str | None, Header(alias="authorization", include_in_schema=False)]


async def api_key_required(request: Request, authorization: AuthHeader = None) -> None:
    """Dependency: 401 unless auth is off or a configured key is shown (checked before the body)."""
    auth.require_api_key(settings_of(request), authorization)


KeyRequired = [Depends(api_key_required)]
TokenQuery = Annotated[str | None, Query(description="the task's token (from submit)", max_length=200)]


@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], responses={503: {"description": "not ready, with the reason"}})
async def readyz(request: Request) -> Any:
    """Redis and the broker answer, Redis will not evict svc's keys, and at least one worker is online."""
    try:
        return await runtime_of(request).readiness()
    except ServiceUnavailable as exc:
        return problem(exc)


@router.get("/tasks", tags=["tasks"], dependencies=KeyRequired)
async def catalogue(request: Request) -> dict[str, list[dict[str, Any]]]:
    """The tasks that may be submitted, with their argument JSON schemas and what their recent runs took
    (``runtime``: p50 and p95 seconds from STARTED to the end, and how many runs, as this API process
    saw them; null before any, or with SVC_MONITOR=false)."""
    runtime = runtime_of(request)
    monitor = runtime.monitor if runtime.settings.monitor else None
    return {
        "tasks": [
            {**task.catalogue_entry(), "runtime": monitor.runtime_of(task.name) if monitor else None}
            for task in runtime.exposed.values()
        ]
    }


SUBMIT_BODY = {
    "required": False,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SubmitRequest"}}},
}
# Declared for OpenAPI from the one limit; checked by svc.edge.submissions on both ways in, so that the
# fast lane and this route answer alike.
IdempotencyHeader = Annotated[
    str | None,
    Header(
        alias="idempotency-key",
        description="a repeated submit with the same key returns the first task id (for SVC_IDEMPOTENCY_TTL)",
        json_schema_extra={"maxLength": submissions.IDEMPOTENCY_KEY_MAX},
    ),
]


@router.post(
    "/tasks/{name}",
    status_code=202,
    tags=["tasks"],
    response_model=Accepted,
    openapi_extra={"requestBody": SUBMIT_BODY},
)
async def submit(name: str, request: Request, idempotency_key: IdempotencyHeader = None) -> Response:
    """Enqueue a task; its events can be watched at ``ws_url`` with ``token``."""
    # Served by the fast lane in front of the app; this route declares it and is the fallback.
    client = request.client.host if request.client else None
    body = await request.body()
    params = {"name": name}
    return await submit_from_asgi(gateway_of(request), request.scope, params, request.headers, body, client)


async def submit_from_asgi(
    gateway: ServingGateway,
    scope: Scope,
    params: dict[str, Any],
    headers: Headers,
    raw: bytes,
    host: str | None,
) -> Response:
    """The submit, from what ASGI gives (the body and headers read by hand, not by FastAPI's parameter
    machinery): svc.edge.submissions.submit_task, answered 202."""
    runtime = gateway.runtime
    body = await submissions.submit_task(runtime, prefix_of(scope), params["name"], headers, raw, host)
    return Response(orjson.dumps(body), status_code=202, media_type="application/json")


@router.get("/tasks/{task_id}", tags=["tasks"])
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


SinceQuery = Annotated[
    str | None, Query(description="server-sent events: resume after this seq", max_length=24)
]
LastEventIdHeader = Annotated[str | None, Header(alias="last-event-id", include_in_schema=False)]
EVENTS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the recorded events (JSON), or with ``Accept: text/event-stream`` every frame "
        "from ``since`` as server-sent events until the terminal event",
        "content": {"application/json": {}, sse.MEDIA_TYPE: {"schema": {"type": "string"}}},
    }
}


@router.get("/tasks/{task_id}/events", tags=["tasks"], responses=EVENTS_RESPONSES)
async def task_events(
    task_id: str,
    request: Request,
    token: TokenQuery = None,
    since: SinceQuery = None,
    authorization: AuthHeader = None,
    last_event_id: LastEventIdHeader = None,
) -> Response:
    """Every recorded event of the task, oldest first (what a WebSocket with ``since=0`` replays); with
    ``Accept: text/event-stream``, the WebSocket's frames (events and stream chunks) as server-sent
    events, resumed after ``Last-Event-ID`` or ``since``, ending after the terminal event."""
    runtime = runtime_of(request)
    await auth.require_task_access(runtime.settings, task_id, token, authorization, runtime.workflow_of)
    if sse.wants_event_stream(request.headers.get("accept")):
        resume = sse.parse_resume(last_event_id, since)
        if resume is None or not ws.TASK_ID.match(task_id):
            raise BadRequest(ws.SINCE_ERROR if resume is None else "task_id is malformed")
        host = request.client.host if request.client else None
        client = auth.client_identity(runtime.settings, authorization, host)
        if runtime.connections_full(client):
            raise TooManyConnections("too many connections from this client")
        return sse.event_stream(runtime, task_id, resume, client)
    recorded = await runtime.history.all(task_id)
    if not recorded:
        raise UnknownTaskId(f"no events are recorded for task {task_id!r}")
    return Response(b"[" + b",".join(recorded) + b"]", media_type="application/json")


@router.post("/tasks/{task_id}/retry", status_code=202, tags=["tasks"], response_model=Accepted)
async def retry(
    task_id: str, request: Request, token: TokenQuery = None, authorization: AuthHeader = None
) -> Response:
    """Submit a finished task again with the same arguments, as a new task (``retry_of`` names the old)."""
    runtime = runtime_of(request)
    await auth.require_task_access(runtime.settings, task_id, token, authorization, runtime.workflow_of)
    host = request.client.host if request.client else None
    await runtime.limiter.check(auth.client_identity(runtime.settings, authorization, host))
    submitted = await runtime.control.retry(task_id)
    body = accepted(
        runtime.settings, prefix_of(request.scope), submitted.task_id, submitted.name, retry_of=task_id
    )
    return Response(orjson.dumps(body), status_code=202, media_type="application/json")


@router.delete("/tasks/{task_id}", status_code=202, tags=["tasks"])
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
    return await runtime.control.cancel(task_id, terminate)


@router.post(
    "/workflows",
    status_code=202,
    tags=["workflows"],
    response_model=WorkflowAccepted,
    dependencies=KeyRequired,
)
async def submit_workflow(
    body: workflows.WorkflowRequest, request: Request, authorization: AuthHeader = None
) -> WorkflowAccepted:
    """Run a chain, a group or a chord; its WebSocket carries every step's events and a final one."""
    host = request.client.host if request.client else None
    prefix = prefix_of(request.scope)
    return await submissions.submit_workflow(runtime_of(request), prefix, body, authorization, host)


@router.get("/schedules", tags=["schedules"], dependencies=KeyRequired)
async def list_schedules(request: Request) -> dict[str, list[dict[str, Any]]]:
    """Beat's periodic tasks (the app's ``beat_schedule``) with their next run times (UTC)."""
    return {"schedules": schedules.describe(gateway_of(request).app)}


async def task_socket_from_asgi(
    gateway: ServingGateway, scope: Scope, receive: Receive, send: Send, params: dict[str, Any]
) -> None:
    """The fast lane of ``/ws/tasks/{task_id}``: the route below, without FastAPI's frames under it."""
    websocket = WebSocket(scope, receive, send)
    await ws.serve_task_socket(gateway.runtime, websocket, params["task_id"])


async def many_socket_from_asgi(
    gateway: ServingGateway, scope: Scope, receive: Receive, send: Send, params: dict[str, Any]
) -> None:
    """The fast lane of ``/ws``."""
    await ws.serve_many_socket(gateway.runtime, WebSocket(scope, receive, send))


@router.websocket("/ws/tasks/{task_id}")
async def watch_task(websocket: WebSocket, task_id: str) -> None:
    """History then live events of one task (``?token=…&since=…``); closes 1000 after its terminal event."""
    await ws.serve_task_socket(runtime_of(websocket), websocket, task_id)


@router.websocket("/ws")
async def watch_many(websocket: WebSocket) -> None:
    """Many tasks on one connection (``?token=…``), driven by subscribe/unsubscribe frames (the JS SDK)."""
    await ws.serve_many_socket(runtime_of(websocket), websocket)


@router.websocket("/ws/dashboard")
async def watch_dashboard(websocket: WebSocket) -> None:
    """Workers, recent tasks, rates and queues: a snapshot, then changes twice a second."""
    await dashboard.serve_dashboard(runtime_of(websocket), websocket)


@router.get(
    "/metrics",
    tags=["health"],
    dependencies=KeyRequired,
    response_class=Response,
    responses={200: {"content": {METRICS_CONTENT_TYPE: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process (text exposition format)."""
    return Response(runtime_of(request).metrics.render(), media_type=METRICS_CONTENT_TYPE)


@router.get("/dashboard", include_in_schema=False)
async def dashboard_page(request: Request) -> FileResponse:
    """The live monitoring dashboard (its data comes over /ws/dashboard, behind the API key)."""
    if not runtime_of(request).settings.monitor:
        raise NotFound("the dashboard is off in this process (SVC_MONITOR=false)")
    return FileResponse(STATIC / "dashboard.html", media_type="text/html")


@router.get("/demo", include_in_schema=False)
async def demo() -> FileResponse:
    """The live demo page (uses the JS SDK served at /sdk)."""
    return FileResponse(STATIC / "demo.html", media_type="text/html")


def build_asgi(gateway: ServingGateway) -> tuple[FastAPI, ASGIApp]:
    """The FastAPI app of ``gateway`` (every route of ``router``, the problem-details handlers, the body
    limit, /sdk) and, in front of it, the fast lanes serving submit and the task WebSockets."""
    settings = gateway.settings
    app = FastAPI(
        title="svc",
        summary="Submit Celery tasks without blocking and watch them live over WebSockets.",
        version="0.1.0",
        lifespan=lifespan,
        # Off unless asked for: even with no OpenTelemetry provider configured, FastAPI looks for one on
        # every request.
        telemetry=None if settings.otel else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.gateway = gateway
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    for error, handler in EXCEPTION_HANDLERS:
        app.add_exception_handler(error, handler)
    # The route objects themselves, not include_router: FastAPI resolves an included router's routes
    # on every request, about 10 µs each on this machine (BENCHMARKS.md, issue 14).
    app.router.routes.extend(router.routes)
    if SDK_SOURCE is not None:
        app.mount("/sdk", StaticFiles(directory=SDK_SOURCE), name="sdk")
    # The dashboard page's own ES modules (imported relative to /dashboard, so a prefix carries over).
    app.mount("/dashboard-assets", StaticFiles(directory=DASHBOARD_ASSETS, check_dir=False), name="dashboard")
    app.openapi = lambda: openapi(app)  # type: ignore[method-assign]
    sockets = {
        "watch_task": partial(task_socket_from_asgi, gateway),
        "watch_many": partial(many_socket_from_asgi, gateway),
    }
    submit_lane = ("submit", partial(submit_from_asgi, gateway))
    lanes: ASGIApp = FastLanes(app, router.routes, submit_lane, sockets, problem_for, settings.max_body_bytes)
    if settings.allowed_origins:
        # Pages on the allow-listed origins may call the HTTP API as well as open its sockets: CORS on
        # the FastAPI app (served alone) and in front of the fast lanes (which answer submits before
        # it). A CORSMiddleware of the user's own around a mount replaces these headers, never doubles
        # them (Starlette sets each one).
        app.add_middleware(CORSMiddleware, **cors_options(settings))
        lanes = CORSMiddleware(lanes, **cors_options(settings))
    return app, lanes


def cors_options(settings: Settings) -> dict[str, Any]:
    """What browsers on ``SVC_ALLOWED_ORIGINS`` may do over HTTP: the API's methods and the headers its
    clients send (a key in ``Authorization``, never cookies), and read ``Retry-After``."""
    return {
        "allow_origins": list(settings.allowed_origins),
        "allow_methods": ["GET", "POST", "DELETE"],
        "allow_headers": ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
        "expose_headers": ["Retry-After"],
        "max_age": 600,
    }
