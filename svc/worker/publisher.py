"""Worker side: turn Celery's signals into svc events in Redis, whoever submitted the task.

Handlers run where Celery fires them: RECEIVED and REVOKED in the worker's main process, the rest in
the pool child that runs the task. Each process opens its own Redis connection (never one inherited
across fork). Terminal events are published from signals that Celery fires after the result is stored
in the backend, so ``AsyncResult.get()`` always agrees with them.

A message that can never run ends as FAILURE too, so no watcher waits for it: Celery's
``task_rejected`` (content type not accepted, invalid task message, not a task message) and
``task_internal_error`` (an error outside the task's body, in the pool) fire no result of their own,
so svc stores the failure in the sender app's result backend first and announces it after; the worker's
consumer steps (svc/worker_steps.py) call the same functions for undecodable bodies and for messages the
transport parked. Refused messages are parked on the dead-letter list (svc/redis_transport.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from celery import signals
from celery._state import get_current_task
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from svc.enqueue import workflows
from svc.settings import get_settings
from svc.wire import events

log = logging.getLogger("svc.worker.publisher")

_local: dict[str, Any] = {"pid": None, "client": None, "script": None, "hostname": None}
HEARTBEAT_SECONDS = 2.0
ARGS_SUMMARY_MAX = 120
_started: dict[str, float] = {}  # task id -> monotonic time of its STARTED, while it runs here


def redis_client() -> redis.Redis:
    """This process's Redis client for svc's keys."""
    return _client()[0]


def _client() -> tuple[redis.Redis, Any]:
    """This process's Redis client and registered publish script (made anew after a fork)."""
    if _local["pid"] != os.getpid():
        client = redis.Redis.from_url(
            get_settings().redis_url,
            socket_timeout=5,
            socket_connect_timeout=5,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=30),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        _local.update(pid=os.getpid(), client=client, script=client.register_script(events.PUBLISH_SCRIPT))
    return _local["client"], _local["script"]


@dataclass(frozen=True)
class Published:
    """What the publish script said: the event's seq (0: not published) and what it knows of the task."""

    seq: int
    revoked: bool = False
    workflow_id: str | None = None
    step: int | None = None


def publish_to(
    stream_id: str, state: str, body: bytes, *, terminal: bool | None = None, only_if: str = ""
) -> Published:
    """Run the publish script for one stream (a task, or a workflow); never raises on Redis errors."""
    settings = get_settings()
    keys, args = events.publish_args(
        settings.namespace,
        stream_id,
        state,
        body,
        settings.history_max,
        settings.history_ttl,
        terminal=terminal,
        only_if=only_if,
    )
    client, script = _client()
    try:
        seq, revoked, workflow_id, step = script(keys=keys, args=args, client=client)
    except redis.RedisError:
        log.exception("event=publish_failed task_id=%s state=%s", stream_id, state)
        return Published(0)
    return Published(
        int(seq),
        revoked is not None,
        workflow_id.decode() if workflow_id else None,
        int(step) if step else None,
    )


def publish(task_id: str, name: str | None, state: str, **fields: Any) -> Published:
    """Record and announce one event of a task atomically (and its copy in its workflow's stream)."""
    fields.setdefault("worker", _local["hostname"])
    body = events.encode_body(task_id, name, state, **fields)
    published = publish_to(task_id, state, body)
    log.debug("event=published task_id=%s state=%s seq=%d", task_id, state, published.seq)
    if published.seq and published.workflow_id is not None and published.step is not None:
        workflows.record_step_event(
            published.workflow_id, published.step, task_id, name, state, published.seq, fields
        )
    return published


def _when(countdown_or_eta: Any) -> str | None:
    """The ISO time of a retry's next attempt."""
    if isinstance(countdown_or_eta, dt.datetime):
        return countdown_or_eta.isoformat()
    if isinstance(countdown_or_eta, int | float):
        return dt.datetime.fromtimestamp(time.time() + countdown_or_eta, dt.UTC).isoformat()
    return None


@signals.celeryd_after_setup.connect
def _remember_hostname(sender: str, **_: Any) -> None:
    _local["hostname"] = sender


