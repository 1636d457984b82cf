"""What ``svc.instrument`` attaches to one Celery app: its settings, its events Redis and its publish step.

The state lives on the app object itself (never in a module global), so two apps in one process, each
instrumented with settings of its own, publish to their own Redis and namespace; an app that was never
instrumented has no state, and svc's signal handlers leave its tasks alone.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from celery import Celery
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from svc import redis_clients
from svc.redis_clients import SyncClient
from svc.settings import Settings
from svc.wire import events
from svc.wiring import Wiring, wiring_for
from svc.worker import workflow_steps

log = logging.getLogger("svc.worker.publisher")
ATTRIBUTE = "svc_instrumentation"  # the attribute of the Celery app that holds its Instrumentation
QUICK_TIMEOUT = 1.0  # seconds of the one try a sender's PENDING (or a shutdown's deregistration) gets


@dataclass(frozen=True)
class Published:
    """What the publish script said: the event's seq (0: not published) and what it knows of the task."""

    seq: int
    revoked: bool = False
    workflow_id: str | None = None
    step: int | None = None


class StreamFlush(Protocol):
    """What an event needs of svc.worker.streams' writer: the task's chunks written before it."""

    def before_event(self, task_id: str, state: str) -> None: ...


class Instrumentation:
    """svc's worker-side state for one Celery app in this process."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.hostname: str | None = None  # this worker's node name, once it is set up
        self.started: dict[str, float] = {}  # task id -> monotonic time of its STARTED, while it runs here
        self.announced_retry: tuple[str, int] | None = None  # (task id, retries) whose RETRY went out
        self.heartbeat_stop = threading.Event()
        self.stream_writer: StreamFlush | None = None  # svc.worker.streams' writer, once a task streams
        self._wiring: Wiring | None = None
        self._clients: dict[bool, tuple[int, SyncClient, Any]] = {}  # quick? -> (pid, client, script)

    @property
    def wiring(self) -> Wiring:
        """The app's events Redis, broker and backend, read from its configuration at first use (so a
        ``config_from_object`` after ``svc.instrument`` counts)."""
        if self._wiring is None:
            self._wiring = wiring_for(self.app, self.settings)
        return self._wiring

    @property
    def namespace(self) -> str:
        """The prefix of svc's keys and channels for this app."""
        return self.settings.namespace

    def client(self, quick: bool = False) -> tuple[SyncClient, Any]:
        """This process's client of the events Redis and its registered publish script (made anew after
        a fork: a connection is never shared with a parent process). The worker's client retries for
        about a minute while Redis restarts; the ``quick`` one makes one try of at most about
        QUICK_TIMEOUT, for what must not wait on svc's Redis (a team's ``.delay()``, a shutdown)."""
        made = self._clients.get(quick)
        if made is None or made[0] != os.getpid():
            if quick:
                timeout, retry, retry_on = QUICK_TIMEOUT, Retry(NoBackoff(), 0), []
            else:
                timeout, retry = 5.0, Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=30)
                retry_on = [RedisConnectionError, RedisTimeoutError]
            client = redis_clients.sync_client(
                self.wiring.events_url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=retry,
                retry_on_error=retry_on,
            )
            made = self._clients[quick] = (
                os.getpid(),
                client,
                client.register_script(events.publish_script(self.settings.layout)),
            )
        return made[1], made[2]

    def close(self) -> None:
        """Close this process's clients of the events Redis (they are made again when next needed)."""
        for _, client, _ in self._clients.values():
            client.close()
        self._clients.clear()

    def publish_to(
        self,
        stream_id: str,
        state: str,
        body: bytes,
        *,
        terminal: bool | None = None,
        only_if: str = "",
        quick: bool = False,
    ) -> Published:
        """Run the publish script for one stream (a task, or a workflow); never raises on Redis errors.
        ``quick``: one short try, for a sender's PENDING (see ``client``)."""
        settings = self.settings
        keys, args = events.publish_args(
            settings.layout,
            stream_id,
            state,
            body,
            settings.history_max,
            settings.history_ttl,
            terminal=terminal,
            only_if=only_if,
        )
        try:
            client, script = self.client(quick)  # a cluster's client is made, and may fail, here
            seq, revoked, workflow_id, step = script(keys=keys, args=args, client=client)
        except redis.RedisError:
            log.exception("event=publish_failed task_id=%s state=%s", stream_id, state)
            return Published(0)
        return Published(
            int(seq),
            revoked is not None,
            workflow_id.decode() if workflow_id else None,
            int(step) if step else None,
        )

    def publish(self, task_id: str, name: str | None, state: str, **fields: Any) -> Published:
        """Record and announce one event of a task atomically (and its copy in its workflow's stream)."""
        writer = self.stream_writer
        if writer is not None:
            writer.before_event(task_id, state)
        fields.setdefault("worker", self.hostname)
        body = events.encode_body(task_id, name, state, **fields)
        published = self.publish_to(task_id, state, body)
        log.debug("event=published task_id=%s state=%s seq=%d", task_id, state, published.seq)
        if published.seq and published.workflow_id is not None and published.step is not None:
            client, _ = self.client()
            workflow_steps.record_step_event(
                self.publish_to,
                client,
                self.settings.layout,
                workflow_steps.StepEvent(
                    published.workflow_id, published.step, task_id, name, state, published.seq, fields
                ),
            )
        return published


def instrumentation_of(app: Any) -> Instrumentation | None:
    """The state ``svc.instrument`` attached to ``app``, or None for an app svc does not instrument."""
    state = getattr(app, "__dict__", {}).get(ATTRIBUTE)
    return state if isinstance(state, Instrumentation) else None


def attach(app: Celery, settings: Settings) -> tuple[Instrumentation, bool]:
    """The app's Instrumentation, made now if it has none; and whether it was made now."""
    existing = instrumentation_of(app)
    if existing is not None:
        return existing, False
    state = Instrumentation(app, settings)
    setattr(app, ATTRIBUTE, state)
    return state, True
