"""PENDING from every process that sends an instrumented app's tasks: ``.delay()``, ``apply_async``,
``send_task``, and the next step of a chain sent by a worker.

Celery publishes every task message through one function per app, ``app.amqp.send_task_message``; svc
gives the app an AMQP class whose sender records PENDING in the events Redis just before the message
goes out, so no worker event can take ``seq`` 1 before it. It is recorded only for a task with no event
yet: a retry's message, or a step the API already recorded, adds nothing. A PENDING that cannot be
recorded within about a second (one try, ``svc.worker.state.QUICK_TIMEOUT``) is logged and the message
is sent all the same: svc never stops a team's own ``.delay()``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import Any

from celery import Celery
from celery.utils.imports import symbol_by_name

from svc.wire import events
from svc.worker.state import Instrumentation

log = logging.getLogger("svc.worker.sender")
# Set while the API sends messages whose PENDING it has recorded itself (its workflows, kombu's path).
_recorded_already: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "svc_recorded_already", default=False
)


@contextlib.contextmanager
def pending_recorded() -> Iterator[None]:
    """Within this block (and the threads anyio starts from it), sends record no PENDING of their own."""
    token = _recorded_already.set(True)
    try:
        yield
    finally:
        _recorded_already.reset(token)


def recording(state: Instrumentation, send: Callable[..., Any]) -> Callable[..., Any]:
    """``send`` (Celery's ``send_task_message``), recording each task's PENDING before it publishes."""

    def send_task_message(producer: Any, name: str, message: Any, *args: Any, **kwargs: Any) -> Any:
        headers = message[0] if isinstance(message, tuple) else None
        task_id = headers.get("id") if isinstance(headers, dict) else None
        if isinstance(task_id, str) and not _recorded_already.get():
            try:
                body = events.encode_body(task_id, name, "PENDING")
                state.publish_to(task_id, "PENDING", body, only_if=events.ONLY_IF_NEW, quick=True)
            except Exception:  # the events Redis is not configured or not reachable: send anyway
                log.exception("event=pending_not_recorded task_id=%s", task_id)
        return send(producer, name, message, *args, **kwargs)

    return send_task_message


def install(app: Celery, state: Instrumentation) -> None:
    """Give ``app`` an AMQP class whose task sender records PENDING (its existing AMQP object too)."""
    base = symbol_by_name(app.amqp_cls)

    class RecordingAMQP(base):  # type: ignore[misc, valid-type]
        """Celery's AMQP of this app, with svc's PENDING recorded by its task sender."""

        @cached_property
        def send_task_message(self) -> Callable[..., Any]:
            return recording(state, self._create_task_sender())

    RecordingAMQP.__qualname__ = f"svc_{base.__name__}"
    app.amqp_cls = RecordingAMQP
    existing = app.__dict__.get("amqp")  # already made (cached): give it the new class as well
    if existing is not None:
        existing.__class__ = RecordingAMQP
        existing.__dict__.pop("send_task_message", None)
