"""svc's settings: one typed object read from `SVC_*` environment variables.

Every field is documented in the README's settings table (a test keeps the two in step). Nothing in svc
reads them from a global: ``svc.instrument``, ``svc.Gateway`` and the commands each make (or are given)
a ``Settings``; only svc's demo app reads the process's settings once, through ``get_settings``.
"""

from __future__ import annotations

import secrets
from functools import cached_property, lru_cache
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from svc.errors import ConfigurationError
from svc.keyspace import Layout, is_cluster

CommaList = Annotated[list[str], NoDecode]
DEMO_REDIS_URL = "redis://127.0.0.1:6379/0"  # the demo app's Redis when SVC_REDIS_URL is unset


class Settings(BaseSettings):
    """Configuration shared by the API, the worker, beat and `svc dev`."""

    model_config = SettingsConfigDict(env_prefix="SVC_", extra="ignore")

    redis_url: str | None = Field(
        None,
        description=(
            "events, history, pub/sub; unset: the app's result backend if it is Redis, else its broker "
            "if it is Redis (the demo app: redis://127.0.0.1:6379/0)"
        ),
    )
    broker_url: str | None = Field(
        None, description="the demo app's Celery broker (Redis or AMQP); defaults to redis_url"
    )
    result_backend: str | None = Field(
        None, description="the demo app's Celery result backend; defaults to redis_url"
    )
    app: str | None = Field(
        None, description="the Celery app the commands serve, as celery -A takes it (module or module:name)"
    )
    expose: CommaList = Field(
        default_factory=list,
        description="names or glob patterns of the app's tasks to expose over HTTP (beside svc.expose)",
    )
    api_keys: CommaList = Field(
        default_factory=list, description="comma-separated API keys; empty = auth off"
    )
    secret_key: str | None = Field(
        None,
        description="signs task tokens; comma-separated to rotate (first signs, all verify); random if unset",
    )
    namespace: str = Field(
        "svc",
        pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
        description="prefix of every Redis key and pub/sub channel svc writes; the demo app's queue name",
    )
    allowed_origins: CommaList = Field(default_factory=list, description="WebSocket/CORS origin allow-list")

    history_max: int = Field(1000, ge=1, description="events kept per task history")
    history_ttl: int = Field(86400, ge=1, description="seconds a task's history lives after its last event")
    stream_max: int = Field(
        100_000,
        ge=1,
        description="chunks kept per task stream (all its streams together); older ones are cut",
    )
    stream_ttl: int | None = Field(
        None,
        ge=1,
        description="seconds a task's stream chunks live after its last one (unset: history_ttl)",
    )
    stream_flush: float = Field(
        0.005, gt=0, le=1, description="seconds a streamed chunk may wait in the worker before it is written"
    )
    stream_buffer: int = Field(
        10_000, ge=1, description="chunks a worker process holds unwritten before svc.stream waits for Redis"
    )
    stream_max_chunk: int = Field(
        1_048_576, ge=16, description="largest chunk svc.stream takes, in bytes of JSON"
    )
    token_ttl: int = Field(86400, ge=1, description="seconds a task token stays valid")
    idempotency_ttl: int = Field(86400, ge=1, description="seconds an Idempotency-Key maps to its first task")
    redis_timeout: float = Field(
        5.0, gt=0, description="seconds before an API-side Redis call gives up (503)"
    )

    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest HTTP request body accepted")
    max_json_depth: int = Field(32, ge=2, description="deepest nesting of arrays/objects in task arguments")
    rate_limit: float = Field(
        100.0, ge=0, description="submits per second per API key (per IP with auth off); 0=off"
    )
    rate_burst: int = Field(
        200, ge=1, description="submits a client may make at once before the rate applies"
    )
    ws_max_message: int = Field(65_536, ge=1024, description="largest WebSocket frame a client may send")
    ws_max_subscriptions: int = Field(1000, ge=1, description="subscriptions per /ws connection")
    ws_send_queue: int = Field(
        1000, ge=2, description="frames queued per connection before PROGRESS coalesces"
    )
    ws_ping_interval: float = Field(20.0, gt=0, description="seconds between server pings")
    ws_ping_timeout: float = Field(20.0, gt=0, description="seconds to wait for a pong before dropping")
    ws_max_connections: int = Field(
        100, ge=1, description="WebSocket connections per API key (or IP) per process"
    )
    ws_idle_timeout: float = Field(
        300.0, gt=0, description="seconds a /ws connection may watch nothing before closing"
    )

    http_header_timeout: float = Field(
        10.0, gt=0, description="seconds a client has to send a request line and headers (then 408)"
    )
    http_body_timeout: float = Field(
        30.0, gt=0, description="seconds a client has to send a request's body once its headers arrived"
    )
    http_max_connections: int = Field(
        128, ge=0, description="open HTTP connections per client address per API process (0 = no limit)"
    )
    redeliver_after: float = Field(
        30.0,
        ge=0,
        description="seconds a task may wait with its message in no queue before svc resends it (0: off)",
    )

    otel: bool = Field(
        False, description="FastAPI's native OpenTelemetry instrumentation (about 13% of a submit's CPU)"
    )
    monitor: bool = Field(
        True, description="follow every task event of the namespace, for /dashboard and /metrics"
    )

    email_delay: float = Field(5.0, ge=0, description="seconds send_email_task pretends to take")
    retry_backoff_scale: float = Field(
        1.0, ge=0, description="multiplies every retry countdown (tests: 0.01)"
    )
    unstable_failure_rate: float = Field(
        0.3, ge=0, le=1, description="chance unstable_task's dependency fails"
    )
    visibility_timeout: int = Field(
        3600, ge=1, description="Redis broker: seconds before an unacked task reruns"
    )
    report_schedule: str = Field("0 8 * * *", description="crontab (m h dom mon dow) of generate_report_task")
    schedule: str | None = Field(None, description="JSON object of extra/overriding beat entries")
    schedule_file: str | None = Field(
        None, description="path of a JSON file of extra/overriding beat entries"
    )

    @field_validator("api_keys", "allowed_origins", "expose", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _require_secret_with_keys(self) -> Settings:
        if self.api_keys and not self.secret_key:
            raise ValueError("SVC_SECRET_KEY must be set when SVC_API_KEYS is set")
        return self

    @model_validator(mode="after")
    def _streams_within_history(self) -> Settings:
        if self.stream_ttl is not None and self.stream_ttl > self.history_ttl:
            raise ValueError(
                "SVC_STREAM_TTL must not exceed SVC_HISTORY_TTL (a stream lives within its task)"
            )
        return self

    @property
    def stream_expiry(self) -> int:
        """Seconds a task's stream chunks live after the last one (``stream_ttl``, else ``history_ttl``)."""
        return self.history_ttl if self.stream_ttl is None else self.stream_ttl

    @property
    def broker(self) -> str:
        """The demo app's Celery broker URL (never a Redis Cluster: Celery cannot use one)."""
        return self.broker_url or self._celery_redis("SVC_BROKER_URL")

    @property
    def backend(self) -> str:
        """The demo app's Celery result backend URL (never a Redis Cluster: Celery cannot use one)."""
        return self.result_backend or self._celery_redis("SVC_RESULT_BACKEND")

    def _celery_redis(self, variable: str) -> str:
        if is_cluster(self.redis_url):
            raise ConfigurationError(
                f"SVC_REDIS_URL is a Redis Cluster, which Celery cannot use as a broker or result backend "
                f"(celery#2852): set {variable} to a Redis, a Sentinel set or RabbitMQ"
            )
        return self.redis_url or DEMO_REDIS_URL

    @cached_property
    def layout(self) -> Layout:
        """Where this namespace's keys and channels are: a Redis Cluster's layout when ``redis_url`` is
        ``redis+cluster://`` (the one way svc's events reach a cluster: Celery's own URLs cannot name
        one), else one Redis's (svc/keyspace.py)."""
        return Layout(self.namespace, is_cluster(self.redis_url))

    @cached_property
    def signing_keys(self) -> tuple[bytes, ...]:
        """Keys for task tokens, newest first: the first signs, all verify (rotation). From
        SVC_SECRET_KEY (comma-separated), else one random key for these settings (development)."""
        configured = [key.strip() for key in (self.secret_key or "").split(",") if key.strip()]
        return tuple(key.encode() for key in configured) or (secrets.token_bytes(32),)

    @property
    def auth_enabled(self) -> bool:
        """True when API keys are configured, so keys and task tokens are checked."""
        return bool(self.api_keys)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment: for svc's demo app and its tasks only."""
    return Settings()
