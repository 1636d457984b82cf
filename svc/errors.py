"""svc's exception tree; each maps to one RFC 9457 problem-details response.

SvcError
├── BadRequest            400  malformed JSON or frame
├── Unauthorized          401  missing or unknown API key
├── Forbidden             403  missing, expired, tampered or foreign task token
├── NotFound              404
│   ├── UnknownTask       404  no exposed task of that name
│   └── UnknownTaskId     404  no history and no stored result for that id
├── PayloadTooLarge       413
├── InvalidArguments      422  arguments fail the task's schema, or bad options
├── RateLimited           429  too many submits from one client (carries Retry-After)
└── ServiceUnavailable    503  Redis or the broker cannot be reached in time

ConfigurationError (not a response: svc refuses to start, saying what to change)
"""

from __future__ import annotations

from typing import Any


class SvcError(Exception):
    """Base of every error svc reports to a client."""

    status: int = 500
    title: str = "Internal Server Error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        """The problem-details body for this error."""
        return {
            "type": f"https://svc.dev/problems/{self.title.lower().replace(' ', '-')}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }


class BadRequest(SvcError):
    """The request could not be parsed."""

    status, title = 400, "Bad Request"


class Unauthorized(SvcError):
    """No API key, or one that is not configured."""

    status, title = 401, "Unauthorized"


class Forbidden(SvcError):
    """A task token that does not open this task."""

    status, title = 403, "Forbidden"


class NotFound(SvcError):
    """Nothing at that name or id."""

    status, title = 404, "Not Found"


class UnknownTask(NotFound):
    """No task of that name is exposed over HTTP."""


class UnknownTaskId(NotFound):
    """No one ever submitted that id, and nothing is stored for it."""


class Conflict(SvcError):
    """The request does not fit the resource's current state (e.g. retrying a task that still runs)."""

    status, title = 409, "Conflict"


class PayloadTooLarge(SvcError):
    """The request body is over the limit."""

    status, title = 413, "Payload Too Large"


class InvalidArguments(SvcError):
    """Arguments or options that fail validation before anything is enqueued."""

    status, title = 422, "Unprocessable Content"


class RateLimited(SvcError):
    """Too many submits from one client; ``retry_after`` seconds until the next is allowed."""

    status, title = 429, "Too Many Requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


class TooManyConnections(SvcError):
    """A client holds as many open event streams and sockets as ``SVC_WS_MAX_CONNECTIONS`` allows."""

    status, title = 429, "Too Many Requests"


class ServiceUnavailable(SvcError):
    """Redis or the broker did not answer in time."""

    status, title = 503, "Service Unavailable"


class ConfigurationError(Exception):
    """svc cannot start as configured (a missing Redis, a task exposed twice, a bad ``-A``): raised at
    startup with what to change, never answered to a client."""
