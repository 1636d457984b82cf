"""What svc adds to its workers' consumer so that no message stops them and none is forgotten.

:func:`configure_transport` sets, on the app, for a ``redis://``/``rediss://`` broker (for kombu's
``sentinel://`` one, ``svc.worker.transport:SentinelTransport``, the same on a Sentinel-found master):

- ``broker_transport = "svc.worker.transport:Transport"``: kombu's Redis transport that parks entries it
  cannot make a message of, instead of dying on them (an explicit transport wins over the URL scheme in
  kombu's ``Connection``; for ``rediss://`` without ``broker_use_ssl`` it sets kombu's own default for
  that scheme, ``{"ssl_cert_reqs": CERT_NONE}``, which kombu only applies when the scheme names the
  transport);
- ``broker_transport_options["svc_namespace"]``: whose dead-letter list parked messages go to;

and ``svc.instrument`` adds, for any broker, two consumer bootsteps:

- :class:`RejectUnrunnable`: every message the consumer receives either runs or ends as FAILURE. Task
  messages Celery would accept but could not run (``kwargs`` not a mapping, a body that is not
  ``[args, kwargs, embed]``, headers without an ``id``: Celery fails them in the pool with nothing
  stored, or dies on them in the consumer) go to Celery's own ``on_invalid_task``, so they are
  rejected and fire ``task_rejected``; ``on_decode_error`` (which fires no signal) is wrapped; and the
  transport's parked messages are reported. Each ends in ``svc.worker.publisher.fail_message`` /
  ``fail_unrunnable``: parked on the dead-letter list, FAILURE stored, then announced.
- :class:`RestoreUnacked`: when the broker connection is lost, kombu tries to push the messages this
  worker held unacknowledged back to their queues; with Redis down that fails (silently: Celery closes
  the dead connection under ``ignore_errors``) and they stay in kombu's ``unacked`` hash until the
  visibility timeout (an hour by default), although Celery forgot the reserved ones. This step keeps
  their delivery tags at the loss and, once the new connection is up, moves back with kombu's own
  ``QoS.restore_by_tag`` those that are still unacked and not executing here. It is a bootstep, not
  part of the transport, because only the consumer knows which requests are executing, and a step's
  ``stop`` runs before each restart and its ``start`` after each reconnect, before the event loop.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from celery import Celery, bootsteps
from celery.exceptions import InvalidTaskError
from celery.worker import state as worker_state
from kombu.transport import redis as kombu_redis

from svc.wiring import broker_url_of
from svc.worker import publisher
from svc.worker.transport import Parked, task_identity
from svc.worker.transport import SentinelTransport as SvcSentinelTransport
from svc.worker.transport import Transport as SvcTransport

log = logging.getLogger("svc.worker.steps")

TRANSPORT = "svc.worker.transport:Transport"
SENTINEL_TRANSPORT = "svc.worker.transport:SentinelTransport"


def configure_transport(app: Celery, namespace: str) -> None:
    """Give ``app``'s workers svc's Redis transport (for a Redis broker, whatever its URL says) and the
    namespace of its dead-letter list; for another broker, only the (ignored) namespace option."""
    broker_url = broker_url_of(app)
    if broker_url.startswith(("redis://", "rediss://")):
        app.conf.broker_transport = TRANSPORT
        if broker_url.startswith("rediss://") and not app.conf.broker_use_ssl:
            app.conf.broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_NONE}
    elif broker_url.startswith("sentinel://"):
        app.conf.broker_transport = SENTINEL_TRANSPORT
    app.conf.broker_transport_options = {
        **(app.conf.broker_transport_options or {}),
        "svc_namespace": namespace,
    }


def malformed(message: Any) -> InvalidTaskError | None:
    """Why a protocol-2 task message cannot run although Celery would hand it to the pool, or None.

    Reads the body the way Celery's request does (the decoded body is cached on the message, so Celery
    does not decode it again); a body that does not decode is left to Celery's own error paths.
    """
    headers = message.headers
    if not isinstance(headers, dict) or "task" not in headers:
        return None
    task_id = headers.get("id")
    if not isinstance(task_id, str) or not task_id:
        return InvalidTaskError("Task id is missing or not a string")
    try:
        payload = message.decode()
    except Exception:
        return None
    if isinstance(payload, dict):
        return None  # protocol 1 or hybrid: Celery's own checks apply
    if not isinstance(payload, list | tuple) or len(payload) != 3:
        return InvalidTaskError("Task message body is not [args, kwargs, embed]")
    _, kwargs, embed = payload
    if not isinstance(kwargs, Mapping):
        return InvalidTaskError("Task keyword arguments is not a mapping")
    if embed is not None and not isinstance(embed, Mapping):
        return InvalidTaskError("Task message embed is not a mapping")
    return None


class RejectUnrunnable(bootsteps.StartStopStep):  # type: ignore[misc]
    """Route every message that cannot run to a FAILURE (and the dead-letter list), never to a crash."""

    label = "svc reject unrunnable"
    requires = ("celery.worker.consumer.connection:Connection",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        # Instance attributes, set before the Tasks step binds them to the task consumer.
        create_task_handler = c.create_task_handler
        on_decode_error = c.on_decode_error

        def guarded_task_handler(*args: Any, **kw: Any) -> Callable[[Any], Any]:
            return _guard(c, create_task_handler(*args, **kw))

        def recorded_decode_error(message: Any, exc: BaseException) -> None:
            on_decode_error(message, exc)  # Celery logs it and acks it
            publisher.fail_message(c.app, message, exc)

        c.create_task_handler = guarded_task_handler
        c.on_decode_error = recorded_decode_error

    def start(self, c: Any) -> None:
        transport = c.connection.transport
        if isinstance(transport, SvcTransport | SvcSentinelTransport):
            transport.on_parked = lambda parked: _fail_parked(c.app, parked)


def _fail_parked(app: Celery, parked: Parked) -> None:
    if parked.task_id is not None:
        error = InvalidTaskError(f"undecodable message ({parked.reason}): {parked.detail}")
        publisher.fail_unrunnable(app, parked.task_id, parked.task, error)


def _guard(c: Any, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Celery's task message handler, with malformed messages sent to ``on_invalid_task`` instead of
    the pool (or out of the event loop)."""
    # kombu counts KeyError as a Redis connection error; raised from here it is a message's fault.
    connection_errors = tuple(error for error in c.connection_errors if error is not KeyError)

    def reject(message: Any, exc: InvalidTaskError) -> None:
        try:
            c.on_invalid_task(None, message, exc)
        except connection_errors:
            raise
        except Exception:
            log.exception("event=reject_failed task_id=%s", task_identity(message.headers)[0])

    def on_task_received(message: Any) -> Any:
        problem = malformed(message)
        if problem is not None:
            return reject(message, problem)
        try:
            return handler(message)
        except connection_errors:
            raise
        except Exception as exc:
            return reject(message, InvalidTaskError(f"Malformed task message: {exc!r}"))

    return on_task_received


