"""SPEC "Security": keys, task tokens, origins, limits — each rule's allowed and refused side."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from svc.edge import tokens
from svc.edge.limits import arguments_too_deep, json_depth

from .conftest import ASGI, FASTAPI_ONLY, Service, start_api, svc_env

pytestmark = pytest.mark.timeout(60)

KEY, OTHER_KEY = "key-one-0123456789", "key-two-9876543210"
NEW_SECRET, OLD_SECRET = "new-secret", "old-secret"
ORIGIN = "https://app.example"


@pytest.fixture(scope="module", params=[ASGI, FASTAPI_ONLY])
def secure(
    request: pytest.FixtureRequest, redis_url: str, session_dir: Path, worker: Service
) -> Iterator[Service]:
    """An API with every protection on, as `svc api` serves it and as the FastAPI app alone."""
    service = start_api(
        redis_url,
        session_dir,
        name=f"api-secure-{'asgi' if request.param == ASGI else 'fastapi'}",
        target=request.param,
        log_level="info",
        SVC_API_KEYS=f"{KEY},{OTHER_KEY}",
        SVC_SECRET_KEY=f"{NEW_SECRET},{OLD_SECRET}",
        SVC_ALLOWED_ORIGINS=ORIGIN,
        SVC_WS_MAX_CONNECTIONS="3",
        SVC_WS_IDLE_TIMEOUT="1",
        SVC_WS_MAX_SUBSCRIPTIONS="3",
    )
    yield service
    service.stop()


@pytest.fixture
async def client(secure: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=secure.base_url, timeout=10) as http:
        yield http


def keyed(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def submitted(
    client: httpx.AsyncClient, name: str = "add", args: list[Any] | None = None
) -> dict[str, Any]:
    response = await client.post(f"/tasks/{name}", json={"args": args or [1, 2]}, headers=keyed())
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def closed_code(url: str, **options: Any) -> int | None:
    """Connect and read until the server closes; the close code it sent."""
    async with websockets.connect(url, **options) as socket:
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    await socket.recv()
    return socket.close_code


async def test_every_route_but_health_needs_a_key(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("POST", "/tasks/add"),
        ("GET", "/tasks"),
        ("GET", "/schedules"),
        ("POST", "/workflows"),
    ]:
        assert (await client.request(method, path, json={})).status_code == 401
        assert (await client.request(method, path, json={}, headers=keyed("wrong"))).status_code == 401
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/tasks", headers=keyed(OTHER_KEY))).status_code == 200


def test_startup_refuses_keys_without_a_secret(redis_url: str, session_dir: Path) -> None:
    env = svc_env(redis_url, SVC_API_KEYS=KEY)
    env.pop("SVC_SECRET_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "svc", "api", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "SVC_SECRET_KEY" in result.stderr + result.stdout


async def test_task_token_opens_its_task_only(client: httpx.AsyncClient) -> None:
    mine, theirs = await submitted(client), await submitted(client)
    assert (await client.get(f"/tasks/{mine['task_id']}", params={"token": mine["token"]})).status_code == 200
    assert (await client.get(f"/tasks/{mine['task_id']}")).status_code == 401
    assert (
        await client.get(f"/tasks/{mine['task_id']}", params={"token": theirs["token"]})
    ).status_code == 403
    tampered = mine["token"][:-2] + ("AA" if not mine["token"].endswith("AA") else "BB")
    assert (await client.get(f"/tasks/{mine['task_id']}", params={"token": tampered})).status_code == 403
    assert (
        await client.delete(f"/tasks/{mine['task_id']}", params={"token": theirs["token"]})
    ).status_code == 403


async def test_expired_and_foreign_keyed_tokens_are_refused_and_old_keys_still_verify(
    client: httpx.AsyncClient,
) -> None:
    task_id = (await submitted(client))["task_id"]
    expired = tokens.issue(NEW_SECRET.encode(), [task_id], ttl=-5)
    foreign = tokens.issue(b"someone-else", [task_id], ttl=60)
    rotated = tokens.issue(OLD_SECRET.encode(), [task_id], ttl=60)
    assert (await client.get(f"/tasks/{task_id}", params={"token": expired})).status_code == 403
    assert (await client.get(f"/tasks/{task_id}", params={"token": foreign})).status_code == 403
    assert (await client.get(f"/tasks/{task_id}", params={"token": rotated})).status_code == 200


async def test_workflow_token_opens_its_steps(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/workflows", json={"group": [{"task": "add", "args": [1, 1]}]}, headers=keyed()
    )
    workflow = response.json()
    step = workflow["task_ids"][0]
    assert (await client.get(f"/tasks/{step}", params={"token": workflow["token"]})).status_code == 200
    other = await submitted(client)
    assert (
        await client.get(f"/tasks/{other['task_id']}", params={"token": workflow["token"]})
    ).status_code == 403


async def test_websocket_needs_the_task_token_or_a_key(secure: Service, client: httpx.AsyncClient) -> None:
    body = await submitted(client)
    task_id, token = body["task_id"], body["token"]
    other = await submitted(client)
    async with websockets.connect(f"{secure.ws_url}/ws/tasks/{task_id}?token={token}") as socket:
        async with asyncio.timeout(10):
            frames = [json.loads(message) async for message in socket]
    assert frames[-1]["result"] == 3
    assert await closed_code(f"{secure.ws_url}/ws/tasks/{task_id}") == 1008
    assert await closed_code(f"{secure.ws_url}/ws/tasks/{task_id}?token={other['token']}") == 1008
    assert await closed_code(f"{secure.ws_url}/ws") == 1008
    async with websockets.connect(f"{secure.ws_url}/ws", additional_headers=keyed()) as socket:
        await socket.send(json.dumps({"op": "subscribe", "task_id": task_id}))
        async with asyncio.timeout(10):
            assert json.loads(await socket.recv())["task_id"] == task_id


async def test_server_sent_events_need_the_task_token_or_a_key_and_count_as_connections(
    client: httpx.AsyncClient,
) -> None:
    sse = {"Accept": "text/event-stream"}
    body, other = await submitted(client), await submitted(client)
    url = f"/tasks/{body['task_id']}/events"
    assert (await client.get(url, headers=sse)).status_code == 401
    assert (await client.get(url, params={"token": other["token"]}, headers=sse)).status_code == 403
    answered = await client.get(url, params={"token": body["token"]}, headers=sse, timeout=30)
    assert answered.status_code == 200 and answered.headers["content-type"].startswith("text/event-stream")
    assert '"result":3' in answered.text.rsplit("data: ", 1)[-1]
    # SVC_WS_MAX_CONNECTIONS (3) counts open event streams like sockets: a fourth is refused with 429.
    sleeping = [await submitted(client, "sleep", [30]) for _ in range(4)]
    streams = [
        client.stream("GET", f"/tasks/{task['task_id']}/events", params={"token": task["token"]}, headers=sse)
        for task in sleeping[:3]
    ]
    opened = [await stream.__aenter__() for stream in streams]
    try:
        assert [response.status_code for response in opened] == [200, 200, 200]
        # Each has begun: its first bytes (a comment) came. The readers are kept: a reader dropped half
        # read is finalized by the garbage collector, and httpx then closes that stream's connection.
        readers = [response.aiter_text() for response in opened]
        for reader in readers:
            assert (await anext(reader)).startswith(":")
        fourth = sleeping[3]
        async with client.stream(
            "GET", f"/tasks/{fourth['task_id']}/events", params={"token": fourth["token"]}, headers=sse
        ) as refused:
            if refused.status_code != 429:
                metrics = (await client.get("/metrics", headers=keyed())).text
                gauge = [line for line in metrics.splitlines() if "websocket_connections" in line]
                pytest.fail(f"a fourth event stream was answered {refused.status_code}; {gauge}")
            assert json.loads(await refused.aread())["status"] == 429
    finally:
        for stream in streams:
            await stream.__aexit__(None, None, None)
        for task in sleeping:
            await client.delete(f"/tasks/{task['task_id']}", params={"terminate": "true"}, headers=keyed())


async def test_pages_on_allowed_origins_may_call_the_http_api_and_others_may_not(
    client: httpx.AsyncClient,
) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    preflight["Access-Control-Request-Headers"] = "authorization,content-type"
    answered = await client.options("/tasks/add", headers=preflight)
    assert answered.status_code == 200 and answered.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in answered.headers["access-control-allow-headers"].lower()
    submitted = await client.post("/tasks/add", json={"args": [1, 2]}, headers={**keyed(), "Origin": ORIGIN})
    assert submitted.status_code == 202 and submitted.headers["access-control-allow-origin"] == ORIGIN
    assert submitted.headers.get_list("access-control-allow-origin") == [ORIGIN]  # once, not twice
    state = await client.get(f"/tasks/{submitted.json()['task_id']}", headers={**keyed(), "Origin": ORIGIN})
    assert state.headers.get_list("access-control-allow-origin") == [ORIGIN]
    elsewhere = {**keyed(), "Origin": "https://evil.example"}
    assert "access-control-allow-origin" not in (await client.get("/tasks", headers=elsewhere)).headers
    refused = await client.options("/tasks/add", headers={**preflight, "Origin": "https://evil.example"})
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers


async def test_multiplexed_subscribe_checks_each_token(secure: Service, client: httpx.AsyncClient) -> None:
    mine, theirs = await submitted(client), await submitted(client)
    async with websockets.connect(f"{secure.ws_url}/ws?token={mine['token']}") as socket:
        await socket.send(
            json.dumps({"op": "subscribe", "task_id": theirs["task_id"], "token": mine["token"]})
        )
        async with asyncio.timeout(10):
            refused = json.loads(await socket.recv())
        assert refused["op"] == "error" and refused["task_id"] == theirs["task_id"]
        await socket.send(json.dumps({"op": "subscribe", "task_id": mine["task_id"], "token": mine["token"]}))
        async with asyncio.timeout(10):
            assert json.loads(await socket.recv())["task_id"] == mine["task_id"]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [(ORIGIN, True), ("https://evil.example", False), (f"{ORIGIN}.evil.example", False), ("null", False)],
)
async def test_only_allow_listed_browser_origins_open_sockets(
    secure: Service, client: httpx.AsyncClient, origin: str, allowed: bool
) -> None:
    body = await submitted(client)
    url = f"{secure.ws_url}/ws/tasks/{body['task_id']}?token={body['token']}"
    code = await closed_code(url, additional_headers={"Origin": origin})
    assert code == (1000 if allowed else 1008)


async def test_connections_per_client_are_limited(secure: Service) -> None:
    headers = keyed(OTHER_KEY)
    sockets = [await websockets.connect(f"{secure.ws_url}/ws", additional_headers=headers) for _ in range(3)]
    try:
        assert await closed_code(f"{secure.ws_url}/ws", additional_headers=headers) == 1013
    finally:
        for socket in sockets:
            await socket.close()


async def test_idle_connection_is_closed(secure: Service) -> None:
    started = time.monotonic()
    assert await closed_code(f"{secure.ws_url}/ws", additional_headers=keyed()) == 1000
    assert time.monotonic() - started >= 0.9  # SVC_WS_IDLE_TIMEOUT=1: not before its time


async def test_connection_idle_after_its_task_ended_is_closed(
    secure: Service, client: httpx.AsyncClient
) -> None:
    task_id = (await client.post("/tasks/add", json={"args": [1, 2]}, headers=keyed())).json()["task_id"]
    async with websockets.connect(f"{secure.ws_url}/ws", additional_headers=keyed()) as socket:
        await socket.send(json.dumps({"op": "subscribe", "task_id": task_id}))
        async with asyncio.timeout(10):
            while json.loads(await socket.recv())["state"] != "SUCCESS":
                pass
        ended = time.monotonic()
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                await socket.recv()
    assert socket.close_code == 1000 and time.monotonic() - ended > 0.5


async def test_subscriptions_per_connection_are_limited(secure: Service) -> None:
    async with websockets.connect(f"{secure.ws_url}/ws", additional_headers=keyed()) as socket:
        for n in range(3):
            await socket.send(json.dumps({"op": "subscribe", "task_id": f"limit-{n}"}))
        await socket.send(json.dumps({"op": "subscribe", "task_id": "limit-0", "since": 0}))  # again: fine
        await socket.send(json.dumps({"op": "subscribe", "task_id": "limit-3"}))
        async with asyncio.timeout(10):
            refused = json.loads(await socket.recv())
    assert refused == {
        "op": "error",
        "task_id": "limit-3",
        "detail": "at most 3 subscriptions per connection",
    }


async def test_too_deep_arguments_are_refused(client: httpx.AsyncClient) -> None:
    deep: Any = "x"
    for _ in range(40):
        deep = [deep]
    response = await client.post("/tasks/echo", json={"args": [deep]}, headers=keyed())
    assert response.status_code == 422 and "nest" in response.json()["detail"]
    absurd = b'{"args": [' + b"[" * 200_000 + b"]" * 200_000 + b"]}"
    response = await client.post(
        "/tasks/echo", content=absurd, headers={**keyed(), "content-type": "application/json"}
    )
    assert response.status_code in (400, 422)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='ab[]{}\\"', max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet="k[{", max_size=2), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(st.lists(JSON, max_size=3), st.dictionaries(st.text(max_size=3), JSON, max_size=3), st.integers(1, 6))
def test_the_bracket_count_shortcut_agrees_with_walking_the_arguments(
    args: list[Any], kwargs: dict[str, Any], limit: int
) -> None:
    raw = json.dumps({"args": args, "kwargs": kwargs, "options": {}}).encode()
    assert arguments_too_deep(raw, args, kwargs, limit) == (json_depth([args, kwargs]) - 1 > limit)


async def test_keys_and_tokens_stay_out_of_logs(secure: Service, client: httpx.AsyncClient) -> None:
    body = await submitted(client)
    await client.get(f"/tasks/{body['task_id']}", params={"token": body["token"]})
    log = secure.log.read_text()
    assert "token=[redacted]" in log
    assert body["token"] not in log and KEY not in log


async def test_rate_limit_answers_429_with_retry_after(
    redis_url: str, session_dir: Path, worker: Service
) -> None:
    limited = start_api(
        redis_url,
        session_dir,
        name="api-rate",
        SVC_API_KEYS=KEY,
        SVC_SECRET_KEY=NEW_SECRET,
        SVC_RATE_LIMIT="1",
        SVC_RATE_BURST="3",
    )
    try:
        async with httpx.AsyncClient(base_url=limited.base_url, timeout=10) as http:
            statuses = []
            for _ in range(6):
                response = await http.post("/tasks/add", json={"args": [1, 1]}, headers=keyed())
                statuses.append(response.status_code)
                if response.status_code == 429:
                    assert int(response.headers["Retry-After"]) >= 1
                    assert response.json()["retry_after"] >= 1
            assert statuses[:3] == [202, 202, 202] and 429 in statuses
            other = await http.post("/tasks/add", json={"args": [1, 1]}, headers=keyed(OTHER_KEY))
            assert other.status_code == 401  # not a key of this process: refused before counting
    finally:
        limited.stop()
