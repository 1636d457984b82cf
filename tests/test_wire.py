"""Our hand-written broker message is Celery's: field by field against kombu's, and a real worker obeys it."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery
from celery.utils.saferepr import saferepr
from hypothesis import given, settings
from hypothesis import strategies as st

import svc.tasks  # noqa: F401  (registers the tasks, as the API does)
from svc.celery_app import app as svc_app
from svc.embedded import RedisProcess
from svc.enqueue.message import SubmitOptions, kwargs_repr, new_id, prepare, redis_envelope

from .conftest import NAMESPACE, Service, closing, start_worker, states, submit, watch

pytestmark = pytest.mark.timeout(90)


def kombu_message(redis_url: str, task_id: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The message a stock ``send_task`` LPUSHes for these options, read back from a scratch db."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    celery = closing(Celery("plain", broker=redis_url, backend=redis_url))
    celery.conf.update(
        task_serializer="json",
        accept_content=["json"],
        enable_utc=True,
        timezone="UTC",
        task_default_queue=svc_app.conf.task_default_queue,  # the demo app's queue: its namespace
    )
    celery.send_task("add", kwargs={"x": 2, "y": 3}, task_id=task_id, ignore_result=False, **options)
    keys = [key.decode() for key in client.keys("*") if client.type(key) == b"list"]
    assert len(keys) == 1, keys
    message = json.loads(client.lpop(keys[0]) or b"{}")
    client.flushdb()
    client.close()
    return keys[0], message


def ours(task_id: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    prepared = prepare(svc_app, task_id, "add", {"x": 2, "y": 3}, SubmitOptions(**options), {})
    key, raw = redis_envelope(prepared, 2, {})
    return key, json.loads(raw)


def close_in_time(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(dt.datetime.fromisoformat(a) - dt.datetime.fromisoformat(b)) < dt.timedelta(seconds=5)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"priority": 5},
        {"priority": 9},
        {"countdown": 30},
        {"expires": 60},
        {"queue": "reports"},
        {"eta": "2030-01-01T08:00:00+00:00", "priority": 3},
    ],
)
def test_envelope_matches_kombu_field_by_field(redis_server: RedisProcess, options: dict[str, Any]) -> None:
    scratch = redis_server.url.rsplit("/", 1)[0] + "/15"
    task_id = str(uuid.uuid4())
    theirs_key, theirs = kombu_message(scratch, task_id, options)
    our_key, mine = ours(task_id, options)
    assert our_key == theirs_key
    assert set(mine) == set(theirs)
    for field in ("content-encoding", "content-type"):
        assert mine[field] == theirs[field]
    assert json.loads(base64.b64decode(mine["body"])) == json.loads(base64.b64decode(theirs["body"]))
    assert set(mine["headers"]) == set(theirs["headers"])
    for name, value in theirs["headers"].items():
        if name in ("eta", "expires"):
            assert close_in_time(mine["headers"][name], value), name
        elif name == "ignore_result":
            assert bool(mine["headers"][name]) == bool(value)
        else:
            assert mine["headers"][name] == value, name
    assert set(mine["properties"]) == set(theirs["properties"])
    for name, value in theirs["properties"].items():
        if name in ("delivery_tag", "reply_to"):  # fresh per message / per app and thread
            uuid.UUID(mine["properties"][name])
        elif name == "expiration":
            assert abs(int(mine["properties"][name]) - int(value)) < 5000
        else:
            assert mine["properties"][name] == value, name


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=6))
def test_kwargsrepr_is_exactly_celerys_saferepr(kwargs: dict[str, Any]) -> None:
    expected = saferepr(kwargs, svc_app.amqp.kwargsrepr_maxsize, maxlevels=svc_app.conf.task_repr_maxlevels)
    assert kwargs_repr(svc_app, kwargs) == expected


def test_new_ids_are_version_4_uuids_in_canonical_form() -> None:
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text


async def test_countdown_is_honoured(api: Service, http: httpx.AsyncClient) -> None:
    submitted_at = time.time()
    task_id = (await submit(http, "add", 1, 2, _options={"countdown": 1.5}))["task_id"]
    frames, _ = await watch(api, task_id)
    started = next(frame for frame in frames if frame["state"] == "STARTED")
    assert started["ts"] - submitted_at >= 1.4
    assert frames[-1]["result"] == 3


async def test_eta_is_honoured(api: Service, http: httpx.AsyncClient) -> None:
    eta = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
    task_id = (await submit(http, "add", 1, 2, _options={"eta": eta.isoformat()}))["task_id"]
    frames, _ = await watch(api, task_id)
    started = next(frame for frame in frames if frame["state"] == "STARTED")
    assert started["ts"] >= eta.timestamp() - 0.1


async def test_expired_task_ends_revoked_with_reason(api: Service, http: httpx.AsyncClient) -> None:
    expired = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).isoformat()
    task_id = (await submit(http, "add", 1, 2, _options={"expires": expired}))["task_id"]
    frames, code = await watch(api, task_id)
    assert code == 1000
    assert frames[-1]["state"] == "REVOKED"
    assert frames[-1]["error"] == {"type": "TaskRevokedError", "message": "expired"}
    assert "STARTED" not in states(frames)


async def test_priority_message_is_run(api: Service, http: httpx.AsyncClient) -> None:
    task_id = (await submit(http, "add", 4, 5, _options={"priority": 9}))["task_id"]
    frames, _ = await watch(api, task_id)
    assert frames[-1]["result"] == 9


async def test_queue_option_reaches_only_a_worker_of_that_queue(
    api: Service, http: httpx.AsyncClient, redis_client: redis.Redis, redis_url: str, session_dir: Path
) -> None:
    queue = f"q{uuid.uuid4().hex[:8]}"
    task_id = (await submit(http, "add", 7, 8, _options={"queue": queue}))["task_id"]
    assert redis_client.llen(queue) == 1  # the default worker does not consume it
    other = start_worker(redis_url, session_dir, f"worker-{queue}", "--concurrency", "1", "--queues", queue)
    try:
        frames, _ = await watch(api, task_id)
        assert frames[-1]["state"] == "SUCCESS" and frames[-1]["result"] == 15
        assert frames[-1]["worker"].startswith(f"worker-{queue}")
    finally:
        other.stop()


async def test_api_never_subscribes_to_result_channels(
    http: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    task_ids = [(await submit(http, "sleep", 0.5))["task_id"] for _ in range(5)]
    channels = [f"{NAMESPACE}:celery-task-meta-{task_id}" for task_id in task_ids]
    counts = redis_client.pubsub_numsub(*channels)
    assert all(count == 0 for _, count in counts), counts


def test_every_event_shape_svc_sends_is_the_event_model() -> None:
    """One declaration of the frame: each shape encode_body writes, numbered as the publish script
    numbers it, is an ``Event`` with no field the model does not declare."""
    from svc.fanout.history import snapshot_from_meta
    from svc.wire.events import Event, encode_body, lost_snapshot, numbered

    shapes = [
        encode_body("t", "add", "PENDING"),
        encode_body("t", "add", "RECEIVED", worker="w@h", args="2, 3"),
        encode_body("t", "add", "PROGRESS", progress={"current": 1, "total": 2, "message": None}),
        encode_body("t", "add", "RETRY", error=ValueError("x"), retries=1, eta="2026-01-01T00:00:00+00:00"),
        encode_body("t", "add", "SUCCESS", result=2**64, runtime=0.5),
        encode_body("t", "add", "FAILURE", error=ValueError("x"), retries=3, retries_exhausted=True),
        encode_body("t", "add", "SUCCESS", result=1, workflow_id="w", step=0, step_seq=4),
        encode_body("w", "chain", "FAILURE", error={"type": "E", "message": "m"}, step=1, failed_task_id="t"),
        encode_body("w", "group", "SUCCESS", result=[1, 2], steps=["a", "b"]),
    ]
    for body in shapes:
        Event.model_validate_json(numbered(3, body))
    Event.model_validate_json(lost_snapshot("t", "STARTED"))
    meta = {
        "status": "FAILURE",
        "name": "add",
        "date_done": "2026-01-01T00:00:00",
        "retries": 0,
        "result": {"exc_type": "ValueError", "exc_message": ["bad"]},
    }
    snapshot = Event.model_validate_json(snapshot_from_meta("t", meta))
    assert snapshot.seq == 0 and snapshot.recovered is False and snapshot.error is not None
    assert snapshot.ts == 1767225600.0
    with pytest.raises(TypeError, match="not fields of an event"):
        encode_body("t", "add", "SUCCESS", colour="red")
