"""A team's Celery app whose broker and result backend are a Sentinel-managed Redis, written as Celery's
docs write it: ``sentinel://h1:p1;sentinel://h2:p2`` with ``master_name`` in the transport options
(``TEAM_SENTINELS``, ``TEAM_MASTER``). It calls ``svc.instrument`` and sets no ``SVC_REDIS_URL``, so
svc's events go to the same Sentinel set, found from the app's own URLs."""

from __future__ import annotations

import os
import time

from celery import Celery

import svc

SENTINELS = os.environ.get("TEAM_SENTINELS", "sentinel://127.0.0.1:26379")
MASTER = os.environ.get("TEAM_MASTER", "mymaster")

celery_app = Celery("sentinel_team", broker=SENTINELS, backend=SENTINELS)
celery_app.conf.update(
    broker_transport_options={"master_name": MASTER, "visibility_timeout": 30},
    result_backend_transport_options={"master_name": MASTER},
    task_default_queue=os.environ.get("TEAM_QUEUE", "sentinel-team"),
    task_acks_late=True,
    result_extended=True,
    broker_connection_retry_on_startup=True,
    result_backend_always_retry=True,
    result_backend_max_retries=30,
)
svc.instrument(celery_app)


@svc.expose
@celery_app.task(name="count_slowly", shared=False)
def count_slowly(n: int, delay: float = 0.05) -> int:
    """Count to ``n``, a PROGRESS event a step."""
    for current in range(1, n + 1):
        time.sleep(delay)
        svc.report_progress(current, n, f"counted {current} of {n}")
    return n
