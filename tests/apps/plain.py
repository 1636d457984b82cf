"""An app whose process imports svc and instruments another app, never this one: a worker of it
(``celery -A tests.apps.plain worker``) must run its tasks and publish no svc event for them."""

from __future__ import annotations

import os

from celery import Celery

import svc

REDIS_URL = os.environ.get("TEAM_REDIS_URL", "redis://127.0.0.1:6379/0")

celery_app = Celery("plain", broker=REDIS_URL, backend=REDIS_URL)
celery_app.conf.update(task_default_queue=os.environ.get("PLAIN_QUEUE", "plain"))
svc.instrument(Celery("unrelated", broker=REDIS_URL, backend=REDIS_URL))


@celery_app.task(name="send_email_task")
def send_email_task(email: str) -> str:
    return f"plain email to {email}"
