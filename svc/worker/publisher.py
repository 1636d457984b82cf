"""Worker side: turn Celery's signals into svc events in Redis, whoever submitted the task.

Each handler acts only for a task of an app that ``svc.instrument`` was given, and publishes with that
app's settings to that app's events Redis (svc.worker.state). Handlers run where Celery fires them:
RECEIVED and REVOKED in the worker's main process, the rest in the pool child that runs the task. Each
process opens its own Redis connection (never one inherited across fork). Terminal events are
published from signals that Celery fires after the result is stored in the backend, so
``AsyncResult.get()`` always agrees with them.

A message that can never run ends as FAILURE too, so no watcher waits for it: Celery's
``task_rejected`` (content type not accepted, invalid task message, not a task message) and
``task_internal_error`` (an error outside the task's body, in the pool) fire no result of their own,
so svc stores the failure in the sender app's result backend first and announces it after; the worker's
consumer steps (svc/worker/steps.py) call the same functions for undecodable bodies and for messages
the transport parked. Refused messages are parked on the dead-letter list (svc/worker/transport.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
import time
from typing import Any

import orjson
import redis
from celery import signals
from celery._state import get_current_task

from svc.wire import events
from svc.worker.state import Instrumentation, instrumentation_of

log = logging.getLogger("svc.worker.publisher")

HEARTBEAT_SECONDS = 2.0
ARGS_SUMMARY_MAX = 120


def state_of(owner: Any) -> Instrumentation | None:
    """The instrumentation of the app ``owner`` (a task, a consumer, a worker) belongs to, if any."""
    return instrumentation_of(getattr(owner, "app", None))


def _when(countdown_or_eta: Any) -> str | None:
    """The ISO time of a retry's next attempt."""
    if isinstance(countdown_or_eta, dt.datetime):
        return countdown_or_eta.isoformat()
    if isinstance(countdown_or_eta, int | float):
        return dt.datetime.fromtimestamp(time.time() + countdown_or_eta, dt.UTC).isoformat()
    return None


def _remember_hostname(sender: str, instance: Any = None, **_: Any) -> None:
    state = state_of(instance)
    if state is not None:
        state.hostname = sender


def _on_received(sender: Any, request: Any, **_: Any) -> None:
    state = state_of(sender)
    if state is None:
        return
    retries = (getattr(request, "request_dict", None) or {}).get("retries") or 0
    published = state.publish(
        request.id,
        request.name,
        "RECEIVED",
        retries=retries,
        worker=request.hostname,
        args=args_summary(request),
    )
    if published.revoked:
        # Cancelled through the API, maybe before this worker was up to hear the revoke broadcast:
        # Celery's own revoked set makes the worker drop it (and fire task_revoked) instead of running it.
        from celery.worker import state as worker_state

        worker_state.revoked.add(request.id)


def _announce_retry(headers: dict[str, Any], **_: Any) -> None:
    """RETRY goes out before the retry message does, so the next attempt's events never overtake it."""
    current_task = get_current_task()
    if current_task is None or not current_task.request.id or headers.get("id") != current_task.request.id:
        return
    state = state_of(current_task)
    if state is None:
        return
    request = current_task.request
    retries = headers.get("retries") or 0
    if retries <= (request.retries or 0):
        return
    exc = sys.exc_info()[1]
    state.publish(
        request.id,
        current_task.name,
        "RETRY",
        error=events.describe_error(exc) if exc is not None else None,
        retries=retries,
        worker=request.hostname,
        eta=headers.get("eta"),
    )
    state.announced_retry = (request.id, retries)


def args_summary(request: Any) -> str:
    """A short, readable form of a task's arguments (Celery's own reprs), for monitoring views."""
    parts = [getattr(request, "argsrepr", None) or "", getattr(request, "kwargsrepr", None) or ""]
    text = ", ".join(part for part in parts if part not in ("", "()", "[]", "{}"))
    return text if len(text) <= ARGS_SUMMARY_MAX else text[: ARGS_SUMMARY_MAX - 1] + "…"


def _runtime(state: Instrumentation, task_id: str) -> dict[str, float]:
    """``{"runtime": seconds}`` since this task's STARTED in this process, if it started here."""
    started = state.started.pop(task_id, None)
    return {} if started is None else {"runtime": round(time.monotonic() - started, 6)}


