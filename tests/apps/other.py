"""A second team app in the same process as tests.apps.team, for the two-gateways test: a task of the
same name, a schema of its own, another namespace (``OTHER_NAMESPACE``) and queue. Its task is
``shared=False``, as two Celery apps in one process with tasks of one name need: a shared task (Celery's
default) is added to every app finalized after it."""

from __future__ import annotations

import os

from celery import Celery
from pydantic import BaseModel, ConfigDict

import svc
from svc.settings import Settings

REDIS_URL = os.environ.get("TEAM_REDIS_URL", "redis://127.0.0.1:6379/0")

celery_app = Celery("other", broker=REDIS_URL, backend=REDIS_URL)
celery_app.conf.update(task_default_queue=os.environ.get("OTHER_QUEUE", "other"), result_extended=True)
svc.instrument(celery_app, Settings(namespace=os.environ.get("OTHER_NAMESPACE", "other")))


class Email(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    to: str


@svc.expose(schema=Email)
@celery_app.task(name="send_email_task", shared=False)
def send_email_task(to: str) -> str:
    """The other app's email."""
    return f"other email to {to}"
