"""svc: submit Celery tasks from FastAPI without blocking and watch every task live over WebSockets.

The public names, each imported on first use (a worker that calls ``svc.instrument`` never loads the
API side):

- ``svc.instrument(app)``: svc's events for every task of a Celery app (svc/worker/instrument.py);
- ``svc.expose``: make a task submittable over HTTP, its schema derived or given (svc/exposure.py);
- ``svc.Gateway(app)``: the HTTP and WebSocket API for that app, to mount or serve (svc/gateway.py);
- ``svc.report_progress(current, total, message)``: a PROGRESS event from inside a running task;
- ``svc.stream(data, name="output")`` and ``svc.stream_from(chunks, name="output")``: a running task's
  partial output, streamed to its watchers (svc/worker/streams.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "ConfigurationError",
    "Gateway",
    "expose",
    "instrument",
    "report_progress",
    "stream",
    "stream_from",
]

if TYPE_CHECKING:
    from svc.errors import ConfigurationError
    from svc.exposure import expose
    from svc.gateway import Gateway
    from svc.worker.instrument import instrument
    from svc.worker.publisher import report_progress
    from svc.worker.streams import stream, stream_from

_WHERE = {
    "ConfigurationError": "svc.errors",
    "Gateway": "svc.gateway",
    "expose": "svc.exposure",
    "instrument": "svc.worker.instrument",
    "report_progress": "svc.worker.publisher",
    "stream": "svc.worker.streams",
    "stream_from": "svc.worker.streams",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'svc' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