def _on_started(task_id: str, task: Any, **_: Any) -> None:
    state = state_of(task)
    if state is None:
        return
    state.started[task_id] = time.monotonic()
    state.publish(
        task_id, task.name, "STARTED", retries=task.request.retries or 0, worker=task.request.hostname
    )


def _on_retry(sender: Any, request: Any, reason: Any, **_: Any) -> None:
    state = state_of(sender)
    if state is None:
        return
    state.started.pop(request.id, None)
    if state.announced_retry == (request.id, (request.retries or 0) + 1):
        return  # already announced when the retry message was published
    exc = getattr(reason, "exc", None) or reason
    state.publish(
        request.id,
        sender.name,
        "RETRY",
        error=events.describe_error(exc),
        retries=(request.retries or 0) + 1,
        worker=request.hostname,
        eta=_when(getattr(reason, "when", None)),
    )


def _on_success(sender: Any, result: Any, **_: Any) -> None:
    state = state_of(sender)
    if state is None:
        return
    request = sender.request
    state.publish(
        request.id,
        sender.name,
        "SUCCESS",
        result=result,
        retries=request.retries or 0,
        worker=request.hostname,
        **_runtime(state, request.id),
    )


def _on_failure(sender: Any, task_id: str, exception: BaseException, **_: Any) -> None:
    state = state_of(sender)
    if state is None:
        return
    request = sender.request
    retries = (request.retries or 0) if request.id == task_id else 0
    max_retries = getattr(sender, "max_retries", None)
    exhausted = {"retries_exhausted": True} if max_retries and retries >= max_retries else {}
    state.publish(
        task_id,
        sender.name,
        "FAILURE",
        error=exception,
        retries=retries,
        **exhausted,
        **_runtime(state, task_id),
    )


def _on_revoked(sender: Any, request: Any, terminated: bool, expired: bool, **_: Any) -> None:
    state = state_of(sender)
    if state is None:
        return
    reason = "expired" if expired else "terminated" if terminated else "revoked"
    name = getattr(request, "task", None) or getattr(sender, "name", None)
    state.publish(request.id, name, "REVOKED", error=events.revoked_error(reason))


def _on_unknown(sender: Any, name: str, id: str, exc: BaseException, **_: Any) -> None:
    """A message for a task this worker does not know: announce a FAILURE, never a hang (Celery's
    consumer has already stored ``NotRegistered`` in the result backend before this signal)."""
    state = state_of(sender)
    if state is None:
        return
    state.publish(id, name, "FAILURE", error={"type": "NotRegistered", "message": f"no task named {name!r}"})


def fail_unrunnable(app: Any, task_id: str, name: str | None, exc: BaseException) -> bool:
    """End a task whose message can never run: store FAILURE in ``app``'s result backend, then announce
    it (only once stored, so ``AsyncResult`` agrees). Never raises; True once published."""
    state = instrumentation_of(app)
    if state is None:
        return False
    try:
        app.backend.mark_as_failure(task_id, exc)
    except Exception:
        log.exception("event=failure_store_failed task_id=%s", task_id)
        return False
    return state.publish(task_id, name, "FAILURE", error=events.describe_error(exc)).seq > 0


def reject_reason(exc: BaseException | None) -> str:
    """The dead-letter ``reason`` of a message Celery would not run."""
    from celery.exceptions import InvalidTaskError
    from kombu.exceptions import ContentDisallowed, DecodeError

    if exc is None:
        return "unknown_message"
    if isinstance(exc, ContentDisallowed):
        return "content_disallowed"
    if isinstance(exc, DecodeError):
        return "decode_error"
    if isinstance(exc, InvalidTaskError):
        return "invalid_task"
    return type(exc).__name__


