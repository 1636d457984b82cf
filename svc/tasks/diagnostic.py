"""Small tasks for tests, benchmarks and first steps: add, echo, sleep, count_to, fail."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from svc.celery_app import app
from svc.exposure import expose
from svc.worker.publisher import report_progress

STRICT = ConfigDict(strict=True, extra="forbid")


class AddArgs(BaseModel):
    model_config = STRICT
    x: int
    y: int


class EchoArgs(BaseModel):
    model_config = STRICT
    value: JsonValue


class SleepArgs(BaseModel):
    model_config = STRICT
    seconds: float = Field(ge=0, le=3600)


class CountToArgs(BaseModel):
    model_config = STRICT
    n: int = Field(ge=0, le=100_000)
    delay: float = Field(0.1, ge=0, le=60)


class FailArgs(BaseModel):
    model_config = STRICT
    message: str = Field(max_length=10_000)


@expose(schema=AddArgs)
@app.task(name="add", shared=False)
def add(x: int, y: int) -> int:
    """Return x + y."""
    return x + y


@expose(schema=EchoArgs)
@app.task(name="echo", shared=False)
def echo(value: Any) -> Any:
    """Return the value unchanged."""
    return value


@expose(schema=SleepArgs)
@app.task(name="sleep", shared=False)
def sleep(seconds: float) -> float:
    """Sleep for the given seconds (0-3600) and return them."""
    time.sleep(seconds)
    return seconds


@expose(schema=CountToArgs)
@app.task(name="count_to", shared=False)
def count_to(n: int, delay: float = 0.1) -> int:
    """Count from 1 to n, reporting PROGRESS at each step, and return n."""
    for current in range(1, n + 1):
        time.sleep(delay)
        report_progress(current, n, f"counted {current} of {n}")
    return n


@expose(schema=FailArgs)
@app.task(name="fail", shared=False)
def fail(message: str) -> None:
    """Raise ValueError(message), with no retry."""
    raise ValueError(message)
