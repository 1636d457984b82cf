"""Small tasks for tests, benchmarks and first steps: add, echo, sleep, count_to, fail, stream_text."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from svc.celery_app import app
from svc.exposure import expose
from svc.worker.publisher import report_progress
from svc.worker.streams import stream

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


class StreamTextArgs(BaseModel):
    model_config = STRICT
    words: int = Field(50, ge=0, le=100_000)
    delay: float = Field(0.05, ge=0, le=60)


# What stream_text "generates": a paragraph repeated, so that any number of words reads like text.
PARAGRAPH = " ".join(
    [
        "Celery runs the task while the browser watches every step of it as it happens. Each word you",
        "see arrived as its own chunk, numbered in the task's sequence, stored, and pushed over the",
        "socket, so a reload or a dropped connection picks up exactly where it left off.",
    ]
).split()


def words_of(count: int) -> list[str]:
    """The chunks stream_text sends for ``count`` words: each word with its following space (the last
    one without)."""
    chosen = [PARAGRAPH[index % len(PARAGRAPH)] for index in range(count)]
    return [word + " " for word in chosen[:-1]] + chosen[-1:]


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


@expose(schema=StreamTextArgs)
@app.task(name="stream_text", shared=False)
def stream_text(words: int = 50, delay: float = 0.05) -> str:
    """Stream ``words`` words on stream "output", one chunk a word every ``delay`` seconds as an LLM
    streams tokens, and return the whole text (the chunks concatenated)."""
    chunks = words_of(words)
    for chunk in chunks:
        if delay:
            time.sleep(delay)
        stream(chunk)
    return "".join(chunks)
