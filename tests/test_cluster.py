"""svc's events on a Redis Cluster (``SVC_REDIS_URL=redis+cluster://…``): real redis-servers, three
masters and three replicas with AOF on free ports (tests/redis_cluster.py), Celery's broker and result
backend elsewhere (a Redis of their own, or RabbitMQ: Celery cannot use a cluster). A master SIGKILLed
mid-run: every watcher still gets its terminal event once, seqs only rising; what the failover really
lost (writes the replica had not received) may only show as a ``recovered: false`` frame, and is
counted."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.cluster
import websockets
from redis.crc import key_slot

from svc.embedded import start_redis
from svc.errors import ConfigurationError
from svc.keyspace import BUCKETS, Layout, bucket_of
from svc.redis_clients import parse_cluster
from svc.settings import Settings

from .conftest import NAMESPACE, Service, assert_in_order, start_api, start_worker, states, submit, watch
from .failover import Failover, watch_through
from .rabbitmq import start_broker
from .redis_cluster import RedisCluster

pytestmark = pytest.mark.timeout(240)

TASKS = 200


def test_every_name_of_one_task_is_in_one_slot() -> None:
    layout = Layout("ns", sharded=True)
    for task_id in (str(uuid.uuid4()) for _ in range(50)):
        names = [
            layout.task_key(task_id),
            layout.history_key(task_id),
            layout.stream_key(task_id),
            layout.task_channel(task_id),
            layout.recent_key(task_id),
            layout.unclaimed_key(task_id),
            layout.feed_channel(task_id),
        ]
        assert len({key_slot(name.encode()) for name in names}) == 1, names
        assert layout.channel_task_id(layout.task_channel(task_id)) == task_id
    assert len(layout.recent_keys()) == len(layout.feed_channels()) == BUCKETS
    spread = {key_slot(key.encode()) for key in layout.recent_keys()}
    assert len(spread) > BUCKETS * 0.9  # the buckets land on (nearly) as many slots
    plain = Layout("ns")
    assert (
        plain.task_key("t") == "ns:task:t"
        and plain.recent_key("t") == "ns:recent"
        and not plain.feed_channel("t")
    )
    assert 0 <= bucket_of("t") < BUCKETS


def test_cluster_urls_are_parsed_and_celery_is_kept_off_the_cluster() -> None:
    target = parse_cluster("redis+cluster://:pw@h1:7000,h2:7001/")
    assert target.nodes == (("h1", 7000), ("h2", 7001)) and target.password == "pw" and not target.ssl
    for bad in ("redis+cluster:///", "redis+cluster://h1/", "redis+cluster://h1:7000/3"):
        with pytest.raises(ConfigurationError):
            parse_cluster(bad)
    settings = Settings(redis_url="redis+cluster://h1:7000/")
    assert settings.layout.sharded
    with pytest.raises(ConfigurationError, match="SVC_BROKER_URL"):
        _ = settings.broker


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    made = RedisCluster(tmp_path / "cluster")
    yield made
    made.stop()


def cluster_client(cluster: RedisCluster) -> redis.cluster.RedisCluster:
    nodes = [redis.cluster.ClusterNode(host, port) for host, port in cluster.startup_nodes]
    return redis.cluster.RedisCluster(startup_nodes=nodes, socket_timeout=5)


@pytest.fixture
def on_cluster(cluster: RedisCluster, tmp_path: Path) -> Iterator[tuple[Service, Service]]:
    """A worker and an API with their events on the cluster, broker and backend on a Redis of their own."""
    (tmp_path / "broker").mkdir()
    broker = start_redis(directory=tmp_path / "broker", die_with_parent=True)
    elsewhere = {"SVC_BROKER_URL": broker.url, "SVC_RESULT_BACKEND": broker.url}
    worker = start_worker(cluster.url, tmp_path, "worker-cluster", "--concurrency", "8", **elsewhere)
    api = start_api(cluster.url, tmp_path, name="api-cluster", **elsewhere)
    yield api, worker
    api.stop()
    worker.stop()
    broker.stop()


async def metric(api: Service, name: str, labels: str) -> float:
    async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    found = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_tasks_on_a_cluster_are_watched_recorded_in_one_slot_and_seen_by_the_monitor(
    cluster: RedisCluster, on_cluster: tuple[Service, Service], tmp_path: Path
) -> None:
    api, _ = on_cluster
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
        assert (await http.get("/readyz")).status_code == 200
        submitted = [await submit(http, "count_to", 3, delay=0.01) for _ in range(30)]
        for body in submitted:
            frames, code = await watch(api, body["task_id"])
            assert code == 1000
            assert_in_order(frames)
            assert states(frames)[-1] == "SUCCESS" and frames[-1]["result"] == 3
        streamed = await submit(http, "stream_text", words=20, delay=0)
        frames, _ = await watch(api, streamed["task_id"])
        text = "".join(frame["data"] for frame in frames if frame.get("op") == "stream")
        assert len(text.split()) == 20 and frames[-1]["state"] == "SUCCESS"
    layout = Layout(NAMESPACE, sharded=True)
    client = cluster_client(cluster)
    owners = set()
    for body in submitted:
        assert client.hget(layout.task_key(body["task_id"]), "terminal") == b"SUCCESS"
        assert client.zcard(layout.history_key(body["task_id"])) == 7  # PENDING … 3 PROGRESS, SUCCESS
        assert body["task_id"] in {
            raw.decode() for raw in client.zrange(layout.recent_key(body["task_id"]), 0, -1)
        }
        owners.add(cluster.master_of_slot(key_slot(layout.task_key(body["task_id"]).encode())))
    client.close()
    assert len(owners) == 3  # 30 tasks: every master holds some
    assert await metric(api, "svc_events_published_total", 'state="SUCCESS"') >= 31
    # A second API started now loads the recent tasks from every bucket.
    later = start_api(cluster.url, tmp_path, name="api-cluster-later", **api_env(api))
    try:
        wanted, seen = {body["task_id"] for body in submitted}, set()
        async with websockets.connect(f"{later.ws_url}/ws/dashboard", max_size=None) as socket:
            async with asyncio.timeout(30):  # the snapshot, then updates as the load goes on
                while not wanted <= seen:
                    seen.update(row["id"] for row in json.loads(await socket.recv())["tasks"])
    finally:
        later.stop()


def api_env(api: Service) -> dict[str, str]:
    return {key: value for key, value in api.env.items() if key in ("SVC_BROKER_URL", "SVC_RESULT_BACKEND")}


async def fail_over_mid_run(api: Service, cluster: RedisCluster) -> tuple[Failover, int]:
    """TASKS watched tasks through a SIGKILL of a master; the seen, and the port of its promoted replica."""
    promoted = 0

    async def kill() -> None:
        nonlocal promoted
        victim = cluster.masters()[0]
        cluster.kill(victim)
        promoted = await asyncio.to_thread(cluster.wait_until_promoted, victim)

    seen = await watch_through(api, TASKS, "count_to", {"args": [10], "kwargs": {"delay": 0.05}}, kill)
    return seen, promoted


async def test_a_master_killed_mid_run_leaves_no_watcher_without_its_end(
    cluster: RedisCluster, on_cluster: tuple[Service, Service]
) -> None:
    api, _ = on_cluster
    seen, promoted = await fail_over_mid_run(api, cluster)
    assert seen.finished_before_kill < TASKS  # the master died mid-run
    assert promoted in cluster.masters()
    print(f"cluster failover: {seen}, replica promoted on port {promoted}")


async def test_a_slot_migrated_under_a_running_task_moves_its_watchers_with_it(
    cluster: RedisCluster, on_cluster: tuple[Service, Service]
) -> None:
    api, _ = on_cluster
    steps = 30
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
        body = await submit(http, "count_to", steps, delay=0.1)
    slot = key_slot(Layout(NAMESPACE, sharded=True).task_channel(body["task_id"]).encode())
    source = cluster.master_of_slot(slot)
    target = next(port for port in cluster.masters() if port != source)
    frames: list[dict[str, Any]] = []
    url = f"{api.ws_url}/ws/tasks/{body['task_id']}?token={body['token']}"
    async with asyncio.timeout(60), websockets.connect(url) as socket:
        async for raw in socket:
            frames.append(json.loads(raw))
            if frames[-1]["state"] == "PROGRESS" and frames[-1]["progress"]["current"] == 3:
                await asyncio.to_thread(cluster.move_slot, slot, target)
    assert cluster.master_of_slot(slot) == target
    assert_in_order(frames)
    progress = [frame["progress"]["current"] for frame in frames if frame["state"] == "PROGRESS"]
    assert progress == list(range(1, steps + 1)) and frames[-1]["state"] == "SUCCESS"
    assert not [frame for frame in frames if frame.get("recovered") is False]


async def test_a_cluster_gone_altogether_answers_503_not_a_crash(
    cluster: RedisCluster, on_cluster: tuple[Service, Service]
) -> None:
    """With every node down, a submit's reload of the slot map finds no node: redis-py says so with an
    exception that is no RedisError, which must still end as 503, as a lost single Redis does."""
    api, _ = on_cluster
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as http:
        await submit(http, "add", 1, 2)
        cluster.stop()
        for _ in range(2):  # the first meets the lost node, the second the reload that finds none
            answer = await http.post("/tasks/add", json={"args": [1, 2]})
            assert answer.status_code == 503, answer.text


@pytest.mark.slow
async def test_rabbitmq_as_broker_with_the_cluster_as_event_plane(
    cluster: RedisCluster, tmp_path: Path
) -> None:
    broker, where = start_broker(tmp_path / "rabbitmq")
    if broker is None:
        pytest.skip(where)
    (tmp_path / "results").mkdir()
    results = start_redis(directory=tmp_path / "results", die_with_parent=True)
    env = {
        "SVC_BROKER_URL": broker.url,
        "SVC_RESULT_BACKEND": results.url,
        "SVC_NAMESPACE": f"amqpc{uuid.uuid4().hex[:6]}",
    }
    worker = start_worker(cluster.url, tmp_path, "worker-amqp-cluster", "--concurrency", "4", **env)
    api = start_api(cluster.url, tmp_path, name="api-amqp-cluster", **env)
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
            bodies = [await submit(http, "count_to", 3, delay=0.02) for _ in range(20)]
        for body in bodies:
            frames, code = await watch(api, body["task_id"])
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
    finally:
        api.stop()
        worker.stop()
        results.stop()
        broker.stop()
