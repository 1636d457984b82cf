"""svc's own app plus what the benchmarks compare against and measure with, in the same process.

- ``GET /bench/constant``: the cheapest endpoint the app can serve (baseline of the submit benchmark);
- ``POST /bench/seed/add``: the seed's pattern, a sync endpoint calling ``task.delay()``;
- ``GET /bench/lag?reset=1``: the event loop's lag, sampled every 10 ms for the app's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from bench.common import percentile

try:
    from svc.demo import app, asgi
except ImportError:  # a tree from before svc/demo.py, measured with BENCH_SVC_TREE
    from svc.api import app, asgi  # type: ignore[attr-defined, no-redef]
from svc.tasks import diagnostic


class LagSampler:
    """Wakes every ``interval`` seconds and records how late it woke (actual - scheduled), in seconds.

    A late wake-up is time some callback held the loop; it delays every request and frame alike.
    """

    def __init__(self, interval: float = 0.01, keep: int = 200_000) -> None:
        self.interval = interval
        self.samples: deque[float] = deque(maxlen=keep)

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            scheduled = time.perf_counter() + self.interval
            await asyncio.sleep(self.interval)
            self.samples.append(max(0.0, time.perf_counter() - scheduled))

    def summary(self, reset: bool) -> dict[str, float]:
        """p50/p99/max lag in ms over the samples since the last reset."""
        values = list(self.samples)
        if reset:
            self.samples.clear()
        if not values:
            return {"samples": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        return {
            "samples": len(values),
            "p50_ms": percentile(values, 50) * 1000,
            "p99_ms": percentile(values, 99) * 1000,
            "max_ms": max(values) * 1000,
        }


sampler = LagSampler()
_svc_lifespan = app.router.lifespan_context


@asynccontextmanager
async def _lifespan_with_sampler(application: FastAPI) -> AsyncIterator[Any]:
    """svc's own lifespan, with the lag sampler running alongside."""
    task = asyncio.create_task(sampler.run(), name="bench-lag-sampler")
    try:
        async with _svc_lifespan(application) as state:
            yield state
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


app.router.lifespan_context = _lifespan_with_sampler


@app.get("/bench/constant", include_in_schema=False)
async def constant() -> dict[str, str]:
    """Baseline (a): the cheapest endpoint the app can serve."""
    return {"status": "ok"}


@app.post("/bench/seed/add", include_in_schema=False)
def seed_add() -> dict[str, Any]:
    """Baseline (b): the seed's pattern, a sync endpoint calling task.delay()."""
    result = diagnostic.add.delay(2, 3)
    return {"task_id": result.id}


@app.get("/bench/lag", include_in_schema=False)
async def lag(reset: bool = False) -> dict[str, float]:
    """Event-loop lag since the last reset: p50/p99/max in ms; ``reset=1`` starts a new window."""
    return sampler.summary(reset)


__all__ = ["app", "asgi"]  # `svc api` serves ``asgi`` (bench/serve.py): the fast lanes in front of this app
