"""``svc.instrument(app)``: svc's events for every task of one Celery app, in every process of it.

What it does to the app, and nothing more (none of it decides how tasks run: serialisers, acks, routes,
queues and the result backend stay the app's own):

- svc's signal handlers (svc.worker.publisher) record each task's events, for this app's tasks only;
- its AMQP class records PENDING when a task is sent (svc.worker.sender);
- its workers get two consumer steps, so that no message on the queue can stop them and no message a
  lost connection held waits for the visibility timeout (svc.worker.steps);
- with a Redis broker, ``broker_transport`` is svc's subclass of kombu's Redis transport (messages that
  cannot be decoded are parked on ``{ns}:deadletter`` instead of crashing the worker) and the transport
  option ``svc_namespace`` names the namespace; both are set when the app is configured, so they apply
  after the app's own ``config_from_object``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from svc.settings import Settings
from svc.worker import publisher, sender, steps
from svc.worker.state import Instrumentation, attach, instrumentation_of


def instrument(app: Celery, settings: Settings | None = None) -> Celery:
    """Record svc's events for ``app``'s tasks in this process and in its workers; returns ``app``.

    ``settings`` default to the ``SVC_*`` environment. Calling it again does nothing (the first
    settings stay). No I/O: the events Redis is found from the app's configuration at first use
    (``SVC_REDIS_URL``, else the app's Redis result backend, else its Redis broker).
    """
    if not isinstance(app, Celery):
        raise TypeError(f"svc.instrument takes a Celery app, got {app!r}")
    state, made = attach(app, settings if settings is not None else Settings())
    if not made:
        return app
    publisher.connect()
    sender.install(app, state)
    app.steps["consumer"].add(steps.RejectUnrunnable)
    app.steps["consumer"].add(steps.RestoreUnacked)
    if app.configured:
        _configure(app, state)
    else:

        def on_configured(sender: Any = None, source: Any = None, **_: Any) -> None:
            _configure(app, state)

        app.on_after_configure.connect(on_configured, weak=False)
    return app


def _configure(app: Celery, state: Instrumentation) -> None:
    steps.configure_transport(app, state.namespace)


__all__ = ["Instrumentation", "instrument", "instrumentation_of"]
