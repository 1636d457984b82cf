"""Worker side: turn Celery's signals into svc events in Redis, whoever submitted the task.

Handlers run where Celery fires them: RECEIVED and REVOKED in the worker's main process, the rest in
the pool child that runs the task. Each process opens its own Redis connection (never one inherited
across fork). Terminal events are published from signals that Celery fires after the result is stored
in the backend, so ``AsyncResult.get()`` always agrees with them.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from typing import Any

import redis
from celery import signals
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from svc import events
from svc.settings import get_settings

log = logging.getLogger("svc.publisher")

_local: dict[str, Any] = {"pid": None, "client": None, "script": None, "hostname": None}
HEARTBEAT_SECONDS = 2.0


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


def publish(task_id: str, name: str | None, state: str, **fields: Any) -> int:
    """Record and announce one event atomically; return its seq (0 if the task had already ended)."""
    settings = get_settings()
    body = events.encode_body(task_id, name, state, worker=fields.pop("worker", _local["hostname"]), **fields)
    keys, args = events.publish_args(
        settings.namespace, task_id, state, body, settings.history_max, settings.history_ttl
    )
    client, script = _client()
    try:
        seq = int(script(keys=keys, args=args, client=client))
    except redis.RedisError:
        log.exception("event=publish_failed task_id=%s state=%s", task_id, state)
        return 0
    log.debug("event=published task_id=%s state=%s seq=%d", task_id, state, seq)
    return seq


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
    publish(request.id, request.name, "RECEIVED", retries=retries, worker=request.hostname)


@signals.task_prerun.connect
def _on_started(task_id: str, task: Any, **_: Any) -> None:
    publish(task_id, task.name, "STARTED", retries=task.request.retries or 0, worker=task.request.hostname)


@signals.task_retry.connect
def _on_retry(sender: Any, request: Any, reason: Any, **_: Any) -> None:
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
    )


@signals.task_failure.connect
def _on_failure(sender: Any, task_id: str, exception: BaseException, **_: Any) -> None:
    request = sender.request
    retries = (request.retries or 0) if request.id == task_id else 0
    publish(task_id, sender.name, "FAILURE", error=exception, retries=retries)


@signals.task_revoked.connect
def _on_revoked(sender: Any, request: Any, terminated: bool, expired: bool, **_: Any) -> None:
    reason = "expired" if expired else "terminated" if terminated else "revoked"
    name = getattr(request, "task", None) or getattr(sender, "name", None)
    publish(request.id, name, "REVOKED", error={"type": "TaskRevokedError", "message": reason})


@signals.task_unknown.connect
def _on_unknown(name: str, id: str, exc: BaseException, **_: Any) -> None:
    """A message for a task this worker does not know: store and announce a FAILURE, never a hang."""
    from svc.celery_app import app

    app.backend.mark_as_failure(id, exc)
    publish(id, name, "FAILURE", error={"type": "NotRegistered", "message": f"no task named {name!r}"})


def report_progress(current: float, total: float | None = None, message: str | None = None) -> None:
    """Report the running task's progress: a PROGRESS event, and the same meta in the result backend."""
    from celery import current_task

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
        try:
            _client()[0].zrem(events.workers_key(get_settings().namespace), hostname)
        except redis.RedisError:
            log.warning("event=worker_deregister_failed worker=%s", hostname)
