"""Everything an API process holds open: Redis clients, the submitter, the history reader, the bridge."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
from celery import Celery
from celery._state import _set_task_join_will_block
from redis.exceptions import RedisError

from svc import redis_clients
from svc.bridge import Bridge
from svc.enqueue.control import TaskControl
from svc.enqueue.ratelimit import RateLimiter
from svc.enqueue.redelivery import Redelivery
from svc.enqueue.submit import Submitter
from svc.exposure import ExposedTask
from svc.fanout.history import History
from svc.monitor import readiness
from svc.monitor.feed import DashboardFeed
from svc.monitor.live import Monitor
from svc.monitor.metrics import LiveFigures, Metrics
from svc.plane import EventsPlane
from svc.redis_clients import AsyncClient
from svc.settings import Settings
from svc.sharded_bridge import ShardedBridge
from svc.wire import events
from svc.wiring import Wiring

log = logging.getLogger("svc.runtime")
WORKER_ONLINE_SECONDS = 10.0


async def _warn_if_evicting(plane: EventsPlane) -> None:
    """Say at startup what /readyz will say, when Redis may evict svc's keys (not when it is down)."""
    with contextlib.suppress(RedisError, OSError):
        problem = await plane.eviction_problem()
        if problem is not None:
            log.error("event=redis_evicts_keys detail=%r", problem)


def _plain_backend(app: Celery) -> bool:
    """True when the app's result keys can be read straight from Redis: Celery's Redis (or Sentinel)
    backend storing JSON (another serialiser, or a backend class of the app's own, is read through
    Celery)."""
    from celery.backends.redis import RedisBackend, SentinelBackend

    backend = app.backend
    return type(backend) in (RedisBackend, SentinelBackend) and app.conf.result_serializer == "json"


