"""Tests nobody tuned: schemathesis over the app's own OpenAPI schema, and a WebSocket frame fuzzer."""

from __future__ import annotations

import asyncio
import json
import random
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import websockets
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import allow_header_conformance
from websockets.exceptions import ConnectionClosed

from .conftest import Service, start_api, submit

API_KEY = "fuzz-key-0123456789"


@pytest.fixture(scope="module")
def secure_fuzz_api(redis_url: str, session_dir: Path, worker: Service) -> Iterator[Service]:
    service = start_api(
        redis_url, session_dir, name="api-fuzz-auth", SVC_API_KEYS=API_KEY, SVC_SECRET_KEY="fuzz-secret"
    )
    yield service
    service.stop()


@pytest.fixture(scope="module")
def open_schema(api: Service) -> Any:
    return schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")


@pytest.fixture(scope="module")
def secure_schema(secure_fuzz_api: Service) -> Any:
    return schemathesis.openapi.from_url(f"{secure_fuzz_api.base_url}/openapi.json")


# Every built-in check runs but one: POST /tasks/{name} and GET|DELETE /tasks/{task_id} (the SPEC's
# routes) share one URL shape under two OpenAPI path items, so no Allow header can match both items.
EXCLUDED = [allow_header_conformance]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
open_api = schemathesis.pytest.from_fixture("open_schema")
secure_api = schemathesis.pytest.from_fixture("secure_schema")


@pytest.mark.timeout(300)
@open_api.parametrize()
@FUZZ
def test_openapi_without_auth_finds_no_5xx_and_no_schema_violation(case: Any) -> None:
    case.call_and_validate(excluded_checks=EXCLUDED)


@pytest.mark.timeout(300)
@secure_api.parametrize()
@FUZZ
def test_openapi_with_a_key_finds_no_5xx_and_no_schema_violation(case: Any) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {API_KEY}"}, excluded_checks=EXCLUDED)


@pytest.mark.timeout(300)
@secure_api.parametrize()
@FUZZ
def test_openapi_without_a_key_is_refused_and_finds_no_5xx(case: Any) -> None:
    response = case.call()
    assert response.status_code < 500
    if not case.path.startswith(("/healthz", "/readyz")):  # everything else refuses (400-422), never 2xx
        assert 400 <= response.status_code < 500, response.text


def random_frame(rng: random.Random) -> str | bytes:
    """A frame a confused or hostile client might send."""
    choice = rng.randrange(8)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if choice == 1:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(0, 300)))
    if choice == 2:
        return json.dumps(rng.choice([None, 1, -1.5, True, "x", [], {}, [[[]]], {"op": None}]))
    if choice == 3:
        op = rng.choice(["subscribe", "unsubscribe", "SUBSCRIBE", "", "x" * 50, 7])
        task_id: Any = rng.choice(["", "a" * 300, "../../etc", "\u0000", 5, None, "ok-id", "é" * 10])
        return json.dumps({"op": op, "task_id": task_id})
    if choice == 4:
        since: Any = rng.choice([-1, 2**70, "3", 1.5, None, [], True])
        return json.dumps({"op": "subscribe", "task_id": "fuzz-task", "since": since, "token": rng.random()})
    if choice == 5:
        return "{" * rng.randrange(1, 5000)
    if choice == 6:
        return json.dumps({"op": "subscribe", "task_id": f"fuzz-{rng.randrange(10**6)}", "token": "1.abc"})
    return json.dumps({"op": "unsubscribe", "task_id": f"fuzz-{rng.randrange(10**6)}"})


@pytest.mark.timeout(120)
async def test_websocket_survives_a_thousand_malformed_frames(api: Service) -> None:
    rng = random.Random(20261124)
    sent = 0
    while sent < 1000:
        try:
            async with websockets.connect(f"{api.ws_url}/ws", max_size=None) as socket:
                while sent < 1000:
                    await socket.send(random_frame(rng))
                    sent += 1
                    if sent % 50 == 0:  # read what came back, so the server's queue drains
                        await socket.send(json.dumps({"op": "unsubscribe", "task_id": "drain"}))
                        while True:
                            try:
                                async with asyncio.timeout(0.05):
                                    await socket.recv()
                            except TimeoutError:
                                break
        except ConnectionClosed as closed:
            assert closed.rcvd is None or closed.rcvd.code in (1000, 1008, 1009, 1013), closed
    async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
        assert (await http.get("/healthz")).status_code == 200
        body = await submit(http, "add", 20, 22)
    async with websockets.connect(f"{api.ws_url}/ws") as socket:
        await socket.send(json.dumps({"op": "subscribe", "task_id": body["task_id"], "token": body["token"]}))
        async with asyncio.timeout(15):
            while (event := json.loads(await socket.recv()))["state"] != "SUCCESS":
                pass
    assert event["result"] == 42
