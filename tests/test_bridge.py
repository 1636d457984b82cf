"""The bridge: one pub/sub connection per process, reconnect with no loss, bounded outboxes."""

from __future__ import annotations

import asyncio
import json
import random
import uuid

import httpx
import pytest
import redis
import websockets

from svc.backoff import Reconnects
from svc.fanout.outbox import Outbox, Overflow

from .conftest import NAMESPACE, Service, assert_in_order, plain_celery, states, submit, until, watch

pytestmark = pytest.mark.timeout(90)


def bridge_connections(client: redis.Redis) -> list[dict[str, object]]:
    """CLIENT LIST rows of the API's pub/sub connections that hold subscriptions."""
    return [row for row in client.client_list() if row.get("name") == "svc-bridge" and int(row["sub"]) > 0]


async def test_200_watchers_share_one_pubsub_connection(
    api: Service, redis_client: redis.Redis, redis_url: str
) -> None:
    task_ids = [str(uuid.uuid4()) for _ in range(200)]
    watchers = [asyncio.create_task(watch(api, task_id, timeout=60)) for task_id in task_ids]
    channels = [f"{NAMESPACE}:task:{task_id}" for task_id in task_ids]
    await until(lambda: all(count for _, count in redis_client.pubsub_numsub(*channels)), timeout=30)
    rows = bridge_connections(redis_client)
    assert len(rows) == 1, rows
    assert int(rows[0]["sub"]) >= 200
    celery = plain_celery(redis_url)
    for n, task_id in enumerate(task_ids):
        celery.send_task("add", args=[n, 1], task_id=task_id)
    results = await asyncio.gather(*watchers)
    for n, (frames, code) in enumerate(results):
        assert code == 1000
        assert_in_order(frames)
        assert frames[-1]["result"] == n + 1
    await until(lambda: not any(count for _, count in redis_client.pubsub_numsub(*channels)), timeout=10)


