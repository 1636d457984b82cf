"""A team's Celery app that never heard of svc but for one ``svc.expose``: its URLs come from the
environment (``TEAM_REDIS_URL``), its queue is its own (``TEAM_QUEUE``), and it calls no
``svc.instrument``, so ``svc worker -A tests.apps.team`` has to instrument it. Its tasks are
``shared=False`` because the tests load it beside other apps with tasks of the same names (Celery adds a
shared task, its default, to every app of the process)."""

from __future__ import annotations

import os

from celery import Celery

import svc

REDIS_URL = os.environ.get("TEAM_REDIS_URL", "redis://127.0.0.1:6379/0")

celery_app = Celery("team", broker=REDIS_URL, backend=REDIS_URL)
celery_app.conf.update(
    task_default_queue=os.environ.get("TEAM_QUEUE", "team"),
    result_extended=True,
    broker_connection_retry_on_startup=True,
)


@svc.expose
@celery_app.task(name="send_email_task", shared=False)
def send_email_task(email: str, subject: str = "Welcome!") -> str:
    return f"team email to {email}: {subject}"


@celery_app.task(name="add_numbers", shared=False)
def add_numbers(x: int, y: int) -> int:
    """Add two numbers (not exposed: only server-side code may submit it)."""
    return x + y


@celery_app.task(name="total", shared=False)
def total(values: list[int]) -> int:
    """The sum of a group's results (a chord's callback)."""
    return sum(values)
