"""What the Python client raises, mirroring the JS SDK's errors (clients/js/src/errors.js).

- :class:`HttpError` and its subclasses: an HTTP call answered with an error, carrying the problem
  details (RFC 9457) the API sends: ``status``, ``title``, ``detail``, ``type``, ``problem``;
- :class:`NetworkError`: the API could not be reached;
- :class:`TaskFailed`, :class:`TaskRevoked`: a watched task ended that way (``result()`` raises them);
- :class:`SubscriptionRefused`: the server would not let this client watch the task (a bad token).
"""

from __future__ import annotations

from typing import Any


class SvcClientError(Exception):
    """Everything the client raises of its own."""


class HttpError(SvcClientError):
    """An HTTP call answered an error status (``problem`` holds the whole problem-details body)."""

    def __init__(self, status: int, problem: dict[str, Any], method: str, url: str) -> None:
        self.status = status
        self.problem = problem
        self.title = str(problem.get("title") or "")
        self.detail = str(problem.get("detail") or "")
        self.type = problem.get("type") if isinstance(problem.get("type"), str) else None
        self.method, self.url = method, url
        super().__init__(f"{method} {url} answered {status}: {self.detail or self.title}")


class BadRequest(HttpError):
    """400: the body is not JSON, or a parameter is malformed."""


class Unauthorized(HttpError):
    """401: an API key is needed (or the one given is not known)."""


class Forbidden(HttpError):
    """403: the task token does not open this task."""


class NotFound(HttpError):
    """404: no such exposed task name, or no task with that id."""


class Conflict(HttpError):
    """409: an ``Idempotency-Key`` reused for another request."""


class PayloadTooLarge(HttpError):
    """413: the request body is over the server's limit."""


class ValidationFailed(HttpError):
    """422: the arguments do not fit the task's schema (``problem`` says where)."""


class RateLimited(HttpError):
    """429: too many submits (or connections); ``retry_after`` seconds until the next is allowed."""

    def __init__(self, status: int, problem: dict[str, Any], method: str, url: str) -> None:
        super().__init__(status, problem, method, url)
        retry_after = problem.get("retry_after")
        self.retry_after = float(retry_after) if isinstance(retry_after, int | float) else None


class ServiceUnavailable(HttpError):
    """503: the broker or Redis is unreachable behind the API."""


BY_STATUS: dict[int, type[HttpError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
    503: ServiceUnavailable,
}


def http_error(status: int, problem: dict[str, Any], method: str, url: str) -> HttpError:
    """The typed error for an error answer."""
    return BY_STATUS.get(status, HttpError)(status, problem, method, url)


class NetworkError(SvcClientError):
    """The API could not be reached (refused, reset, timed out)."""


class TaskError(SvcClientError):
    """A watched task did not give a result; ``event`` is its terminal event, when there is one."""

    def __init__(self, message: str, task_id: str, event: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.event = event


class TaskFailed(TaskError):
    """The task ended FAILURE: ``remote_type`` and ``remote_message`` are the worker's exception's (for a
    workflow, ``step`` and ``failed_task_id`` name the step that failed)."""

    def __init__(self, task_id: str, event: dict[str, Any]) -> None:
        error = event.get("error") or {}
        self.remote_type = str(error.get("type") or "Error")
        self.remote_message = str(error.get("message") or "")
        self.step: int | None = event.get("step")
        self.failed_task_id: str | None = event.get("failed_task_id")
        super().__init__(f"task {task_id} failed: {self.remote_type}: {self.remote_message}", task_id, event)


class TaskRevoked(TaskError):
    """The task ended REVOKED; ``reason`` is "revoked", "terminated" or "expired"."""

    def __init__(self, task_id: str, event: dict[str, Any]) -> None:
        self.reason = str((event.get("error") or {}).get("message") or "revoked")
        super().__init__(f"task {task_id} was revoked ({self.reason})", task_id, event)


class SubscriptionRefused(TaskError):
    """The server refused to watch the task (an ``{"op": "error"}`` frame); ``detail`` says why."""

    def __init__(self, task_id: str, detail: str) -> None:
        self.detail = detail
        super().__init__(f"cannot watch task {task_id}: {detail}", task_id)


def error_for_event(task_id: str, event: dict[str, Any]) -> TaskError | None:
    """The error a terminal event stands for (None for SUCCESS)."""
    if event.get("state") == "FAILURE":
        return TaskFailed(task_id, event)
    if event.get("state") == "REVOKED":
        return TaskRevoked(task_id, event)
    return None
