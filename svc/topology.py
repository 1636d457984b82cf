"""A Redis Cluster as the API side sees it: which primary owns a slot, and one plain client per primary.

redis-py's ``RedisCluster`` keeps the slot map (``CLUSTER SLOTS``) and routes single commands; svc's
own hot paths (svc.batcher's pipelined trips, svc.bridge's raw pub/sub reads) talk to one node at a
time, so they take that node's plain ``redis.asyncio.Redis`` from here. :meth:`Topology.refresh` reloads
the slot map; calls that come while one refresh runs wait for it instead of starting their own, so a
thousand callers that all saw a failover cost one ``CLUSTER SLOTS``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
from redis.crc import key_slot

from svc.redis_clients import cluster_errors_as_connection_errors

Address = tuple[str, int]


class Topology:
    """The slot map of one cluster, and a client per node, made with the same connection options.

    Two Topologies over one ``RedisCluster`` share its slot map: a refresh through either is seen by both.
    """

    def __init__(self, cluster: aiocluster.RedisCluster, **client_options: Any) -> None:
        self.cluster = cluster
        self.client_options = client_options
        self._clients: dict[Address, aioredis.Redis] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self.refreshes = 0

    async def start(self) -> None:
        """Load the slot map; ConnectionError (a RedisError) saying so when no node of the URL answers."""
        with cluster_errors_as_connection_errors():
            await self.cluster.initialize()

    def owner(self, key: str | bytes) -> Address:
        """The primary that owns ``key``'s slot, as far as the slot map knows (ConnectionError while the
        map has no owner for it, as in a failover under way)."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        with cluster_errors_as_connection_errors():
            node = self.cluster.nodes_manager.get_node_from_slot(slot)
        return node.host, int(node.port)

    def primaries(self) -> list[Address]:
        """Every primary of the slot map."""
        return [(node.host, int(node.port)) for node in self.cluster.get_primaries()]

    def slots_of(self, address: Address) -> set[int]:
        """The slots ``address`` owns in the slot map."""
        table = self.cluster.nodes_manager.slots_cache
        return {
            slot for slot, nodes in table.items() if nodes and (nodes[0].host, int(nodes[0].port)) == address
        }

    def client(self, address: Address) -> aioredis.Redis:
        """This process's plain client of one node (made on first use, kept until :meth:`aclose`)."""
        made = self._clients.get(address)
        if made is None:
            host, port = address
            made = self._clients[address] = aioredis.Redis(host=host, port=port, **self.client_options)
        return made

    async def refresh(self) -> None:
        """Reload the slot map from any node that answers; concurrent calls share one reload."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._reload())
        await asyncio.shield(self._refreshing)

    async def _reload(self) -> None:
        with cluster_errors_as_connection_errors():
            await self.cluster.nodes_manager.initialize()
        self.refreshes += 1

    async def aclose(self) -> None:
        """Close every node client (not the cluster client, which may serve other views too)."""
        if self._refreshing is not None:
            self._refreshing.cancel()
            with contextlib.suppress(BaseException):
                await self._refreshing
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