def fail_message(app: Any, message: Any, exc: BaseException | None) -> None:
    """A message the consumer refused: park its raw copy on the dead-letter list (it is gone from the
    queue) and, when its headers name a task, store and announce that task's FAILURE."""
    from celery.exceptions import InvalidTaskError

    from svc.worker.transport import Channel, task_identity

    error = exc if exc is not None else InvalidTaskError("not a Celery task message")
    reason = reject_reason(exc)
    headers = getattr(message, "headers", None)
    task_id, name = task_identity(headers)
    channel = getattr(message, "channel", None)
    raw = getattr(message, "_raw", None)
    queue = (getattr(message, "delivery_info", None) or {}).get("routing_key") or ""
    if isinstance(channel, Channel) and raw is not None:
        try:
            text = orjson.dumps(raw, default=repr)
        except TypeError:  # orjson.JSONEncodeError: a non-string key, an integer out of range
            text = repr(raw).encode()
        channel.park(text, queue, reason, str(error), task_id, name)
    else:
        log.warning("event=message_rejected queue=%s reason=%s task_id=%s", queue, reason, task_id)
    if task_id is not None:
        fail_unrunnable(app, task_id, name, error)


def _on_rejected(sender: Any, message: Any, exc: BaseException | None, **_: Any) -> None:
    """Celery refused a message (content type not accepted, invalid task message, not a task message)."""
    fail_message(sender.app, message, exc)


def _on_internal_error(sender: Any, task_id: str, exception: BaseException, **_: Any) -> None:
    """An error outside the task's body (in the pool process): Celery may store nothing and announce
    nothing, so svc stores and announces the FAILURE (a later store of Celery's own agrees with it)."""
    fail_unrunnable(sender.app, task_id, sender.name, exception)


def report_progress(current: float, total: float | None = None, message: str | None = None) -> None:
    """Report the running task's progress: a PROGRESS event, and the same meta in the result backend."""
    current_task = get_current_task()
    if current_task is None or not current_task.request.id:
        raise RuntimeError("report_progress() is called from inside a running task")
    request = current_task.request
    progress = {"current": current, "total": total, "message": message}
    current_task.update_state(state="PROGRESS", meta=progress)
    state = state_of(current_task)
    if state is None:
        return
    state.publish(
        request.id,
        current_task.name,
        "PROGRESS",
        progress=progress,
        retries=request.retries or 0,
        worker=request.hostname,
    )


def _heartbeat(state: Instrumentation, hostname: str) -> None:
    while not state.heartbeat_stop.is_set():
        try:
            client, _ = state.client()
            client.zadd(events.workers_key(state.namespace), {hostname: time.time()})
        except redis.RedisError:
            log.warning("event=heartbeat_failed worker=%s", hostname)
        state.heartbeat_stop.wait(HEARTBEAT_SECONDS)


def _start_heartbeat(sender: Any, **_: Any) -> None:
    state = state_of(sender)
    if state is None:
        return
    hostname = getattr(sender, "hostname", None) or state.hostname or "celery@unknown"
    state.hostname = state.hostname or hostname
    state.heartbeat_stop.clear()
    threading.Thread(target=_heartbeat, args=(state, hostname), daemon=True).start()


def _stop_heartbeat(sender: Any = None, **_: Any) -> None:
    state = state_of(sender)
    if state is None:
        return
    state.heartbeat_stop.set()
    hostname = state.hostname
    if hostname:
        # One quick try, not the publisher's minute of retries: a worker shutting down while Redis is
        # gone must not hang on a heartbeat that expires by itself anyway.
        try:
            client, _ = state.client(quick=True)
            client.zrem(events.workers_key(state.namespace), hostname)
        except redis.RedisError:
            log.warning("event=worker_deregister_failed worker=%s", hostname)


HANDLERS = (
    (signals.celeryd_after_setup, _remember_hostname),
    (signals.task_received, _on_received),
    (signals.before_task_publish, _announce_retry),
    (signals.task_prerun, _on_started),
    (signals.task_retry, _on_retry),
    (signals.task_success, _on_success),
    (signals.task_failure, _on_failure),
    (signals.task_revoked, _on_revoked),
    (signals.task_unknown, _on_unknown),
    (signals.task_rejected, _on_rejected),
    (signals.task_internal_error, _on_internal_error),
    (signals.worker_ready, _start_heartbeat),
    (signals.worker_shutdown, _stop_heartbeat),
)


def connect() -> None:
    """Connect svc's handlers to Celery's signals (once per process, however often it is called); each
    handler acts only for the tasks of an app ``svc.instrument`` was given."""
    for signal, handler in HANDLERS:
        signal.connect(handler, weak=False, dispatch_uid=f"svc.worker.publisher.{handler.__name__}")
