"""RabbitMQ as the broker (SVC_BROKER_URL=amqp://…) with Redis still holding events and results."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from .conftest import Service, assert_in_order, start_api, start_worker, states, submit, watch
from .rabbitmq import Broker, start_broker

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    started, where = start_broker(tmp_path_factory.mktemp("rabbitmq"))
    if started is None:
        pytest.skip(where)
    print(f"broker: {where}")
    yield started
    started.stop()


@pytest.fixture(scope="module")
def amqp_api(broker: Broker, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("amqp")
    # Its own namespace: had a message gone to the Redis broker instead, the session's worker would run
    # it and publish under the session's namespace, and these tests would never see the task end.
    env = {"SVC_BROKER_URL": broker.url, "SVC_NAMESPACE": f"amqp{uuid.uuid4().hex[:6]}"}
    worker = start_worker(redis_url, tmp, "amqp-worker", **env)
    api = start_api(redis_url, tmp, name="api-amqp", **env)
    yield api
    api.stop()
    worker.stop()


@pytest.mark.timeout(120)
async def test_amqp_broker_runs_tasks_and_redis_carries_their_events(amqp_api: Service) -> None:
    async with httpx.AsyncClient(base_url=amqp_api.base_url, timeout=10) as http:
        assert (await http.get("/readyz")).status_code == 200
        body = await submit(http, "count_to", 3, delay=0.05)
        frames, code = await watch(amqp_api, body["task_id"])
        assert code == 1000
        assert_in_order(frames)
        assert states(frames) == [
            "PENDING",
            "RECEIVED",
            "STARTED",
            "PROGRESS",
            "PROGRESS",
            "PROGRESS",
            "SUCCESS",
        ]
        assert frames[-1]["result"] == 3
        delayed = await submit(http, "add", 2, 3, _options={"countdown": 1})
        frames, _ = await watch(amqp_api, delayed["task_id"])
        assert frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == 5
        state = (await http.get(f"/tasks/{delayed['task_id']}")).json()
        assert state["state"] == "SUCCESS"


@pytest.mark.timeout(120)
async def test_amqp_broker_runs_a_chain(amqp_api: Service) -> None:
    async with httpx.AsyncClient(base_url=amqp_api.base_url, timeout=10) as http:
        response = await http.post(
            "/workflows",
            json={"chain": [{"task": "fetch_data"}, {"task": "process_data"}, {"task": "save_data"}]},
        )
        assert response.status_code == 202, response.text
        frames, code = await watch(amqp_api, response.json()["workflow_id"])
    assert code == 1000
    final = frames[-1]
    assert final["state"] == "SUCCESS" and final["task_id"] == response.json()["workflow_id"]
    assert {frame["step"] for frame in frames if "step" in frame} == {0, 1, 2}


@pytest.mark.timeout(120)
async def test_amqp_idempotency_key_is_claimed_confirmed_and_guarded(amqp_api: Service) -> None:
    """With a broker apart from the events Redis the key is claimed, then confirmed: same answers."""
    key = uuid.uuid4().hex
    async with httpx.AsyncClient(base_url=amqp_api.base_url, timeout=10) as http:
        refused = await http.post(
            "/tasks/add",
            json={"args": [1, 2], "options": {"eta": "2030-01-01T00:00:00"}},
            headers={"Idempotency-Key": key},
        )
        assert refused.status_code == 422
        first = await http.post("/tasks/add", json={"args": [1, 2]}, headers={"Idempotency-Key": key})
        again = await http.post("/tasks/add", json={"args": [1, 2]}, headers={"Idempotency-Key": key})
        other = await http.post("/tasks/add", json={"args": [2, 2]}, headers={"Idempotency-Key": key})
        assert first.status_code == again.status_code == 202 and other.status_code == 409
        assert first.json()["task_id"] == again.json()["task_id"]
        frames, code = await watch(amqp_api, first.json()["task_id"])
    assert code == 1000 and frames[-1]["result"] == 3
