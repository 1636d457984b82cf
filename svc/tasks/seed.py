"""The seed's tasks: an email, a flaky call with retries, a three-step workflow and a daily report."""

from __future__ import annotations

import datetime as dt
import random
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from svc.celery_app import app
from svc.exposure import expose
from svc.settings import get_settings

STRICT = ConfigDict(strict=True, extra="forbid")


class EmailArgs(BaseModel):
    model_config = STRICT
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    subject: str = Field(max_length=998)


class UnstableArgs(BaseModel):
    model_config = STRICT
    data: dict[str, Any]


class FetchArgs(BaseModel):
    model_config = STRICT
    source: str = Field("example", max_length=200)


class StepArgs(BaseModel):
    model_config = STRICT
    data: dict[str, Any]


class NoArgs(BaseModel):
    model_config = STRICT


@expose(schema=EmailArgs)
@app.task(name="send_email_task", shared=False)
def send_email_task(email: str, subject: str) -> str:
    """Simulate sending an email (SVC_EMAIL_DELAY seconds) and say so."""
    time.sleep(get_settings().email_delay)
    return f"Email sent to {email} with subject {subject}"


def flaky_dependency(data: dict[str, Any], attempt: int) -> dict[str, Any]:
    """A remote call that fails now and then: ``data["fail_times"]`` failures first, else at random."""
    fail_times = data.get("fail_times")
    if isinstance(fail_times, int):
        failing = attempt < fail_times
    else:
        failing = random.random() < get_settings().unstable_failure_rate
    if failing:
        raise ConnectionError(f"flaky dependency unavailable (attempt {attempt + 1})")
    return {"ok": True, "attempts": attempt + 1, "data": data}


@expose(schema=UnstableArgs)
@app.task(name="unstable_task", bind=True, max_retries=3, shared=False)
def unstable_task(self: Any, data: dict[str, Any]) -> dict[str, Any]:
    """Call a flaky dependency; retry on ConnectionError after 2**retries seconds, at most 3 times."""
    try:
        return flaky_dependency(data, self.request.retries)
    except ConnectionError as exc:
        countdown = (2**self.request.retries) * get_settings().retry_backoff_scale
        raise self.retry(exc=exc, countdown=countdown) from exc


@expose(schema=FetchArgs)
@app.task(name="fetch_data", shared=False)
def fetch_data(source: str = "example") -> dict[str, Any]:
    """Workflow step 1: fetch raw records from a source."""
    return {"source": source, "records": [1, 2, 3, 4, 5]}


@expose(schema=StepArgs)
@app.task(name="process_data", shared=False)
def process_data(data: dict[str, Any]) -> dict[str, Any]:
    """Workflow step 2: process the fetched records."""
    records = data.get("records", [])
    return {**data, "records": [value * 2 for value in records], "total": sum(value * 2 for value in records)}


@expose(schema=StepArgs)
@app.task(name="save_data", shared=False)
def save_data(data: dict[str, Any]) -> str:
    """Workflow step 3: save the processed records."""
    return f"saved {len(data.get('records', []))} records (total {data.get('total')})"


@expose(schema=NoArgs)
@app.task(name="generate_report_task", shared=False)
def generate_report_task() -> str:
    """The periodic report run by beat (08:00 UTC daily by default)."""
    return f"report generated at {dt.datetime.now(dt.UTC).isoformat()}"
