"""Enqueue Celery tasks without blocking the event loop.

The message is Celery's own: headers and body come from ``app.amqp.as_task_v2`` and routing from
``app.amqp.router``, exactly as ``apply_async`` builds them. Only the last hop differs:

- Redis broker, direct route, JSON serialiser: the transport envelope is written here and ``LPUSH``ed
  with ``redis.asyncio`` in the same round trip that records the task's PENDING event.
- Any other broker, route or serialiser (AMQP, topic/fanout exchanges, an app sending pickle or msgpack):
  kombu publishes it in a worker thread, serialised as the app says.

Neither path calls ``backend.on_task_call``, so the API process never subscribes to result channels.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import redis.asyncio as aioredis
from celery import Celery
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import NoScriptError, RedisError

from svc import redis_clients
from svc.batcher import AnyBatcher, Batcher
from svc.enqueue import idempotency
from svc.enqueue.message import Prepared, Routes, SubmitOptions, new_id, prepare, redis_envelope
from svc.enqueue.workflows import Plan
from svc.errors import ServiceUnavailable
from svc.redis_clients import AsyncClient
from svc.settings import Settings
from svc.wire import events
from svc.wiring import Wiring
from svc.worker.sender import pending_recorded

REPLAY_POLL = 0.05  # seconds between two looks at a claim another submit holds
# Delete an Idempotency-Key only if it still holds this submit's claim (KEYS[1] the key, ARGV[1] the claim).
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class SubmitRequest(BaseModel):
    """Body of ``POST /tasks/{name}``."""

    model_config = ConfigDict(extra="forbid")

    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    options: SubmitOptions = Field(default_factory=SubmitOptions)


def _publish_with_kombu(app: Celery, prepared: Prepared) -> None:
    """Publish through kombu (blocking): for AMQP and exchange routes. Runs in a worker thread."""
    message = (prepared.headers, prepared.properties, prepared.body, None)
    with pending_recorded(), app.producer_or_acquire() as producer:
        app.amqp.send_task_message(producer, prepared.name, message, **prepared.route)


@dataclass(frozen=True)
class Submitted:
    """What a submit produced: the task id, and whether an earlier submit with the same key made it."""

    task_id: str
    name: str
    duplicate: bool


class Submitter:
    """Records PENDING and enqueues, asynchronously, on the configured broker."""

    def __init__(
        self,
        app: Celery,
        settings: Settings,
        wiring: Wiring,
        events_redis: AsyncClient,
        events_batcher: AnyBatcher,
    ) -> None:
        """Submits for ``app``: events through ``events_batcher`` (its pipelined writes; ``events_redis``
        for the rest), task messages to the app's broker (svc/wiring.py)."""
        self.app = app
        self.settings = settings
        self.redis = events_redis
        self.broker_is_events_redis = wiring.broker_is_events_redis
        self.broker_is_redis = wiring.broker_is_redis
        self.events_batcher = events_batcher
        # The broker's Redis client, when the broker is a Redis (never a cluster: Celery cannot use one).
        self.broker_redis: aioredis.Redis | None = None
        self.broker_batcher: AnyBatcher = events_batcher
        if self.broker_is_events_redis and isinstance(events_redis, aioredis.Redis):
            self.broker_redis = events_redis
        elif self.broker_is_redis:
            self.broker_redis = redis_clients.async_client(
                wiring.broker_redis_url or wiring.broker_url,
                socket_timeout=settings.redis_timeout,
                socket_connect_timeout=settings.redis_timeout,
            )
            self.broker_batcher = Batcher(self.broker_redis)
        self.delivery_mode = int((app.conf.task_default_delivery_mode == "persistent" and 2) or 1)
        self.transport = dict(app.conf.broker_transport_options or {})
        # The message is written here only as kombu would write it for a JSON app; any other serialiser
        # or compression goes through kombu itself.
        self.writes_json = app.conf.task_serializer == "json" and not app.conf.task_compression
        self.routes: Routes = {}

    async def submit(
        self,
        name: str,
        kwargs: dict[str, Any],
        options: SubmitOptions,
        idempotency_key: str | None = None,
        args: tuple[Any, ...] = (),
    ) -> Submitted:
        """Enqueue ``name`` with validated arguments; return its id. Raises InvalidArguments (422) before
        anything is claimed or written, Conflict (409) for an Idempotency-Key used for another request,
        ServiceUnavailable (503) when Redis or the broker cannot be reached."""
        task_id = new_id()
        prepared = prepare(self.app, task_id, name, kwargs, options, self.routes, args)
        pending = events.encode_body(task_id, name, "PENDING")
        claim = None
        if idempotency_key is not None:
            digest = idempotency.fingerprint(name, kwargs, options.model_dump(mode="json", exclude_none=True))
            claim = (events.idempotency_key(self.settings.namespace, idempotency_key), digest)
        try:
            if self.broker_is_events_redis and prepared.route_kind == "direct" and self.writes_json:
                return await self._submit_atomically(prepared, pending, claim)
            return await self._submit_in_steps(prepared, pending, claim)
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(f"could not reach Redis or the broker: {type(exc).__name__}") from exc
        except Exception as exc:
            if type(exc).__module__.split(".")[0] in {"kombu", "amqp"}:
                raise ServiceUnavailable(f"could not reach the broker: {type(exc).__name__}") from exc
            raise

    async def _submit_atomically(
        self, prepared: Prepared, pending: bytes, claim: tuple[str, str] | None
    ) -> Submitted:
        """One script claims the key, records PENDING, keeps the message for redelivery and pushes it:
        all of it happens or none of it does, so a key always names a task that was enqueued."""
        tag = new_id()
        queue_key, message = redis_envelope(prepared, self.delivery_mode, self.transport, tag)
        claim_key, digest = claim or ("", "")
        stored = idempotency.value(idempotency.ENQUEUED, digest, prepared.task_id)
        arguments = (self.settings, prepared.task_id, pending, queue_key, message, tag, claim_key, stored)
        try:
            (existing,) = await self.events_batcher.execute(events.submit_command(*arguments))
        except NoScriptError:  # nothing ran: this Redis has not seen the script yet
            (existing,) = await self.events_batcher.execute(events.submit_command(*arguments, by_hash=False))
        if existing is None:
            return Submitted(prepared.task_id, prepared.name, duplicate=False)
        return Submitted(await self._replay(claim_key, digest, existing), prepared.name, duplicate=True)

    async def _submit_in_steps(
        self, prepared: Prepared, pending: bytes, claim: tuple[str, str] | None
    ) -> Submitted:
        """PENDING in the events Redis, the message in a broker of its own; an Idempotency-Key is claimed
        first, released if the submit fails, and confirmed once the message is in the broker."""
        task_id, name = prepared.task_id, prepared.name
        claimed = None
        if claim is not None:
            claim_key, digest = claim
            claimed = idempotency.value(idempotency.CLAIMED, digest, task_id)
            ttl = idempotency.claim_seconds(self.settings.redis_timeout)
            if not await self.redis.set(claim_key, claimed, nx=True, ex=ttl):
                existing = await self.redis.get(claim_key)
                if existing is not None:
                    return Submitted(await self._replay(claim_key, digest, existing), name, duplicate=True)
                return await self._submit_in_steps(prepared, pending, claim)  # it expired meanwhile
        try:
            # PENDING is recorded before the message is pushed, so no worker event can take seq 1.
            record_pending = events.publish_command(self.settings, task_id, "PENDING", pending)
            await self.events_batcher.execute(record_pending)
            if self.broker_is_redis and prepared.route_kind == "direct" and self.writes_json:
                queue_key, message = redis_envelope(prepared, self.delivery_mode, self.transport, new_id())
                await self.broker_batcher.execute(("LPUSH", queue_key, message))
            else:
                await anyio.to_thread.run_sync(_publish_with_kombu, self.app, prepared)
        except BaseException:
            if claim is not None and claimed is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self.redis.eval(RELEASE_SCRIPT, 1, claim[0], claimed)
            raise
        if claim is not None:
            enqueued = idempotency.value(idempotency.ENQUEUED, claim[1], task_id)
            await self.redis.set(claim[0], enqueued, xx=True, ex=self.settings.idempotency_ttl)
        return Submitted(task_id, name, duplicate=False)

    async def _replay(self, claim_key: str, digest: str, existing: bytes | str) -> str:
        """The task id a repeated request gets: that of its first submit, once that one is enqueued (a
        claim still under way is waited for, at most its expiry); 409 when the key was another request's."""
        recorded = idempotency.Recorded.parse(existing)
        deadline = asyncio.get_running_loop().time() + idempotency.claim_seconds(self.settings.redis_timeout)
        while recorded.phase == idempotency.CLAIMED:
            recorded.task_for(digest)  # 409 at once for another request
            if asyncio.get_running_loop().time() > deadline:
                raise ServiceUnavailable("the first request with this Idempotency-Key is still under way")
            await asyncio.sleep(REPLAY_POLL)
            raw = await self.redis.get(claim_key)
            if raw is None:
                raise ServiceUnavailable(
                    "the first request with this Idempotency-Key failed: send it again to enqueue it"
                )
            recorded = idempotency.Recorded.parse(raw)
        return recorded.task_for(digest)

    async def submit_workflow(self, plan: Plan) -> None:
        """Record a planned workflow (PENDING for it and every step), then send Celery's canvas.

        The canvas is sent by Celery itself in a worker thread (chains embed later steps in the
        first message; chords set up the backend's counter), never on the event loop.
        """
        await self._record_then_send(plan.commands, plan.canvas)

    async def submit_signature(self, signature: Any) -> str:
        """Record PENDING for a signature with options of Celery's own (links, headers, a chosen id…),
        then have Celery send it, in a worker thread; its task id. The caller's signature is not changed."""
        frozen = signature.clone()
        task_id = str(frozen.freeze().id)
        body = events.encode_body(task_id, str(signature.task), "PENDING")
        pending = events.publish_command(self.settings, task_id, "PENDING", body, only_if=events.ONLY_IF_NEW)
        await self._record_then_send([pending], frozen)
        return task_id

    async def _record_then_send(self, commands: list[tuple[Any, ...]], canvas: Any) -> None:
        """Run ``commands`` (the PENDING events) on the events Redis, then ``canvas.apply_async()`` in a
        worker thread, whose sends record no PENDING of their own; 503 when Redis or the broker fails."""
        try:
            await self.events_batcher.execute(*commands)
            with pending_recorded():
                await anyio.to_thread.run_sync(canvas.apply_async)
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(f"could not reach Redis or the broker: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """Close the broker connection if it is not the shared events client."""
        if self.broker_redis is not None and self.broker_redis is not self.redis:
            await self.broker_redis.aclose()
