"""Where one Celery app's svc data goes: the events Redis, and the broker and backend the app itself uses.

svc never moves a team's tasks to other servers: the broker and the result backend are the app's own
(``app.conf``). Its events go to ``SVC_REDIS_URL``; when that is unset, to the app's result backend if that
is Redis, else to its broker if that is Redis (SPEC "Using svc in a project that already has Celery").
Read by the worker side and the API side alike, with no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from svc import redis_clients
from svc.errors import ConfigurationError
from svc.settings import Settings

CELERY_DEFAULT_BROKER = "amqp://guest:guest@localhost:5672//"


@dataclass(frozen=True)
class Wiring:
    """The URLs and the namespace one app's svc processes share.

    ``broker_redis_url`` and ``backend_redis_url`` are the URLs svc's own Redis clients reach the app's
    broker and backend with (``svc.redis_clients.url_of``: a kombu ``sentinel://`` URL becomes a
    ``redis+sentinel://`` one), or None when that one is not a Redis.
    """

    events_url: str
    broker_url: str
    backend_url: str | None
    namespace: str
    broker_redis_url: str | None = None
    backend_redis_url: str | None = None

    @property
    def broker_is_redis(self) -> bool:
        """True when the app's broker is a Redis svc can write to directly."""
        return self.broker_redis_url is not None

    @property
    def broker_is_events_redis(self) -> bool:
        """True when the broker is the events Redis itself (a submit is then one atomic script)."""
        return self.broker_redis_url == self.events_url

    @property
    def backend_is_redis(self) -> bool:
        """True when the app's result backend is a Redis svc can read directly."""
        return self.backend_redis_url is not None


def broker_url_of(app: Celery) -> str:
    """The URL ``app`` publishes task messages to (Celery's default when it names none)."""
    conf = app.conf
    url = conf.broker_write_url or conf.broker_url
    return str(url) if url else CELERY_DEFAULT_BROKER


def backend_url_of(app: Celery) -> str | None:
    """The URL of ``app``'s result backend, when it is given as one (not a class or ``disabled``)."""
    backend = app.conf.result_backend
    return backend if isinstance(backend, str) and "://" in backend else None


def wiring_for(app: Celery, settings: Settings) -> Wiring:
    """The events Redis, broker and backend of ``app``; ConfigurationError when svc has no Redis to use."""
    broker = broker_url_of(app)
    backend = backend_url_of(app)
    broker_redis = redis_clients.url_of(broker, app.conf.broker_transport_options)
    backend_redis = redis_clients.url_of(backend, app.conf.result_backend_transport_options)
    events_url = settings.redis_url or backend_redis or broker_redis
    if events_url is None:
        raise ConfigurationError(
            f"svc needs a Redis for its events: the Celery app {app.main!r} uses neither a Redis result "
            f"backend nor a Redis broker ({broker.split('://')[0]}://), so set SVC_REDIS_URL"
        )
    return Wiring(events_url, broker, backend, settings.namespace, broker_redis, backend_redis)
