"""svc's own app plus the two baselines the submit benchmark compares against, in the same process."""

from __future__ import annotations

from typing import Any

from svc.api import app
from svc.tasks import diagnostic


@app.get("/bench/constant", include_in_schema=False)
async def constant() -> dict[str, str]:
    """Baseline (a): the cheapest endpoint the app can serve."""
    return {"status": "ok"}


@app.post("/bench/seed/add", include_in_schema=False)
def seed_add() -> dict[str, Any]:
    """Baseline (b): the seed's pattern, a sync endpoint calling task.delay()."""
    result = diagnostic.add.delay(2, 3)
    return {"task_id": result.id}