class RestoreUnacked(bootsteps.StartStopStep):  # type: ignore[misc]
    """After a reconnect, requeue at once the messages the lost connection held that no one runs."""

    label = "svc restore unacked"
    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.channel: Any = None  # the task consumer's channel on the current connection
        self.pending: dict[str, None] = {}  # delivery tags to restore, in delivery order
        self.running: set[str] = set()  # delivery tags that were executing here at the loss

    def start(self, c: Any) -> None:
        channel = c.task_consumer.channel
        self.channel = channel if isinstance(channel, kombu_redis.Channel) else None
        if not self.pending or self.channel is None:
            self.running.clear()
            return
        running = self.running | _executing()
        tags = [tag for tag in self.pending if tag not in running]
        # kombu counts KeyError as a connection error; here it would only be a bad unacked entry.
        connection_errors = tuple(error for error in c.connection_errors if error is not KeyError)
        try:
            count = _restore(self.channel, tags)
        except connection_errors:
            raise  # the tags stay pending; Celery reconnects and this runs again
        except Exception:
            log.exception("event=unacked_restore_failed count=%d worker=%s", len(tags), c.hostname)
        else:
            log.info(
                "event=unacked_restored count=%d skipped_running=%d worker=%s",
                count,
                len(self.running) + len(self.pending) - len(tags),
                c.hostname,
            )
        self.pending.clear()
        self.running.clear()

    def stop(self, c: Any) -> None:
        channel, self.channel = self.channel, None
        qos = getattr(channel, "_qos", None)
        if qos is None:
            return
        # What kombu's QoS still holds after its own restore: everything when that restore failed
        # (it clears the map only on success), minus what was acked but not yet flushed.
        unacked = [tag for tag in qos._delivered if tag not in qos._dirty]
        executing = _executing()
        for tag in unacked:
            if tag in executing:
                self.running.add(tag)
            else:
                self.pending[tag] = None


def _executing() -> set[str]:
    """Delivery tags of the requests this worker is executing now (they ack for themselves)."""
    tags = set()
    for request in tuple(worker_state.active_requests):
        message = getattr(request, "message", None)
        tag = getattr(message, "delivery_tag", None)
        if tag is not None:
            tags.add(tag)
    return tags


def _restore(channel: Any, tags: list[str]) -> int:
    """Move back to their queues those of ``tags`` still in kombu's unacked hash; how many were."""
    if not tags:
        return 0
    qos = channel.qos
    with channel.conn_or_acquire() as client:
        with client.pipeline(transaction=False) as pipe:
            for tag in tags:
                pipe.hget(qos.unacked_key, tag)
            held = pipe.execute()
        present = [tag for tag, raw in zip(tags, held, strict=True) if raw is not None]
        for tag in present:
            qos.restore_by_tag(tag, client=client)
    return len(present)
