"""Enqueue Celery tasks without blocking the event loop.

The message is Celery's own: headers and body come from ``app.amqp.as_task_v2`` and routing from
``app.amqp.router``, exactly as ``apply_async`` builds them. Only the last hop differs:

- Redis broker, direct route: the transport envelope is written here and ``LPUSH``ed with
  ``redis.asyncio`` in the same round trip that records the task's PENDING event.
- Any other broker or route (AMQP, topic/fanout exchanges): kombu publishes it in a worker thread.

Neither path calls ``backend.on_task_call``, so the API process never subscribes to result channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import redis.asyncio as aioredis
from celery import Celery
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from svc import events
from svc.batcher import Batcher
from svc.errors import ServiceUnavailable
from svc.message import Prepared, SubmitOptions, new_id, prepare, redis_envelope
from svc.settings import Settings
from svc.workflows import Plan


class SubmitRequest(BaseModel):
    """Body of ``POST /tasks/{name}``."""

    model_config = ConfigDict(extra="forbid")

    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    options: SubmitOptions = Field(default_factory=SubmitOptions)


def _publish_with_kombu(app: Celery, prepared: Prepared) -> None:
    """Publish through kombu (blocking): for AMQP and exchange routes. Runs in a worker thread."""
    message = (prepared.headers, prepared.properties, prepared.body, None)
    with app.producer_or_acquire() as producer:
        app.amqp.send_task_message(producer, prepared.name, message, **prepared.route)


@dataclass(frozen=True)
class Submitted:
    """What a submit produced: the task id, and whether an earlier submit with the same key made it."""

    task_id: str
    name: str
    duplicate: bool


class Submitter:
    """Records PENDING and enqueues, asynchronously, on the configured broker."""

    def __init__(self, app: Celery, settings: Settings, events_redis: aioredis.Redis) -> None:
        self.app = app
        self.settings = settings
        self.redis = events_redis
        self.broker_is_events_redis = settings.broker == settings.redis_url
        self.broker_is_redis = settings.broker.startswith(("redis://", "rediss://", "unix://"))
        self.broker_redis = (
            events_redis
            if self.broker_is_events_redis or not self.broker_is_redis
            else aioredis.Redis.from_url(
                settings.broker,
                socket_timeout=settings.redis_timeout,
                socket_connect_timeout=settings.redis_timeout,
            )
        )
        self.events_batcher = Batcher(events_redis)
        separate_broker = self.broker_redis is not events_redis
        self.broker_batcher = Batcher(self.broker_redis) if separate_broker else self.events_batcher
        self.delivery_mode = int((app.conf.task_default_delivery_mode == "persistent" and 2) or 1)
        self.transport = dict(app.conf.broker_transport_options or {})

    async def submit(
        self, name: str, kwargs: dict[str, Any], options: SubmitOptions, idempotency_key: str | None = None
    ) -> Submitted:
        """Enqueue ``name`` with validated kwargs; return its id. Raises ServiceUnavailable (503)."""
        task_id = new_id()
        try:
            if idempotency_key is not None:
                first = await self._claim_idempotency_key(idempotency_key, task_id)
                if first is not None:
                    return Submitted(first, name, duplicate=True)
            prepared = prepare(self.app, task_id, name, kwargs, options)
            # PENDING is recorded before the message is pushed (same connection, in order), so no
            # worker event can take seq 1.
            pending = events.encode_body(task_id, name, "PENDING")
            record_pending = events.publish_command(self.settings, task_id, "PENDING", pending)
            if self.broker_is_redis and prepared.route_kind == "direct":
                queue_key, message = redis_envelope(prepared, self.delivery_mode, self.transport)
                if self.broker_is_events_redis:
                    await self.events_batcher.execute(record_pending, ("LPUSH", queue_key, message))
                else:
                    await self.events_batcher.execute(record_pending)
                    await self.broker_batcher.execute(("LPUSH", queue_key, message))
            else:
                await self.events_batcher.execute(record_pending)
                await anyio.to_thread.run_sync(_publish_with_kombu, self.app, prepared)
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(f"could not reach Redis or the broker: {type(exc).__name__}") from exc
        except Exception as exc:
            if type(exc).__module__.split(".")[0] in {"kombu", "amqp"}:
                raise ServiceUnavailable(f"could not reach the broker: {type(exc).__name__}") from exc
            raise
        return Submitted(task_id, name, duplicate=False)

    async def submit_workflow(self, plan: Plan) -> None:
        """Record a planned workflow (PENDING for it and every step), then send Celery's canvas.

        The canvas is sent by Celery itself in a worker thread (chains embed later steps in the
        first message; chords set up the backend's counter), never on the event loop.
        """
        try:
            await self.events_batcher.execute(*plan.commands)
            await anyio.to_thread.run_sync(lambda: plan.canvas.apply_async())
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(f"could not reach Redis or the broker: {type(exc).__name__}") from exc

    async def _claim_idempotency_key(self, key: str, task_id: str) -> str | None:
        """Atomically bind ``key`` to ``task_id``; return the id an earlier submit bound it to, if any."""
        redis_key = events.idempotency_key(self.settings.namespace, key)
        claimed = await self.redis.set(redis_key, task_id, nx=True, ex=self.settings.idempotency_ttl)
        if claimed:
            return None
        existing = await self.redis.get(redis_key)
        return existing.decode() if isinstance(existing, bytes) else existing

    async def aclose(self) -> None:
        """Close the broker connection if it is not the shared events client."""
        if self.broker_redis is not self.redis:
            await self.broker_redis.aclose()
