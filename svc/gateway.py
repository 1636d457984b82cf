"""``svc.Gateway(app)``: svc's API for one Celery app, to mount in a team's FastAPI app or to serve alone.

A gateway holds everything one API needs and nothing is shared with another gateway: the app, its
settings, its catalogue of exposed tasks, and, while its lifespan runs, its runtime (Redis clients,
the bridge, the monitor). Making one does no I/O; ``gateway.lifespan`` (for FastAPI) or
``async with gateway`` starts it, and stopping it closes every socket and client it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.to_thread
from celery import Celery, Signature
from celery.canvas import _chain, chord, group
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp

from svc.api import build_asgi
from svc.edge import ws
from svc.edge.access_log import redact_request_logs
from svc.edge.receipts import Accepted, WorkflowAccepted, accepted, workflow_accepted
from svc.enqueue import workflows
from svc.enqueue.message import SubmitOptions
from svc.errors import ConfigurationError, InvalidArguments, ServiceUnavailable
from svc.exposure import ExposedTask, exposed_tasks
from svc.fanout.outbox import Outbox
from svc.runtime import Runtime
from svc.settings import Settings
from svc.wire import events
from svc.wiring import Wiring, wiring_for
from svc.worker.instrument import instrument, instrumentation_of

WATCH_QUEUE = 1000  # events a watch() holds for a slow reader before PROGRESS coalesces (svc.fanout.outbox)
# What a signature's options may hold to go the way of POST /tasks/{name}; others go through Celery.
PLAIN_OPTIONS = frozenset(SubmitOptions.model_fields) | {"task_id"}


class Gateway:
    """svc's HTTP and WebSocket API for one Celery app (SPEC "Using svc in a project that already has
    Celery")."""

    def __init__(self, app: Celery, *, settings: Settings | None = None, prefix: str | None = None) -> None:
        """``settings`` default to those the app was instrumented with, else the ``SVC_*``
        environment; ``prefix`` is where ``asgi`` is mounted (found from the FastAPI app's routes when
        its lifespan is ``gateway.lifespan``; only needed for URLs that ``submit`` returns outside a
        request). Instruments ``app`` (``svc.instrument``) if it is not yet."""
        if not isinstance(app, Celery):
            raise TypeError(f"svc.Gateway takes a Celery app, got {app!r}")
        self.app = instrument(app, settings)
        instrumented = instrumentation_of(app)
        if instrumented is None:  # instrument() has just attached it
            raise RuntimeError(f"{app!r} could not be instrumented")
        self.settings = settings or instrumented.settings
        self.prefix = (prefix or "").rstrip("/")
        self._runtime: Runtime | None = None
        self._starts = 0
        self._lock = asyncio.Lock()
        self.fastapi, self.asgi = build_asgi(self)

    # Lifecycle -------------------------------------------------------------------------------------

    @property
    def runtime(self) -> Runtime:
        """The started gateway's connections; ServiceUnavailable (503) before its lifespan started."""
        if self._runtime is None:
            raise ServiceUnavailable(
                "svc's gateway is not started: give your FastAPI app lifespan=gateway.lifespan "
                "(or run `async with gateway:`)"
            )
        return self._runtime

    @property
    def started(self) -> bool:
        """True while the lifespan runs."""
        return self._runtime is not None

    async def start(self) -> None:
        """Load the app's tasks and catalogue, then open its Redis clients, bridge and monitor. Nested
        starts are counted: the last matching stop closes. Raises ConfigurationError for a setup svc
        cannot serve (no Redis to use, a task exposed twice)."""
        async with self._lock:
            self._starts += 1
            if self._runtime is not None:
                return
            try:
                wiring, exposed = await anyio.to_thread.run_sync(self._prepare)
                redact_request_logs()
                self._runtime = await Runtime.start(self.settings, self.app, wiring, exposed)
            except BaseException:
                self._starts -= 1
                raise

    def _prepare(self) -> tuple[Wiring, dict[str, ExposedTask]]:
        """Import the app's task modules (its ``include``/``imports``, and autodiscovery) and build its
        catalogue; blocking, so it runs in a thread."""
        self.app.loader.import_default_modules()
        return wiring_for(self.app, self.settings), exposed_tasks(self.app, self.settings.expose)

    async def stop(self) -> None:
        """Close every socket with 1001 and every client (when the last start ends)."""
        async with self._lock:
            self._starts = max(0, self._starts - 1)
            runtime = self._runtime
            if self._starts or runtime is None:
                return
            self._runtime = None
            await ws.shut_down_all(runtime)
            await runtime.stop()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    @property
    def lifespan(self) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
        """A FastAPI/Starlette lifespan: ``FastAPI(lifespan=gateway.lifespan)``, or inside an app's own
        lifespan ``async with gateway.lifespan(app): ...``. It also finds where ``asgi`` is mounted."""

        @contextlib.asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[None]:
            if not self.prefix:
                self.prefix = mount_path(getattr(app, "routes", []), self.asgi) or ""
            async with self:
                yield

        return lifespan

    # Server-side API ---------------------------------------------------------------------------------

    @property
    def exposed(self) -> dict[str, ExposedTask]:
        """The catalogue: the tasks HTTP clients may submit (known once started)."""
        return self.runtime.exposed

    async def submit(self, signature: Signature) -> Accepted | WorkflowAccepted:
        """Enqueue a task, chain, group or chord without blocking, the way ``POST /tasks/{name}`` (or
        ``POST /workflows``) does, and return what that route returns. Any task of the app may be
        submitted, exposed or not; its arguments go as given (no schema applies server-side)."""
        runtime = self.runtime
        if isinstance(signature, _chain | group | chord):
            plan = workflows.plan_canvas(signature, self.settings)
            await runtime.submitter.submit_workflow(plan)
            return workflow_accepted(self.settings, self.prefix, plan.workflow_id, plan.kind, plan.task_ids)
        if not isinstance(signature, Signature):
            raise TypeError(f"gateway.submit takes a Celery signature (task.s(...)), got {signature!r}")
        name = str(signature.task)
        options = dict(signature.options)
        task_id = options.pop("task_id", None)
        if task_id is not None or not options.keys() <= PLAIN_OPTIONS:
            submitted_id = await runtime.submitter.submit_signature(signature)
        else:
            try:
                plain = SubmitOptions.model_validate(options)
            except Exception as exc:
                raise InvalidArguments(f"options do not fit a submit: {exc}") from None
            submitted = await runtime.submitter.submit(
                name, dict(signature.kwargs), plain, args=tuple(signature.args)
            )
            submitted_id = submitted.task_id
        return Accepted(**accepted(self.settings, self.prefix, submitted_id, name))

    async def watch(self, task_id: str, since: int = 0) -> AsyncIterator[dict[str, Any]]:
        """The task's events after ``since`` (its history, then live), as dicts in the SPEC's event
        shape, and its stream chunks among them in seq order (``{"op": "stream", …}``), ending after
        the terminal event (a workflow's: its own final event). Events wait for a slow
        reader in a bounded queue: past ``WATCH_QUEUE`` of them, PROGRESS steps are coalesced, and past
        twice that the iterator raises ``svc.fanout.outbox.Overflow``. An id nobody submitted is waited
        for, as on a WebSocket: put a timeout around it where that matters."""
        runtime = self.runtime
        if since < 0:
            raise ValueError("since must be a non-negative integer")
        outbox = Outbox(WATCH_QUEUE)
        async with runtime.bridge.watch(task_id, since, outbox):
            while True:
                frame = await outbox.get()
                event = events.parse(frame.text)
                yield event
                if frame.state in events.TERMINAL_STATES and event.get("task_id") == task_id:
                    return


def mount_path(routes: list[BaseRoute], target: ASGIApp, above: str = "") -> str | None:
    """The path at which ``target`` is mounted among ``routes`` (searched through nested mounts)."""
    for route in routes:
        if isinstance(route, Mount):
            here = above + route.path
            if route.app is target:
                return here
            found = mount_path(getattr(route.app, "routes", []) or [], target, here)
            if found is not None:
                return found
    return None


__all__ = ["ConfigurationError", "Gateway"]
