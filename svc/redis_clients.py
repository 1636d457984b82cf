"""Clients of svc's events Redis, made from its URL: one Redis, or the master of a Sentinel set.

``SVC_REDIS_URL`` (or the app's Redis URL it falls back on) takes what redis-py takes (``redis://``,
``rediss://``, ``unix://``) and, for a Redis that Sentinel fails over,

    redis+sentinel://[[user]:password@]host:port[,host:port…]/service_name[/db][?sentinel_password=…]

(``rediss+sentinel://`` for TLS to the master). The sentinels are asked for the current master on every
new connection, and a connection to a master that has since been demoted fails with ConnectionError
(redis-py's ``SentinelManagedConnection``): so whatever already reconnects after a Redis restart (the
bridge, the monitor, the batcher's next trip, the worker's retries) follows a failover the same way.
The password is the master's; the sentinels' own, if they have one, is ``sentinel_password``.

A Celery app's own broker or result backend on Sentinel is written as kombu and Celery write it
(``sentinel://h1:26379;sentinel://h2:26379/0`` with ``master_name`` in ``broker_transport_options`` or
``result_backend_transport_options``): :func:`url_of` turns that into the URL above, so svc reaches the
same master the app's workers do.

Used by the worker side and the API side alike; no I/O until a client is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

from svc.errors import ConfigurationError

SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
DIRECT_SCHEMES = ("redis://", "rediss://", "unix://")
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelTarget:
    """A ``redis+sentinel://`` URL, parsed."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int
    username: str | None
    password: str | None
    sentinel_password: str | None
    ssl: bool


def is_sentinel(url: str) -> bool:
    """True for a ``redis+sentinel://`` (or ``rediss+sentinel://``) URL."""
    return url.startswith(SENTINEL_SCHEMES)


def url_of(url: str | None, transport_options: Mapping[str, Any] | None = None) -> str | None:
    """The URL svc's clients reach a Celery broker or backend URL's Redis with, or None when it is not
    a Redis: ``redis://``/``rediss://``/``unix://`` and ``redis+sentinel://`` as they are; kombu's
    ``sentinel://…;sentinel://…`` as a ``redis+sentinel://`` URL of the ``master_name`` in
    ``transport_options`` (None without one: kombu itself refuses to connect then). The master's
    password is the one the first ``sentinel://`` part gives; the sentinels' own comes from
    ``sentinel_kwargs["password"]``, as kombu reads it."""
    if url is None:
        return None
    if url.startswith(DIRECT_SCHEMES) or is_sentinel(url):
        return url
    parts = [urlsplit(part.strip()) for part in url.split(";") if part.strip()]
    options = transport_options or {}
    master = options.get("master_name")
    if not parts or any(part.scheme != "sentinel" for part in parts) or not master:
        return None
    first = parts[0]
    hosts = ",".join(f"{part.hostname or '127.0.0.1'}:{part.port or DEFAULT_SENTINEL_PORT}" for part in parts)
    credentials = ""
    if first.password or first.username:
        credentials = f"{quote(first.username or '')}:{quote(first.password or '')}@"
    db = next((part.path.strip("/") for part in parts if part.path.strip("/").isdigit()), "0")
    query = ""
    sentinel_password = (options.get("sentinel_kwargs") or {}).get("password")
    if sentinel_password:
        query = "?" + urlencode({"sentinel_password": sentinel_password})
    return f"redis+sentinel://{credentials}{hosts}/{quote(str(master), safe='')}/{db}{query}"


def parse_sentinel(url: str) -> SentinelTarget:
    """The parts of a ``redis+sentinel://`` URL; ConfigurationError saying what is wrong with a bad one."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    sentinels = []
    for host in filter(None, hosts.split(",")):
        name, _, port = host.rpartition(":") if host.rsplit(":", 1)[-1].isdigit() else (host, "", "")
        sentinels.append((name.strip("[]") or "127.0.0.1", int(port) if port else DEFAULT_SENTINEL_PORT))
    path = [unquote(part) for part in parts.path.split("/") if part]
    if not sentinels or not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigurationError(
            f"a Sentinel URL is redis+sentinel://host:port[,host:port…]/service_name[/db], not {url!r}"
        )
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    query = parse_qs(parts.query)
    return SentinelTarget(
        sentinels=tuple(sentinels),
        service_name=path[0],
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_password=query.get("sentinel_password", [None])[0],
        ssl=parts.scheme.startswith("rediss"),
    )


def _master_options(target: SentinelTarget, options: dict[str, Any]) -> dict[str, Any]:
    chosen = {"db": target.db, "username": target.username, "password": target.password, **options}
    if target.ssl:
        chosen["ssl"] = True
    return chosen


def _sentinel_options(target: SentinelTarget, options: dict[str, Any]) -> dict[str, Any]:
    chosen: dict[str, Any] = {"password": target.sentinel_password}
    for key in ("socket_timeout", "socket_connect_timeout"):
        if key in options:
            chosen[key] = options[key]
    return chosen


def async_client(url: str, **options: Any) -> aioredis.Redis:
    """A ``redis.asyncio`` client of ``url`` (a Sentinel set's current master for ``redis+sentinel://``);
    ``options`` are redis-py's connection options. ``max_connections`` bounds the pool; ``blocking``
    (only without Sentinel) makes a full pool wait up to ``timeout`` seconds for a connection instead of
    failing."""
    blocking = options.pop("blocking", False)
    wait = options.pop("timeout", None)  # how long a blocking pool's caller waits for a connection
    if not is_sentinel(url):
        if blocking:
            pool = aioredis.BlockingConnectionPool.from_url(url, timeout=wait, **options)
            return aioredis.Redis(connection_pool=pool)
        return aioredis.Redis.from_url(url, **options)
    target = parse_sentinel(url)
    sentinel = AsyncSentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=_sentinel_options(target, options)
    )
    client: aioredis.Redis = sentinel.master_for(target.service_name, **_master_options(target, options))
    return client


def sync_client(url: str, **options: Any) -> redis.Redis:
    """The blocking twin of ``async_client`` (the worker side)."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    target = parse_sentinel(url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=_sentinel_options(target, options)
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        target.service_name, **_master_options(target, options)
    )
    return client
