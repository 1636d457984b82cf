"""svc's Python client: submit tasks to a remote svc and watch them, from services, CLIs and tests.

``AsyncClient`` (asyncio) and ``Client``, its blocking twin, with the JS SDK's guarantees: one
multiplexed WebSocket per client, opened lazily, resumed with ``since`` after a reconnect so that every
event and stream chunk arrives once, in order. See docs/python-client.md.
"""

from svc.client.asyncclient import AsyncClient
from svc.client.blocking import Client, Task
from svc.client.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    HttpError,
    NetworkError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    SubscriptionRefused,
    SvcClientError,
    TaskError,
    TaskFailed,
    TaskRevoked,
    Unauthorized,
    ValidationFailed,
)
from svc.client.tasks import AsyncTask

__all__ = [
    "AsyncClient",
    "AsyncTask",
    "BadRequest",
    "Client",
    "Conflict",
    "Forbidden",
    "HttpError",
    "NetworkError",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ServiceUnavailable",
    "SubscriptionRefused",
    "SvcClientError",
    "Task",
    "TaskError",
    "TaskFailed",
    "TaskRevoked",
    "Unauthorized",
    "ValidationFailed",
]
