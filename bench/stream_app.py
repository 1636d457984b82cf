"""The Celery app of bench.streams: two tasks that make the same chunks, one streaming them, one not,
and one that streams timestamps for the latency half. Served with ``svc worker -A bench.stream_app``,
instrumented as a team's own app is.
"""

from __future__ import annotations

import time

from celery import Celery

import svc
from svc.settings import Settings

settings = Settings()  # SVC_REDIS_URL and SVC_NAMESPACE from the benchmark (bench.common.bench_env)
app = Celery("bench_streams", broker=settings.redis_url, backend=settings.redis_url)
app.conf.update(
    task_default_queue=f"{settings.namespace}-streams", task_acks_late=True, worker_prefetch_multiplier=1
)
svc.instrument(app, settings)


@app.task(name="bench.emit")
def emit(chunks: int, streaming: bool) -> int:
    """Make ``chunks`` token-sized strings; stream each one (or only keep it); return how many."""
    kept = []
    for index in range(chunks):
        token = f"token{index} "
        if streaming:
            svc.stream(token)
        else:
            kept.append(token)
    return chunks


@app.task(name="bench.timed")
def timed(chunks: int, delay: float) -> int:
    """Stream ``chunks`` chunks, each the wall-clock time it was made, one every ``delay`` seconds."""
    for _ in range(chunks):
        time.sleep(delay)
        svc.stream(time.time())
    return chunks
