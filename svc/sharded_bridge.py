"""The bridge on a Redis Cluster: one :class:`svc.bridge.Bridge` per shard, and each task routed to the
shard that owns its slot.

Each shard's Bridge holds one sharded pub/sub connection to that shard's primary, however many tasks
are watched there: so an API process holds as many pub/sub connections as the cluster has primaries,
never one per task. What a Bridge guarantees (every event once, in order, or an honest
``recovered: false``) holds through the moves below, because a moved subscription is caught up from
the history exactly as after a reconnect.

A slot changes owner in two ways, and both end in :meth:`ShardedBridge._rebalance`:

- a failover: the old primary's connection is lost (its Bridge calls back), the slot map is reloaded
  (svc.topology), and every subscription whose slot another primary now owns is released by the old
  Bridge and adopted, with a resync, by the new owner's;
- a migration (``redis-cli --cluster reshard``): Redis unsubscribes the clients of a moved slot's shard
  channels (a ``sunsubscribe`` push for a channel the Bridge still wants), and the same happens.

A reload that still shows the lost primary (the cluster has not promoted its replica yet) leaves its
subscriptions where they are, and the slot map is looked at again every FOLLOW_INTERVAL seconds (and
after each failed reconnect of the old Bridge), so they move as soon as the map says where to. A
Bridge left with no subscriptions on a node that is no longer a primary is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from redis.crc import key_slot
from redis.exceptions import RedisError

from svc.bridge import Bridge, Sink, Subscription, Watching
from svc.fanout.history import History
from svc.keyspace import Layout
from svc.topology import Address, Topology

log = logging.getLogger("svc.sharded_bridge")

FOLLOW_INTERVAL = 0.5  # seconds between two looks at the slot map while a shard's primary is away
FOLLOW_FOR = 60.0  # how long one rebalance keeps looking (a later loss of the connection starts another)


class AllConnected:
    """``is_set()`` while every primary's Bridge is connected (what /readyz reports as the bridge's)."""

    def __init__(self, owner: ShardedBridge) -> None:
        self.owner = owner

    def is_set(self) -> bool:
        """True when the Bridge of every current primary is connected."""
        shards = self.owner.shards
        primaries = self.owner.topology.primaries()
        return bool(primaries) and all(
            address in shards and shards[address].connected.is_set() for address in primaries
        )


class ShardedBridge(Watching):
    """The Bridge interface (``watch``, ``open``, ``close``, counters) over one Bridge per shard."""

    def __init__(self, topology: Topology, history: History, layout: Layout) -> None:
        self.topology = topology
        self.history = history
        self.layout = layout
        self.namespace = layout.namespace
        self.shards: dict[Address, Bridge] = {}
        self.connected = AllConnected(self)
        self._rebalancing: asyncio.Task[None] | None = None
        self._again = False
        self._stopped = False
        self._dropped: set[tuple[Address, str]] = set()  # channels Redis unsubscribed, to subscribe again
        self.moves = 0  # subscriptions moved from one shard's Bridge to another's

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """A Bridge for every primary of the slot map (each connects in the background)."""
        for address in self.topology.primaries():
            await self._shard(address)

    async def stop(self) -> None:
        """Stop every shard's Bridge."""
        self._stopped = True
        if self._rebalancing is not None:
            self._rebalancing.cancel()
            with contextlib.suppress(BaseException):
                await self._rebalancing
        for bridge in list(self.shards.values()):
            await bridge.stop()
        self.shards.clear()

    async def _shard(self, address: Address) -> Bridge:
        bridge = self.shards.get(address)
        if bridge is None:
            bridge = Bridge(
                self.topology.client(address),
                self.history,
                self.namespace,
                layout=self.layout,
                probe_channel=self._probe_channel(address),
                on_trouble=self._on_trouble,
            )
            self.shards[address] = bridge
            await bridge.start()
        return bridge

    def _probe_channel(self, address: Address) -> str:
        """A probe channel in a slot ``address`` owns (sharded pub/sub delivers only within a slot's
        shard): the first ``{ns}:{pN}:probe:<owner>`` whose hash tag lands there."""
        owned = self.topology.slots_of(address)
        owner = uuid.uuid4().hex
        for number in range(100_000):
            channel = f"{self.namespace}:{{p{number}}}:probe:{owner}"
            if key_slot(channel.encode()) in owned:
                return channel
        return f"{self.namespace}:probe:{owner}"  # owns no slot: its probe fails, and it reconnects

    # the Bridge interface -------------------------------------------------------------------

    @property
    def channel_count(self) -> int:
        """How many task channels have local subscribers, over every shard."""
        return sum(bridge.channel_count for bridge in self.shards.values())

    @property
    def subscriptions(self) -> int:
        """How many subscriptions this process holds, over every shard."""
        return sum(bridge.subscriptions for bridge in self.shards.values())

    @property
    def reconnects(self) -> int:
        """Pub/sub (re)connections made, over every shard (one per shard counts its first connection)."""
        return sum(bridge.reconnects for bridge in self.shards.values()) - max(0, len(self.shards) - 1)

    @property
    def events_routed(self) -> int:
        """Events received for at least one local subscriber, over every shard."""
        return sum(bridge.events_routed for bridge in self.shards.values())

    async def open(self, task_id: str, since: int, sink: Sink) -> Subscription:
        """As :meth:`svc.bridge.Bridge.open`, on the shard that owns the task's slot."""
        address = self.topology.owner(self.layout.task_channel(task_id))
        bridge = await self._shard(address)
        return await bridge.open(task_id, since, sink)

    async def close(self, subscription: Subscription) -> None:
        """As :meth:`svc.bridge.Bridge.close`, on whichever shard holds the subscription now."""
        for bridge in list(self.shards.values()):
            if subscription.channel in bridge.channels:
                await bridge.close(subscription)
                return
        subscription.done = True

    # following the slots ---------------------------------------------------------------------

    def _on_trouble(self, bridge: Bridge, channel: str | None) -> None:
        if self._stopped:
            return
        log.info("event=shard_trouble channel=%s", channel)
        if channel is not None:
            address = next((where for where, shard in self.shards.items() if shard is bridge), None)
            if address is not None:
                self._dropped.add((address, channel))
        if self._rebalancing is None or self._rebalancing.done():
            self._rebalancing = asyncio.create_task(self._rebalance())
        else:
            self._again = True  # one more pass once this one ends

    async def _rebalance(self) -> None:
        """Reload the slot map and move every subscription to the Bridge of its slot's owner; while the
        map still names a primary whose Bridge cannot connect (the cluster has not promoted its replica
        yet), look again every FOLLOW_INTERVAL seconds, for at most FOLLOW_FOR."""
        deadline = asyncio.get_running_loop().time() + FOLLOW_FOR
        while True:
            self._again = False
            try:
                await self.topology.refresh()
            except (RedisError, OSError) as exc:
                log.warning("event=slot_map_unavailable error=%r", exc)
                return  # the Bridge that called keeps failing, and calls again
            for address in self.topology.primaries():
                await self._shard(address)
            dropped, self._dropped = self._dropped, set()
            for address, bridge in list(self.shards.items()):
                for channel in bridge.channels:
                    owner = self.topology.owner(channel)
                    was_dropped = (address, channel) in dropped  # Redis unsubscribed it already
                    if owner == address:
                        if was_dropped:  # yet its slot is still here: subscribe it again
                            await bridge.adopt(await bridge.release(channel, False), resync=True)
                        continue
                    moved = await bridge.release(channel, unsubscribe=not was_dropped)
                    await (await self._shard(owner)).adopt(moved, resync=True)
                    self.moves += len(moved)
                    log.warning("event=subscriptions_moved channel=%s to=%s:%d", channel, *owner)
                if not bridge.channels and address not in self.topology.primaries():
                    del self.shards[address]
                    await bridge.stop()
            if self._again:
                continue
            stuck = [
                bridge for bridge in self.shards.values() if not bridge.connected.is_set() and bridge.channels
            ]
            if not stuck or asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(FOLLOW_INTERVAL)
