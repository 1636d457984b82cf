"""Errors as RFC 9457 problem details: the one mapping from exceptions to responses, for the FastAPI
routes (their exception handlers), the fast lanes (``problem_for``) and bodies parsed by hand
(``parse_body``)."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from svc.errors import BadRequest, InvalidArguments, RateLimited, ServiceUnavailable, SvcError

log = logging.getLogger("svc.api")
Body = TypeVar("Body", bound=BaseModel)
PROBLEM = "application/problem+json"


class Problem(BaseModel):
    """An error (RFC 9457 problem details); some carry more members, e.g. ``errors`` or ``retry_after``."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries declaring problem-details bodies for these statuses."""
    content = {PROBLEM: {"schema": Problem.model_json_schema()}}
    return {status: {"description": HTTPStatus(status).phrase, "content": content} for status in statuses}


def problem(error: SvcError, headers: dict[str, str] | None = None) -> JSONResponse:
    """A problem-details response for ``error`` (with Retry-After when rate-limited)."""
    if isinstance(error, RateLimited):
        headers = {**(headers or {}), "Retry-After": str(error.retry_after)}
    return JSONResponse(error.problem(), status_code=error.status, media_type=PROBLEM, headers=headers)


async def _svc_error(_: Request, exc: SvcError) -> JSONResponse:
    return problem(exc)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(error.get("type") in ("json_invalid", "json_type") for error in errors):
        return problem(BadRequest("the body is not valid JSON"))
    cleaned = [{key: error[key] for key in ("loc", "msg", "type") if key in error} for error in errors]
    return problem(InvalidArguments("the request does not match its schema", errors=cleaned))


def parse_body(model: type[Body], raw: bytes) -> Body:
    """Validate a JSON body (empty means all defaults): 400 when it is not JSON, 422 when it does not
    fit ``model``, with the errors in FastAPI's shape."""
    if not raw.strip():
        return model()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        if any(error["type"] == "json_invalid" for error in errors):
            raise BadRequest("the body is not valid JSON") from None
        cleaned = [
            {"loc": ["body", *error["loc"]], "msg": error["msg"], "type": error["type"]} for error in errors
        ]
        raise InvalidArguments("the request does not match its schema", errors=cleaned) from None


async def _too_deep(_: Request, exc: RecursionError) -> JSONResponse:
    return problem(BadRequest("the body nests too deeply"))


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    return problem_for(exc)


def problem_for(exc: Exception) -> JSONResponse:
    """The problem response for any exception: its own for an SvcError, 503 for Redis, and for anything
    unforeseen a 500 with no detail (no traceback, no paths), the exception logged here in full."""
    if isinstance(exc, SvcError):
        return problem(exc)
    if isinstance(exc, RedisError):
        return problem(ServiceUnavailable(f"Redis is unreachable: {type(exc).__name__}"))
    log.exception("event=unhandled_error", exc_info=exc)
    return problem(SvcError("an unexpected error occurred; it has been logged"))


async def _redis_error(_: Request, exc: RedisError) -> JSONResponse:
    return problem_for(exc)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (405, …) in the same problem shape."""
    error = SvcError(str(exc.detail))
    error.status, error.title = exc.status_code, HTTPStatus(exc.status_code).phrase
    return problem(error, headers=dict(exc.headers) if exc.headers else None)


EXCEPTION_HANDLERS: list[tuple[type[Exception], Any]] = [
    (SvcError, _svc_error),
    (RequestValidationError, _validation_error),
    (RecursionError, _too_deep),
    (RedisError, _redis_error),
    (StarletteHTTPException, _http_error),
    (Exception, _unexpected),
]