async def test_killed_pubsub_connection_is_reopened_with_nothing_lost(
    api: Service, http: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    task_id = (await submit(http, "count_to", 20, delay=0.05))["task_id"]
    frames: list[dict[str, object]] = []
    async with websockets.connect(f"{api.ws_url}/ws/tasks/{task_id}") as socket:
        async with asyncio.timeout(30):
            while not frames or frames[-1]["state"] != "PROGRESS":
                frames.append(json.loads(await socket.recv()))
            for row in bridge_connections(redis_client):
                redis_client.client_kill_filter(_id=row["id"])
            async for message in socket:
                frames.append(json.loads(message))
    assert socket.close_code == 1000
    assert_in_order(frames)
    assert [frame["seq"] for frame in frames] == list(range(1, len(frames) + 1))
    assert states(frames).count("PROGRESS") == 20
    assert "event=bridge_connected" in api.log.read_text()


class Collected:
    """A sink that keeps what it is sent, and wakes a waiter on each frame."""

    def __init__(self) -> None:
        self.frames: list[dict[str, object]] = []
        self.arrived = asyncio.Event()

    def push(self, task_id: str | None, seq: int, state: str, text: str) -> None:
        self.frames.append(json.loads(text))
        self.arrived.set()


async def test_task_first_watched_while_the_bridge_resubscribes_is_subscribed_too(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A channel opened while the reconnect's SUBSCRIBE is on its way (the SUBSCRIBE held back here, the
    one part of the race that cannot be timed for real) is subscribed before the bridge says connected."""
    import redis.asyncio as aioredis

    from svc.bridge import Bridge
    from svc.celery_app import app
    from svc.fanout.history import History
    from svc.keyspace import Layout
    from svc.wire import events

    namespace = f"race{uuid.uuid4().hex[:6]}"
    client = aioredis.Redis.from_url(redis_url)
    pubsub_client = aioredis.Redis.from_url(redis_url)
    hold, held = asyncio.Event(), asyncio.Event()
    make_pubsub = pubsub_client.pubsub

    def slow_pubsub() -> object:
        pubsub = make_pubsub()
        subscribe = pubsub.subscribe

        async def held_subscribe(*channels: str) -> None:
            if not hold.is_set():
                held.set()
                await hold.wait()
            await subscribe(*channels)

        pubsub.subscribe = held_subscribe  # type: ignore[method-assign]
        return pubsub

    pubsub_client.pubsub = slow_pubsub  # type: ignore[method-assign]
    bridge = Bridge(pubsub_client, History(client, namespace, app, None), namespace)
    await bridge.start()
    try:
        async with asyncio.timeout(30):
            await held.wait()  # the listener is connecting: its SUBSCRIBE is held
            sink = Collected()
            task_id = str(uuid.uuid4())
            opening = asyncio.create_task(bridge.open(task_id, 0, sink))
            await until(lambda: bridge.channel_count == 1)
            hold.set()
            subscription = await opening
            channel = events.task_channel(namespace, task_id)
            assert (await client.pubsub_numsub(channel))[0][1] == 1
            assert "subscribe_retry" not in caplog.text  # subscribed by the connect, not by a retry
            body = events.encode_body(task_id, "add", "SUCCESS", result=3)
            keys, args = events.publish_args(Layout(namespace), task_id, "SUCCESS", body, 10, 60)
            await client.eval(events.PUBLISH_SCRIPT, len(keys), *keys, *args)  # type: ignore[misc]
            await sink.arrived.wait()
            assert sink.frames[-1]["state"] == "SUCCESS" and sink.frames[-1]["result"] == 3
            await bridge.close(subscription)
    finally:
        await bridge.stop()
        await client.aclose()
        await pubsub_client.aclose()


def test_a_watcher_leaving_as_the_pubsub_connection_dies_is_let_go_quietly(redis_url: str) -> None:
    """Under uvloop (what ``svc api`` runs), an UNSUBSCRIBE written on the pub/sub connection in the
    moment between its socket closing and the listener noticing raised RuntimeError out of the bridge,
    into the watcher's socket handler. The connection is closed here by hand, the only way to hit that
    moment every time; the bridge then reconnects as after any loss."""
    import redis.asyncio as aioredis
    import uvloop

    from svc.bridge import Bridge
    from svc.celery_app import app
    from svc.fanout.history import History

    async def scenario() -> None:
        namespace = f"closing{uuid.uuid4().hex[:6]}"
        client = aioredis.Redis.from_url(redis_url)
        bridge = Bridge(aioredis.Redis.from_url(redis_url), History(client, namespace, app, None), namespace)
        await bridge.start()
        try:
            async with asyncio.timeout(30):
                await bridge.connected.wait()
                first = await bridge.open(str(uuid.uuid4()), 0, Collected())
                second = await bridge.open(str(uuid.uuid4()), 0, Collected())
                pubsub = bridge._pubsub
                assert pubsub is not None and pubsub.connection is not None
                pubsub.connection._writer.transport.abort()  # the socket is gone, unread by the listener
                await bridge.close(first)  # raised RuntimeError before
                await until(lambda: bridge.reconnects >= 2, timeout=20)
                await bridge.connected.wait()
                assert bridge.channel_count == 1
                await bridge.close(second)
        finally:
            await bridge.stop()
            await client.aclose()

    uvloop.run(scenario())


def test_outbox_coalesces_progress_and_keeps_terminal_events() -> None:
    outbox = Outbox(limit=2)
    outbox.push("a", 1, "PROGRESS", "a1")
    outbox.push("a", 2, "PROGRESS", "a2")
    outbox.push("a", 3, "PROGRESS", "a3")  # full: replaces a2, the task's newest queued frame
    outbox.push("a", 4, "SUCCESS", "a4")  # terminal: queued beyond the soft limit
    assert [frame.text for frame in outbox._frames] == ["a1", "a3", "a4"]
    assert outbox.coalesced == 1


def test_outbox_never_reorders_a_task() -> None:
    outbox = Outbox(limit=2)
    outbox.push("a", 1, "PROGRESS", "a1")
    outbox.push("a", 2, "RETRY", "a2")
    outbox.push("a", 3, "PROGRESS", "a3")  # newest queued frame of `a` is RETRY: no coalescing past it
    assert [frame.seq for frame in outbox._frames] == [1, 2, 3]


def test_a_backlog_is_queued_outside_the_limits_and_only_live_frames_count_to_them() -> None:
    outbox = Outbox(limit=2)
    for seq in range(1, 101):  # a resumed stream's history: 100 chunks, 50 times the hard limit
        outbox.push_backlog("a", seq, "STREAM", f"c{seq}")
    assert not outbox.overflowed and len(outbox) == 100
    for seq in range(101, 105):  # live frames after it: up to twice the limit of them are queued
        outbox.push("a", seq, "STREAM", f"c{seq}")
    assert not outbox.overflowed and len(outbox) == 104
    for _ in range(50):  # the client takes some of the backlog: the live frames' room stays the same
        outbox.pop()
    outbox.push("a", 105, "STREAM", "c105")  # the fifth live frame: past twice the limit
    assert outbox.overflowed and len(outbox) == 0


async def test_outbox_overflows_past_twice_its_limit() -> None:
    outbox = Outbox(limit=2)
    overflows: list[bool] = []
    outbox.on_overflow = lambda: overflows.append(True)
    for seq in range(1, 6):
        outbox.push(f"t{seq}", seq, "SUCCESS", str(seq))
    assert outbox.overflowed and len(outbox) == 0  # its frames are freed at once
    assert overflows == [True] and outbox.pop() is None
    outbox.push("t6", 6, "SUCCESS", "6")  # nothing more is taken
    assert len(outbox) == 0
    with pytest.raises(Overflow):
        await outbox.get()


def test_reconnects_use_full_jitter_grow_cap_and_reset_after_a_stable_connection() -> None:
    now = [0.0]
    reconnects = Reconnects(base=0.1, cap=1.0, stable_after=10.0, rng=random.Random(7), clock=lambda: now[0])
    ceilings, delays = [], []
    for _ in range(6):
        ceilings.append(reconnects.ceiling())
        delays.append(reconnects.next_delay())
    assert ceilings == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert all(0 <= delay < ceiling for delay, ceiling in zip(delays, ceilings, strict=True))
    assert min(delay / ceiling for delay, ceiling in zip(delays, ceilings, strict=True)) < 0.5  # not "equal"
    reconnects.connected()
    now[0] += 5.0  # lost before it was stable: the attempts go on growing
    reconnects.next_delay()
    assert reconnects.ceiling() == 1.0
    reconnects.connected()
    now[0] += 10.0  # stable: start again from the first attempt
    assert reconnects.next_delay() < 0.1 and reconnects.ceiling() == 0.2
