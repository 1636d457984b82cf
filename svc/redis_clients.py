"""Clients of svc's events Redis, made from its URL: one Redis, the master of a Sentinel set, or a Redis
Cluster.

``SVC_REDIS_URL`` (or the app's Redis URL it falls back on) takes what redis-py takes (``redis://``,
``rediss://``, ``unix://``) and, for a Redis that Sentinel fails over,

    redis+sentinel://[[user]:password@]host:port[,host:port…]/service_name[/db][?sentinel_password=…]

(``rediss+sentinel://`` for TLS to the master). The sentinels are asked for the current master on every
new connection, and a connection to a master that has since been demoted fails with ConnectionError
(redis-py's ``SentinelManagedConnection``): so whatever already reconnects after a Redis restart (the
bridge, the monitor, the batcher's next trip, the worker's retries) follows a failover the same way.
The password is the master's; the sentinels' own, if they have one, is ``sentinel_password``.

For a Redis Cluster, ``redis+cluster://[[user]:password@]host:port[,host:port…]/`` (``rediss+cluster://``
for TLS) names some of its nodes; redis-py's ``RedisCluster`` learns the rest from them, routes each
command to the node owning its key's slot, and follows ``MOVED`` and failovers. svc's key layout on a
cluster is svc/keyspace.py's.

A Celery app's own broker or result backend on Sentinel is written as kombu and Celery write it
(``sentinel://h1:26379;sentinel://h2:26379/0`` with ``master_name`` in ``broker_transport_options`` or
``result_backend_transport_options``): :func:`url_of` turns that into the URL above, so svc reaches the
same master the app's workers do.

Used by the worker side and the API side alike; no I/O until a client is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster
from redis.asyncio.connection import SSLConnection as AsyncSSLConnection
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelManagedConnection as AsyncSentinelManagedConnection
from redis.connection import SSLConnection
from redis.exceptions import ClusterDownError, RedisClusterException, SlotNotCoveredError, TryAgainError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from svc.errors import ConfigurationError
from svc.keyspace import is_cluster


class PatientCluster(redis.cluster.RedisCluster):
    """redis-py's ``RedisCluster`` whose commands wait out a failover as a plain client's ``retry`` does.

    redis-py retries a command that met a lost node at once, with no pause, reloading the slot map each
    time: its retries are spent in a fraction of a second, long before the cluster has promoted a
    replica (a few seconds). Here each command runs under ``patience`` (a redis-py ``Retry``, with its
    backoff), and the cluster errors of a failover under way count as retryable too.
    """

    patience: Retry | None = None

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """As ``RedisCluster.execute_command``, retried under ``patience``."""
        run = super().execute_command
        return self.patiently(lambda: run(*args, **kwargs))  # type: ignore[no-untyped-call]

    def patiently(self, call: Callable[[], T]) -> T:
        """``call()`` (a command, a pipeline's ``execute``), retried under ``patience``."""
        if self.patience is None:
            return call()
        return self.patience.call_with_retry(call, lambda _: None)


@contextlib.contextmanager
def cluster_errors_as_connection_errors() -> Iterator[None]:
    """redis-py says "no node answered" and "no owner for this slot" with RedisClusterException, which is
    no RedisError: raised as a ConnectionError, the callers' handling of a lost Redis (503, reconnect with
    backoff, retry) covers a cluster that cannot be reached or is failing over."""
    try:
        yield
    except RedisClusterException as exc:
        raise redis.ConnectionError(f"the Redis Cluster cannot serve this now: {exc}") from exc


SyncClient = redis.Redis | redis.cluster.RedisCluster  # the worker side's client of the events Redis
AsyncClient = aioredis.Redis | aiocluster.RedisCluster  # the API side's client of the events Redis

T = TypeVar("T")
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


@dataclass(frozen=True)
class ClusterTarget:
    """A ``redis+cluster://`` URL, parsed."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    ssl: bool


def parse_cluster(url: str) -> ClusterTarget:
    """The parts of a ``redis+cluster://`` URL; ConfigurationError saying what is wrong with a bad one."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for host in filter(None, hosts.split(",")):
        name, _, port = host.rpartition(":")
        if not port.isdigit():
            nodes = []
            break
        nodes.append((name.strip("[]") or "127.0.0.1", int(port)))
    if not nodes or parts.path.strip("/") not in ("", "0"):
        raise ConfigurationError(
            f"a Redis Cluster URL is redis+cluster://host:port[,host:port…]/ (a cluster has database 0 "
            f"only), not {url!r}"
        )
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    return ClusterTarget(
        nodes=tuple(nodes),
        username=unquote(username) or None,
        password=unquote(password) or None,
        ssl=parts.scheme.startswith("rediss"),
    )


def _cluster_options(target: ClusterTarget, options: dict[str, Any]) -> dict[str, Any]:
    chosen = {"username": target.username, "password": target.password, **options}
    if target.ssl:
        chosen["ssl"] = True
    return chosen


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


class FollowingConnection(SentinelManagedConnection):
    """redis-py's connection to a Sentinel set's master, that finds the master again whenever it
    reconnects.

    redis-py 8's own asks the sentinels only in ``connect()``; a command sent on a connection that was
    closed under it (the master died, and the client's ``retry`` runs the command again on the same
    connection) reconnects through ``connect_check_health`` to the old address instead, for every retry:
    a worker's publish then spends its minute of retries on a dead master. Here that path goes through
    ``connect()`` too.
    """

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        """Connect through the sentinels, unless connected, or called by ``connect_to`` with the address
        they gave."""
        if self._sock or not retry_socket_connect:
            super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)
            return
        self.connect()  # type: ignore[no-untyped-call]