@signals.task_received.connect
def _on_received(request: Any, **_: Any) -> None:
    retries = (getattr(request, "request_dict", None) or {}).get("retries") or 0
    published = publish(
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


@signals.before_task_publish.connect
def _announce_retry(headers: dict[str, Any], **_: Any) -> None:
    """RETRY goes out before the retry message does, so the next attempt's events never overtake it."""
    current_task = get_current_task()
    if current_task is None or not current_task.request.id or headers.get("id") != current_task.request.id:
        return
    request = current_task.request
    retries = headers.get("retries") or 0
    if retries <= (request.retries or 0):
        return
    exc = sys.exc_info()[1]
    publish(
        request.id,
        current_task.name,
        "RETRY",
        error=events.describe_error(exc) if exc is not None else None,
        retries=retries,
        worker=request.hostname,
        eta=headers.get("eta"),
    )
    _local["announced_retry"] = (request.id, retries)


def args_summary(request: Any) -> str:
    """A short, readable form of a task's arguments (Celery's own reprs), for monitoring views."""
    parts = [getattr(request, "argsrepr", None) or "", getattr(request, "kwargsrepr", None) or ""]
    text = ", ".join(part for part in parts if part not in ("", "()", "[]", "{}"))
    return text if len(text) <= ARGS_SUMMARY_MAX else text[: ARGS_SUMMARY_MAX - 1] + "…"


def _runtime(task_id: str) -> dict[str, float]:
    """``{"runtime": seconds}`` since this task's STARTED in this process, if it started here."""
    started = _started.pop(task_id, None)
    return {} if started is None else {"runtime": round(time.monotonic() - started, 6)}


@signals.task_prerun.connect
def _on_started(task_id: str, task: Any, **_: Any) -> None:
    _started[task_id] = time.monotonic()
    publish(task_id, task.name, "STARTED", retries=task.request.retries or 0, worker=task.request.hostname)


@signals.task_retry.connect
def _on_retry(sender: Any, request: Any, reason: Any, **_: Any) -> None:
    _started.pop(request.id, None)
    if _local.get("announced_retry") == (request.id, (request.retries or 0) + 1):
        return  # already announced when the retry message was published
    exc = getattr(reason, "exc", None) or reason
    publish(
        request.id,
        sender.name,
        "RETRY",
        error=events.describe_error(exc),
        retries=(request.retries or 0) + 1,
        worker=request.hostname,
        eta=_when(getattr(reason, "when", None)),
    )


@signals.task_success.connect
def _on_success(sender: Any, result: Any, **_: Any) -> None:
    request = sender.request
    publish(
        request.id,
        sender.name,
        "SUCCESS",
        result=result,
        retries=request.retries or 0,
        worker=request.hostname,
        **_runtime(request.id),
    )


@signals.task_failure.connect
def _on_failure(sender: Any, task_id: str, exception: BaseException, **_: Any) -> None:
    request = sender.request
    retries = (request.retries or 0) if request.id == task_id else 0
    max_retries = getattr(sender, "max_retries", None)
    exhausted = {"retries_exhausted": True} if max_retries and retries >= max_retries else {}
    publish(
        task_id, sender.name, "FAILURE", error=exception, retries=retries, **exhausted, **_runtime(task_id)
    )


@signals.task_revoked.connect
def _on_revoked(sender: Any, request: Any, terminated: bool, expired: bool, **_: Any) -> None:
    reason = "expired" if expired else "terminated" if terminated else "revoked"
    name = getattr(request, "task", None) or getattr(sender, "name", None)
    publish(request.id, name, "REVOKED", error=events.revoked_error(reason))


@signals.task_unknown.connect
def _on_unknown(name: str, id: str, exc: BaseException, **_: Any) -> None:
    """A message for a task this worker does not know: announce a FAILURE, never a hang (Celery's
    consumer has already stored ``NotRegistered`` in the result backend before this signal)."""
    publish(id, name, "FAILURE", error={"type": "NotRegistered", "message": f"no task named {name!r}"})


def fail_unrunnable(app: Any, task_id: str, name: str | None, exc: BaseException) -> bool:
    """End a task whose message can never run: store FAILURE in ``app``'s result backend, then announce
    it (only once stored, so ``AsyncResult`` agrees). Never raises; True once published."""
    try:
        app.backend.mark_as_failure(task_id, exc)
    except Exception:
        log.exception("event=failure_store_failed task_id=%s", task_id)
        return False
    return publish(task_id, name, "FAILURE", error=events.describe_error(exc)).seq > 0


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


@signals.task_rejected.connect
def _on_rejected(sender: Any, message: Any, exc: BaseException | None, **_: Any) -> None:
    """Celery refused a message (content type not accepted, invalid task message, not a task message)."""
    fail_message(sender.app, message, exc)


@signals.task_internal_error.connect
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
    publish(
        request.id,
        current_task.name,
        "PROGRESS",
        progress=progress,
        retries=request.retries or 0,
        worker=request.hostname,
    )


def _heartbeat(hostname: str, stop: threading.Event) -> None:
    key = events.workers_key(get_settings().namespace)
    while not stop.is_set():
        try:
            client, _ = _client()
            client.zadd(key, {hostname: time.time()})
        except redis.RedisError:
            log.warning("event=heartbeat_failed worker=%s", hostname)
        stop.wait(HEARTBEAT_SECONDS)


_heartbeat_stop = threading.Event()


@signals.worker_ready.connect
def _start_heartbeat(sender: Any, **_: Any) -> None:
    hostname = getattr(sender, "hostname", None) or _local["hostname"] or "celery@unknown"
    _local["hostname"] = _local["hostname"] or hostname
    threading.Thread(target=_heartbeat, args=(hostname, _heartbeat_stop), daemon=True).start()


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    _heartbeat_stop.set()
    hostname = _local["hostname"]
    if hostname:
        # One quick try, not the publisher's minute of retries: a worker shutting down while Redis is
        # gone must not hang on a heartbeat that expires by itself anyway.
        client = redis.Redis.from_url(
            get_settings().redis_url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        try:
            client.zrem(events.workers_key(get_settings().namespace), hostname)
        except redis.RedisError:
            log.warning("event=worker_deregister_failed worker=%s", hostname)
        finally:
            client.close()
