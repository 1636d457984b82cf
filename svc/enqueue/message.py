"""Celery's protocol-2 task message, built with no I/O: headers and body from ``app.amqp.as_task_v2``,
routing from ``app.amqp.router``, exactly as ``apply_async`` builds them; and the envelope kombu's
Redis transport would ``LPUSH``.

Two things ``apply_async`` recomputes on every call are computed once here, because together they
were half of a submit's CPU time: the route of a task name (when no ``task_routes`` can make it depend
on the arguments) and the arguments' repr (plain ``repr`` where it is exactly what Celery's
``saferepr`` would give, which ``tests/test_wire.py`` checks).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from celery import Celery
from celery.utils.nodenames import anon_nodename
from celery.utils.saferepr import saferepr
from pydantic import BaseModel, ConfigDict, Field

from svc.errors import InvalidArguments

PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEP = "\x06\x16"
PLAIN_SCALARS = (int, float, bool, type(None))


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


Routes = dict[tuple[str, str | None, int | None], dict[str, Any]]  # one app's route cache (route_of)


def prepare(
    app: Celery,
    task_id: str,
    name: str,
    kwargs: dict[str, Any],
    options: SubmitOptions,
    routes: Routes,
    args: tuple[Any, ...] = (),
) -> Prepared:
    """Build the protocol-2 message ``apply_async`` would build, with no I/O (``routes``: the app's
    route cache, kept by its submitter)."""
    route_options: dict[str, Any] = {}
    if options.priority is not None:
        route_options["priority"] = options.priority
    if options.queue:
        route_options["queue"] = options.queue
    route = route_of(app, routes, name, route_options, args, kwargs)
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
        args,
        kwargs,
        countdown=options.countdown,
        eta=options.eta,
        expires=expires,
        reply_to=app.thread_oid,
        create_sent_event=False,
        argsrepr=str(saferepr(args, app.amqp.argsrepr_maxsize)) if args else "()",
        kwargsrepr=kwargs_repr(app, kwargs),
        origin=origin(),
    )
    queue = route["queue"]
    exchange_type = getattr(queue.exchange, "type", "direct")
    direct = exchange_type == "direct" and not route.get("exchange")
    return Prepared(
        task_id, name, headers, properties, body, route, "direct" if direct else "exchange", queue.name
    )


_origin: tuple[int, str] | None = None  # this process's (pid, origin header): the same for every app


def route_of(
    app: Celery,
    routes: Routes,
    name: str,
    options: dict[str, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    """The router's answer for this task and options (a fresh dict the caller may change). Cached in
    ``routes`` per name, queue and priority when the app has no ``task_routes`` (which may look at the
    arguments)."""
    if app.conf.task_routes:
        return dict(app.amqp.router.route(options, name, args, kwargs, app.tasks.get(name)))
    key = (name, options.get("queue"), options.get("priority"))
    route = routes.get(key)
    if route is None:
        route = routes[key] = app.amqp.router.route(dict(options), name, (), {}, app.tasks.get(name))
    return dict(route)


def kwargs_repr(app: Celery, kwargs: dict[str, Any]) -> str:
    """Celery's ``kwargsrepr`` header: plain ``repr`` when it is exactly what ``saferepr`` gives (flat
    arguments of numbers, booleans, None and printable strings without quotes or backslashes, short
    enough not to be cut), else ``saferepr`` itself."""
    limit = app.amqp.kwargsrepr_maxsize
    if all(_plain(key) and _plain(value) for key, value in kwargs.items()):
        text = repr(kwargs)
        if len(text) <= limit:
            return text
    return str(saferepr(kwargs, limit, maxlevels=app.conf.task_repr_maxlevels))


def _plain(value: Any) -> bool:
    if isinstance(value, str):
        return value.isprintable() and "'" not in value and "\\" not in value
    return isinstance(value, PLAIN_SCALARS)


def origin() -> str:
    """Celery's ``origin`` header for this process (``gen<pid>@<host>``), computed once per process."""
    global _origin
    pid = os.getpid()
    if _origin is None or _origin[0] != pid:
        _origin = (pid, anon_nodename())
    return _origin[1]


def new_id() -> str:
    """A random (version 4) UUID in its text form, as ``str(uuid.uuid4())`` gives, at a fifth of its
    cost (``uuid.UUID.__init__`` validates what we build correct; two are made per submit)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def redis_envelope(
    prepared: Prepared, delivery_mode: int, transport: dict[str, Any], delivery_tag: str | None = None
) -> tuple[str, bytes]:
    """The queue key and JSON that kombu's Redis transport would ``LPUSH`` for this message (with a
    fresh delivery tag unless one is given)."""
    priority = int(prepared.route.get("priority") or 0)
    properties: dict[str, Any] = {
        **prepared.properties,
        "delivery_mode": delivery_mode,
        "delivery_info": {"exchange": "", "routing_key": prepared.queue_name},
        "priority": priority,
        "body_encoding": "base64",
        "delivery_tag": delivery_tag or new_id(),
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
    return transport.get("global_keyprefix", "") + key, orjson.dumps(message)
