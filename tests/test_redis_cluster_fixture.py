"""tests/redis_cluster.py's RedisCluster: a real cluster that routes keys and sharded pub/sub by slot, and
fails over when a master is SIGKILLed, losing nothing a replica had acknowledged."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster
from redis.exceptions import MovedError

from .redis_cluster import RedisCluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    started = time.monotonic()
    cluster = RedisCluster(tmp_path)
    print(f"\nredis cluster of 6 nodes ready in {time.monotonic() - started:.2f} s")
    yield cluster
    cluster.stop()


def node(port: int, **options: Any) -> redis.Redis:
    """A plain client of one node (not cluster-aware: it sees MOVED as an error)."""
    return redis.Redis(host="127.0.0.1", port=port, **options)


def cluster_client(cluster: RedisCluster) -> redis.cluster.RedisCluster:
    nodes = [redis.cluster.ClusterNode(host, port) for host, port in cluster.startup_nodes]
    return redis.cluster.RedisCluster(startup_nodes=nodes, decode_responses=True, socket_timeout=5)


def test_a_cluster_routes_by_slot_and_fails_over_without_losing_acknowledged_writes(
    redis_cluster: RedisCluster,
) -> None:
    cluster = redis_cluster
    masters = cluster.masters()
    assert len(masters) == 3 and len(cluster.startup_nodes) == 6
    assert set(masters) <= {port for _, port in cluster.startup_nodes}
    assert cluster.url.startswith("redis+cluster://127.0.0.1:") and cluster.url.count(",") == 2

    client = cluster_client(cluster)
    # keys until every master serves one: "k" first, then key0, key1, ...
    keys: dict[int, str] = {cluster.master_of_slot(client.keyslot("k")): "k"}
    index = 0
    while len(keys) < len(masters):
        key = f"key{index}"
        keys.setdefault(cluster.master_of_slot(client.keyslot(key)), key)
        index += 1
    assert len({client.keyslot(key) for key in keys.values()}) == 3
    for port, key in keys.items():
        assert client.get_node_from_key(key).port == port  # redis-py's slot map agrees with the cluster's
        assert client.set(key, f"value of {key}")
    for port, key in keys.items():
        assert client.get(key) == f"value of {key}"
        with node(port, decode_responses=True) as owner:
            assert owner.get(key) == f"value of {key}"  # on the master of its slot itself
        elsewhere = next(master for master in masters if master != port)
        with node(elsewhere) as other, pytest.raises(MovedError) as moved:
            other.get(key)
        assert (moved.value.slot_id, moved.value.port) == (client.keyslot(key), port)  # sent to the owner

    # sharded pub/sub, on the master of the channel's slot
    channel = "svc:events:{bucket7}"
    owner_port = cluster.master_of_slot(client.keyslot(channel))
    with node(owner_port, decode_responses=True) as owner:
        subscriber = owner.pubsub()
        subscriber.ssubscribe(channel)
        confirmation = subscriber.get_sharded_message(timeout=5)
        assert confirmation is not None and confirmation["type"] == "ssubscribe", confirmation
        assert owner.spublish(channel, "hello") == 1  # one subscriber received it
        message = subscriber.get_sharded_message(timeout=5)
        assert message is not None, "no smessage"
        assert (message["type"], message["channel"], message["data"]) == ("smessage", channel, "hello")
        subscriber.close()
    not_owner = next(master for master in masters if master != owner_port)
    with node(not_owner) as other, pytest.raises(MovedError) as moved:
        other.spublish(channel, "misrouted")
    assert moved.value.port == owner_port

    # the master of "k": a last write there, acknowledged by its replica, then SIGKILL
    old = cluster.master_of_slot(client.keyslot("k"))
    with node(old, socket_timeout=10, single_connection_client=True) as master:
        assert master.set("k", "acknowledged")
        # WAIT counts the replicas that have this connection's writes (a WAIT on another connection, with
        # no writes of its own, would return at once whatever the replica has)
        assert master.wait(1, 0) == 1
    client.close()
    killed_at = time.monotonic()
    cluster.kill(old)
    new = cluster.wait_until_promoted(old)
    print(f"failover: replica {new} serves the slots of {old} after {time.monotonic() - killed_at:.2f} s")
    assert new != old and new not in masters
    assert new in cluster.masters() and old not in cluster.masters() and len(cluster.masters()) == 3
    assert cluster.master_of_slot(client.keyslot("k")) == new
    assert ("127.0.0.1", old) not in cluster.startup_nodes

    fresh = cluster_client(cluster)
    try:
        assert fresh.get_node_from_key("k").port == new
        assert fresh.get("k") == "acknowledged"
        for key in keys.values():  # the keys of the masters that lived
            if key != "k":
                assert fresh.get(key) == f"value of {key}"
        assert fresh.set("k", "after the failover") and fresh.get("k") == "after the failover"
    finally:
        fresh.close()
