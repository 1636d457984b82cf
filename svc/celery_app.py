"""svc's demo Celery app: JSON only, UTC, late acks, task events on, and svc's event publisher wired in.

`celery -A svc.celery_app worker` and `svc worker` both start a worker for this app. Everything it puts
in the broker and the result backend follows ``SVC_NAMESPACE``, so two deployments on one Redis stay
apart: its task queue is named after the namespace, its result keys carry the namespace as a prefix,
and its worker events and remote-control broadcasts use exchanges of the namespace's own.
It is instrumented like any team's app (``svc.instrument``, svc/worker/instrument.py says what that
sets), and it is the one app svc makes at import: without ``-A``, every ``svc`` command serves it.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from svc.schedules import beat_schedule
from svc.settings import get_settings
from svc.worker.instrument import instrument

TASK_MODULES = ["svc.tasks.seed", "svc.tasks.diagnostic"]


def deployment_settings(namespace: str) -> dict[str, Any]:
    """The Celery settings that keep one deployment of the demo app apart from another on the same
    Redis: its queue, its result keys, its worker-event and remote-control exchanges. A plain Celery
    client (or Flower) of the demo app needs the same ones to reach it."""
    return {
        "task_default_queue": namespace,
        "result_backend_transport_options": {"global_keyprefix": f"{namespace}:"},
        "event_exchange": f"{namespace}.events",
        "control_exchange": f"{namespace}.control",
    }


def create_app() -> Celery:
    """A Celery app configured from svc's settings."""
    settings = get_settings()
    celery = Celery("svc", broker=settings.broker, backend=settings.backend, include=TASK_MODULES)
    namespace = settings.namespace
    apart = deployment_settings(namespace)
    result_keys = apart.pop("result_backend_transport_options")
    celery.conf.update(
        **apart,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_track_started=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        result_extended=True,
        broker_connection_retry_on_startup=True,
        # A result that cannot be stored while Redis restarts is retried, not turned into a failure.
        result_backend_always_retry=True,
        result_backend_max_retries=30,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # kombu sweeps for messages left unacked by a dead worker every interval x throttle
            # seconds (10 x 10 by default): sweep every interval, scaled to the visibility timeout,
            # so a lost task runs again within about visibility_timeout + interval.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 5)),
            "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            **result_keys,
        },
        worker_hijack_root_logger=False,
        beat_schedule=beat_schedule(settings),
    )
    return instrument(celery, settings)


app = create_app()
