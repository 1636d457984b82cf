"""The events Redis as an API process holds it: clients for commands and for pub/sub, on one Redis (a
Sentinel-managed one included) or on a Redis Cluster.

On one Redis: a blocking pool for commands (a burst of requests waits for a connection, up to the
timeout, instead of failing with "too many connections"), and a second client without a socket timeout
for the bridge's and the monitor's pub/sub (a quiet pub/sub socket is not a dead one).

On a cluster: redis-py's ``RedisCluster`` for commands, which routes each by its key's slot, and two
:class:`svc.topology.Topology` views of its one slot map: one whose node clients carry the command
timeouts (svc.batcher's trips go through them), one whose clients have none (each shard's bridge and
the monitor's feed).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from svc import redis_clients
from svc.batcher import AnyBatcher, Batcher, ClusterBatcher
from svc.bridge import Bridge
from svc.fanout.history import History
from svc.monitor.redis_policy import eviction_problem
from svc.redis_clients import AsyncClient
from svc.settings import Settings
from svc.sharded_bridge import ShardedBridge
from svc.topology import Topology


@dataclass
class EventsPlane:
    """The API process's clients of the events Redis (see the module docstring)."""

    settings: Settings
    redis: AsyncClient
    pubsub_redis: aioredis.Redis | None = None  # one Redis
    topology: Topology | None = None  # a cluster: node clients with command timeouts
    pubsub_topology: Topology | None = None  # a cluster: node clients for pub/sub

    @classmethod
    async def open(cls, settings: Settings, url: str) -> EventsPlane:
        """The clients of the events Redis at ``url``; on a cluster, once its slot map is loaded (raises
        RedisError when no node of the URL answers)."""
        timeout = settings.redis_timeout
        commands = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "health_check_interval": 30}
        if not settings.layout.sharded:
            redis = redis_clients.async_client(
                url, blocking=True, max_connections=64, timeout=timeout, client_name="svc-api", **commands
            )
            pubsub = redis_clients.async_client(url, socket_connect_timeout=timeout, client_name="svc-bridge")
            return cls(settings, redis, pubsub_redis=pubsub)
        cluster = redis_clients.async_cluster_client(url, client_name="svc-api", **commands)
        target = redis_clients.parse_cluster(url)
        credentials = {"username": target.username, "password": target.password, "ssl": target.ssl}
        topology = Topology(cluster, client_name="svc-api", max_connections=64, **credentials, **commands)
        await topology.start()
        # The same slot map, with node clients that have no socket timeout.
        pubsub_topology = Topology(
            cluster, client_name="svc-bridge", socket_connect_timeout=timeout, **credentials
        )
        return cls(settings, cluster, topology=topology, pubsub_topology=pubsub_topology)

    def batcher(self) -> AnyBatcher:
        """A new batcher of commands for this plane (svc.batcher)."""
        if self.topology is not None:
            return ClusterBatcher(self.topology)
        assert isinstance(self.redis, aioredis.Redis)
        return Batcher(self.redis)

    def bridge(self, history: History) -> Bridge | ShardedBridge:
        """The bridge for this plane: one Bridge, or one per shard."""
        if self.pubsub_topology is not None:
            return ShardedBridge(self.pubsub_topology, history, self.settings.layout)
        assert self.pubsub_redis is not None
        return Bridge(self.pubsub_redis, history, self.settings.namespace)

    async def eviction_problem(self) -> str | None:
        """Why a node of the events Redis may evict svc's keys (svc.monitor.redis_policy), or None."""
        if self.topology is None:
            assert isinstance(self.redis, aioredis.Redis)
            return await eviction_problem(self.redis)
        for address in self.topology.primaries():
            problem = await eviction_problem(self.topology.client(address))
            if problem is not None:
                return f"{address[0]}:{address[1]}: {problem}"
        return None

    async def aclose(self) -> None:
        """Close every client of the plane."""
        for topology in (self.topology, self.pubsub_topology):
            if topology is not None:
                await topology.aclose()
        if self.pubsub_redis is not None:
            await self.pubsub_redis.aclose()
        await self.redis.aclose()