class FollowingSSLConnection(FollowingConnection, SSLConnection):
    """:class:`FollowingConnection` over TLS (``rediss+sentinel://``)."""


class AsyncFollowingConnection(AsyncSentinelManagedConnection):
    """:class:`FollowingConnection` for ``redis.asyncio``, which has the same gap."""

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        """As :meth:`FollowingConnection.connect_check_health`."""
        if self.is_connected or not retry_socket_connect:
            await super().connect_check_health(
                check_health=check_health, retry_socket_connect=retry_socket_connect
            )
            return
        await self.connect()  # type: ignore[no-untyped-call]


class AsyncFollowingSSLConnection(AsyncFollowingConnection, AsyncSSLConnection):
    """:class:`AsyncFollowingConnection` over TLS (``rediss+sentinel://``)."""


def _master_options(target: SentinelTarget, options: dict[str, Any], asynchronous: bool) -> dict[str, Any]:
    chosen = {"db": target.db, "username": target.username, "password": target.password, **options}
    if asynchronous:
        chosen["connection_class"] = AsyncFollowingSSLConnection if target.ssl else AsyncFollowingConnection
    else:
        chosen["connection_class"] = FollowingSSLConnection if target.ssl else FollowingConnection
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
    if is_cluster(url):
        raise ConfigurationError("a Redis Cluster takes async_cluster_client, not async_client")
    if not is_sentinel(url):
        if blocking:
            pool = aioredis.BlockingConnectionPool.from_url(url, timeout=wait, **options)
            return aioredis.Redis(connection_pool=pool)
        return aioredis.Redis.from_url(url, **options)
    target = parse_sentinel(url)
    sentinel = AsyncSentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=_sentinel_options(target, options)
    )
    client: aioredis.Redis = sentinel.master_for(
        target.service_name, **_master_options(target, options, True)
    )
    return client


def async_cluster_client(url: str, **options: Any) -> aiocluster.RedisCluster:
    """A ``redis.asyncio`` cluster client of a ``redis+cluster://`` URL; ``options`` as for
    ``async_client`` (``max_connections`` is per node)."""
    target = parse_cluster(url)
    nodes = [aiocluster.ClusterNode(host, port) for host, port in target.nodes]
    return aiocluster.RedisCluster(startup_nodes=nodes, **_cluster_options(target, options))


def sync_client(url: str, **options: Any) -> SyncClient:
    """The blocking twin of ``async_client`` (the worker side); a :class:`PatientCluster` for a cluster
    URL, whose ``retry`` and ``retry_on_error`` options become its ``patience``."""
    if is_cluster(url):
        cluster = parse_cluster(url)
        nodes = [redis.cluster.ClusterNode(host, port) for host, port in cluster.nodes]  # type: ignore[no-untyped-call]
        retry: Retry | None = options.pop("retry", None)
        errors = tuple(options.pop("retry_on_error", None) or ())
        chosen = _cluster_options(cluster, options)

        def connect() -> PatientCluster:
            with cluster_errors_as_connection_errors():  # RedisCluster loads the slot map as it is made
                return PatientCluster(startup_nodes=nodes, **chosen)

        if retry is None or retry.get_retries() <= 0:
            return connect()
        # A fresh Retry of the same backoff and count, on the connection errors asked for and those a
        # cluster answers while it fails over.
        failover = (ClusterDownError, SlotNotCoveredError, TryAgainError)
        patience = Retry(retry._backoff, retry.get_retries(), (*errors, redis.ConnectionError, *failover))
        patient = patience.call_with_retry(connect, lambda _: None)
        patient.patience = patience
        return patient
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    target = parse_sentinel(url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=_sentinel_options(target, options)
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        target.service_name, **_master_options(target, options, False)
    )
    return client