@dataclass
class Runtime:
    """The API process's connections; made at startup, closed at shutdown."""

    settings: Settings
    app: Celery
    wiring: Wiring
    exposed: dict[str, ExposedTask]
    plane: EventsPlane
    backend_redis: aioredis.Redis | None
    submitter: Submitter
    history: History
    bridge: Bridge | ShardedBridge
    limiter: RateLimiter
    metrics: Metrics
    monitor: Monitor
    dashboard: DashboardFeed
    redelivery: Redelivery | None
    control: TaskControl
    connections: set[Any] = field(default_factory=set)
    connections_by_client: Counter[str] = field(default_factory=Counter)

    @classmethod
    async def start(
        cls, settings: Settings, app: Celery, wiring: Wiring, exposed: dict[str, ExposedTask]
    ) -> Runtime:
        """Open clients and start the bridge (which connects in the background) for ``app``."""
        # Celery's "results will be joined synchronously" flag: with it, apply_async (used for
        # workflows and revokes) never SUBSCRIBEs this process to result channels it would not read.
        _set_task_join_will_block(True)
        plane = await EventsPlane.open(settings, wiring.events_url)
        redis = plane.redis
        await _warn_if_evicting(plane)
        backend_redis: aioredis.Redis | None = None
        if wiring.backend_redis_url is not None and _plain_backend(app):
            backend_redis = (
                redis
                if wiring.backend_redis_url == wiring.events_url and isinstance(redis, aioredis.Redis)
                else redis_clients.async_client(
                    wiring.backend_redis_url, socket_timeout=settings.redis_timeout
                )
            )
        history = History(
            None, settings.namespace, app, backend_redis, reads=plane.batcher(), layout=settings.layout
        )
        bridge = plane.bridge(history)
        await bridge.start()
        submitter = Submitter(app, settings, wiring, redis, plane.batcher())
        limiter = RateLimiter(
            submitter.events_batcher, settings.namespace, settings.rate_limit, settings.rate_burst
        )
        redelivery = None
        if (
            settings.redeliver_after
            and submitter.broker_is_events_redis
            and isinstance(redis, aioredis.Redis)
        ):
            transport = dict(app.conf.broker_transport_options or {})
            unacked = transport.get("global_keyprefix", "") + transport.get("unacked_key", "unacked")
            redelivery = Redelivery(redis, settings.namespace, settings.redeliver_after, unacked)
            redelivery.start()
        metrics = Metrics()
        broker_redis = submitter.broker_redis
        monitor = Monitor(
            settings, redis, plane.pubsub_redis, broker_redis, app, metrics, plane.pubsub_topology
        )
        dashboard = DashboardFeed(monitor)
        if settings.monitor:
            await monitor.start()
            dashboard.start()
        runtime = cls(
            settings,
            app,
            wiring,
            exposed,
            plane,
            backend_redis,
            submitter,
            history,
            bridge,
            limiter,
            metrics,
            monitor,
            dashboard,
            redelivery,
            TaskControl(settings, app, redis, history, submitter, exposed),
        )
        metrics.watch(runtime.live_figures)
        return runtime

    @property
    def redis(self) -> AsyncClient:
        """The events Redis's client for commands (the plane's)."""
        return self.plane.redis

    def live_figures(self) -> LiveFigures:
        """What /metrics reports of this process's live state, read now."""
        return LiveFigures(
            connections=len(self.connections),
            subscriptions=self.bridge.subscriptions,
            bridge_reconnects=max(0, self.bridge.reconnects - 1),
            events_routed=self.bridge.events_routed,
            redelivered=self.redelivery.resent if self.redelivery is not None else 0,
            monitor_reconnects=self.monitor.reconnects,
            malformed=self.monitor.malformed,
            workers_online={worker.hostname: worker.online for worker in self.monitor.workers.all()},
            queue_depth=dict(self.monitor.queue_depth),
        )

    async def stop(self) -> None:
        """Stop the bridge, the monitor and close every client."""
        await self.dashboard.stop()
        await self.monitor.stop()
        if self.redelivery is not None:
            await self.redelivery.stop()
        await self.bridge.stop()
        await self.submitter.aclose()
        if self.backend_redis is not None and self.backend_redis is not self.redis:
            await self.backend_redis.aclose()
        await self.plane.aclose()

    def connections_full(self, client: str) -> bool:
        """True when ``client`` holds as many sockets and event streams as SVC_WS_MAX_CONNECTIONS allows."""
        return self.connections_by_client[client] >= self.settings.ws_max_connections

    def admit_connection(self, connection: object, client: str) -> None:
        """Count an accepted WebSocket (for shutdown, /metrics and the per-client limit)."""
        self.connections.add(connection)
        self.connections_by_client[client] += 1

    def release_connection(self, connection: object, client: str) -> None:
        """Forget a closed WebSocket."""
        self.connections.discard(connection)
        self.connections_by_client[client] -= 1
        if self.connections_by_client[client] <= 0:
            del self.connections_by_client[client]

    async def workflow_of(self, task_id: str) -> str | None:
        """The id of the workflow ``task_id`` is a step of, if any."""
        key = self.settings.layout.task_key(task_id)
        workflow_id = await self.redis.hget(key, "workflow")
        return workflow_id.decode() if isinstance(workflow_id, bytes) else None

    async def readiness(self) -> dict[str, Any]:
        """What ``GET /readyz`` answers (ServiceUnavailable with the reason when not ready)."""
        submitter = self.submitter
        return await readiness.check(
            self.redis,
            self.plane.eviction_problem,
            submitter.broker_redis,
            self.app,
            self.settings.redis_timeout,
            self.online_workers,
            self.bridge.connected.is_set(),
        )

    async def online_workers(self) -> list[str]:
        """Hostnames of workers whose heartbeat is recent."""
        key = events.workers_key(self.settings.namespace)
        since = time.time() - WORKER_ONLINE_SECONDS
        names = cast(list[bytes], await self.redis.zrangebyscore(key, since, "+inf"))
        return [name.decode() for name in names]
