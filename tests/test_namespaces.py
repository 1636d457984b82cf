"""SPEC "Configuration" (SVC_NAMESPACE): two deployments on one Redis stay apart, queues and results too."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from celery.result import AsyncResult

from .conftest import Service, plain_celery, start_api, start_worker, submit, watch

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def other(redis_url: str, session_dir: Path, api: Service) -> Iterator[tuple[Service, str, str]]:
    """Deployment B beside the session's deployment A, on the same Redis, with its own API and worker:
    its API, its worker's hostname and its namespace."""
    namespace = f"other{uuid.uuid4().hex[:6]}"
    worker = start_worker(redis_url, session_dir, f"b-{namespace}", SVC_NAMESPACE=namespace)
    service = start_api(redis_url, session_dir, name=f"api-{namespace}", SVC_NAMESPACE=namespace)
    yield service, worker.hostname or "", namespace
    service.stop()
    worker.stop()


async def test_each_deployment_runs_only_its_own_tasks(
    api: Service, other: tuple[Service, str, str], redis_url: str
) -> None:
    other_api, other_worker, other_namespace = other
    async with (
        httpx.AsyncClient(base_url=api.base_url, timeout=10) as a,
        httpx.AsyncClient(base_url=other_api.base_url, timeout=10) as b,
    ):
        mine = [await submit(a, "add", n, 1) for n in range(20)]
        theirs = [await submit(b, "add", n, 2) for n in range(20)]
        results = await asyncio.gather(
            *(watch(api, body["task_id"]) for body in mine),
            *(watch(other_api, body["task_id"]) for body in theirs),
        )
        for frames, code in results[:20]:
            assert code == 1000 and frames[-1]["state"] == "SUCCESS"
            assert frames[-1]["worker"] != other_worker
        for frames, code in results[20:]:
            assert code == 1000 and frames[-1]["state"] == "SUCCESS"
            assert frames[-1]["worker"] == other_worker
        # B knows nothing of A's tasks: not their state, not their result, and it cannot re-run them.
        first = mine[0]["task_id"]
        assert (await b.get(f"/tasks/{first}")).status_code == 404
        assert (await b.post(f"/tasks/{first}/retry")).status_code == 404
        assert (await a.get(f"/tasks/{first}")).json()["result"] == 1
    # Each deployment's results are under its own keys: a client of A reads A's, never B's.
    client_of_a, client_of_b = plain_celery(redis_url), plain_celery(redis_url, other_namespace)
    assert AsyncResult(first, app=client_of_a).get(timeout=10) == 1
    assert AsyncResult(first, app=client_of_b).state == "PENDING"
    assert AsyncResult(theirs[0]["task_id"], app=client_of_b).get(timeout=10) == 2


async def test_a_deployment_shows_only_its_own_workers(api: Service, other: tuple[Service, str, str]) -> None:
    _, other_worker, _ = other
    async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as a:
        ready = (await a.get("/readyz")).json()
        metrics = (await a.get("/metrics")).text
    assert other_worker not in ready["workers"]
    assert other_worker not in metrics
