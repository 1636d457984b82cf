"""Enqueue Celery tasks without blocking the event loop.

The message is Celery's own: headers and body come from ``app.amqp.as_task_v2`` and routing from
``app.amqp.router``, exactly as ``apply_async`` builds them. Only the last hop differs:

- Redis broker, direct route: the transport envelope is written here and ``LPUSH``ed with
  ``redis.asyncio`` in the same round trip that records the task's PENDING event.
- Any other broker or route (AMQP, topic/fanout exchanges): kombu publishes it in a worker thread.

Neither path calls ``backend.on_task_call``, so the API process never subscribes to result channels.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import anyio.to_thread
import orjson
import redis.asyncio as aioredis
from celery import Celery
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from svc import events
from svc.batcher import Batcher
from svc.errors import InvalidArguments, ServiceUnavailable
from svc.settings import Settings
from svc.workflows import Plan

PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEP = "\x06\x16"


class SubmitOptions(BaseModel):
    """Scheduling options of one submit (the SPEC's ``options``)."""

    model_config = ConfigDict(extra="forbid")

    countdown: float | None = Field(None, ge=0, le=366 * 86400, description="seconds before the task may run")
    eta: dt.datetime | None = Field(None, description="earliest run time, ISO 8601")
    expires: float | dt.datetime | None = Field(
        None, description="seconds, or ISO 8601 time, after which it is revoked"
    )
    priority: int | None = Field(None, ge=0, le=9, description="0-9; on Redis a lower number is served first")
    queue: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")


class SubmitRequest(BaseModel):
    """Body of ``POST /tasks/{name}``."""

    model_config = ConfigDict(extra="forbid")

    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    options: SubmitOptions = Field(default_factory=SubmitOptions)


@dataclass(frozen=True)
class Prepared:
    """A task message ready for the broker: Celery's headers/properties/body and its route."""

    task_id: str
    name: str
    headers: dict[str, Any]
    properties: dict[str, Any]
    body: Any
    route: dict[str, Any]
    route_kind: Literal["direct", "exchange"]
    queue_name: str


def prepare(app: Celery, task_id: str, name: str, kwargs: dict[str, Any], options: SubmitOptions) -> Prepared:
    """Build the protocol-2 message ``apply_async`` would build, with no I/O."""
    route_options: dict[str, Any] = {}
    if options.priority is not None:
        route_options["priority"] = options.priority
    if options.queue:
        route_options["queue"] = options.queue
    route = app.amqp.router.route(route_options, name, (), kwargs, app.tasks.get(name))
    expires = options.expires
    if expires is not None:
        seconds = (
            expires
            if isinstance(expires, float | int)
            else (expires - dt.datetime.now(dt.UTC)).total_seconds()
        )
        route["expiration"] = max(float(seconds), 0.0)
    if options.eta is not None and options.eta.tzinfo is None:
        raise InvalidArguments("options.eta needs a timezone (e.g. 2026-01-01T08:00:00Z)")
    if isinstance(expires, dt.datetime) and expires.tzinfo is None:
        raise InvalidArguments("options.expires needs a timezone (e.g. 2026-01-01T08:00:00Z)")
    headers, properties, body, _ = app.amqp.as_task_v2(
        task_id,
        name,
        (),
        kwargs,
        countdown=options.countdown,
        eta=options.eta,
        expires=expires,
        reply_to=app.thread_oid,
        create_sent_event=False,
    )
    queue = route["queue"]
    exchange_type = getattr(queue.exchange, "type", "direct")
    direct = exchange_type == "direct" and not route.get("exchange")
    return Prepared(
        task_id, name, headers, properties, body, route, "direct" if direct else "exchange", queue.name
    )


def redis_envelope(prepared: Prepared, delivery_mode: int, transport: dict[str, Any]) -> tuple[str, bytes]:
    """The queue key and JSON that kombu's Redis transport would ``LPUSH`` for this message."""
    priority = int(prepared.route.get("priority") or 0)
    properties: dict[str, Any] = {
        **prepared.properties,
        "delivery_mode": delivery_mode,
        "delivery_info": {"exchange": "", "routing_key": prepared.queue_name},
        "priority": priority,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    if "expiration" in prepared.route:
        properties["expiration"] = str(int(prepared.route["expiration"] * 1000))
    message = {
        "body": base64.b64encode(orjson.dumps(prepared.body)).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": prepared.headers,
        "properties": properties,
    }
    steps = transport.get("priority_steps", PRIORITY_STEPS)
    step = max((s for s in steps if s <= priority), default=0)
    key = f"{prepared.queue_name}{transport.get('sep', PRIORITY_SEP)}{step}" if step else prepared.queue_name
    return key, orjson.dumps(message)


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
        task_id = str(uuid.uuid4())
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
