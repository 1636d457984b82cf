"""svc's events Redis managed by Sentinel (``SVC_REDIS_URL=redis+sentinel://…``): real redis-servers (a
master and a replica) and three real sentinels on free ports; the master SIGKILLed mid-run. Every
watcher still gets its terminal event once, with seqs only rising; what the failover really lost (writes
the replica had not received) may only show as a ``recovered: false`` frame, and is counted."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from svc.embedded import free_port, redis_binary, start_redis
from svc.errors import ConfigurationError
from svc.redis_clients import parse_sentinel, url_of
from svc.settings import Settings
from svc.wiring import wiring_for

from .conftest import (
    NAMESPACE,
    Service,
    spawn,
    start_api,
    start_worker,
    svc_env,
    wait_for,
    wait_until_answers,
)
from .failover import Failover, watch_through

pytestmark = pytest.mark.timeout(180)

SERVICE = "svcmaster"
TASKS = 200


def test_sentinel_urls_are_parsed_and_bad_ones_refused() -> None:
    target = parse_sentinel("redis+sentinel://:secret@h1:26380,h2/svcmaster/3?sentinel_password=s2")
    assert target.sentinels == (("h1", 26380), ("h2", 26379)) and target.service_name == "svcmaster"
    assert (target.db, target.password, target.sentinel_password, target.ssl) == (3, "secret", "s2", False)
    assert parse_sentinel("rediss+sentinel://h:1/m").ssl
    for bad in (
        "redis+sentinel://h:1/",
        "redis+sentinel:///m",
        "redis+sentinel://h:1/m/x",
        "redis+sentinel://h/m/1/2",
    ):
        with pytest.raises(ConfigurationError):
            parse_sentinel(bad)


def test_a_celery_sentinel_url_becomes_svcs() -> None:
    kombu = "sentinel://:pw@h1:26380/2;sentinel://h2"
    options = {"master_name": "svcmaster", "sentinel_kwargs": {"password": "s&2"}}
    assert (
        url_of(kombu, options) == "redis+sentinel://:pw@h1:26380,h2:26379/svcmaster/2?sentinel_password=s%262"
    )
    assert parse_sentinel(url_of(kombu, options) or "").sentinel_password == "s&2"
    assert url_of(kombu, {}) is None  # kombu needs master_name too
    assert url_of("amqp://guest@rabbit//") is None and url_of("redis://h:1/0") == "redis://h:1/0"
    app = Celery("sentinel", broker=kombu, backend="rpc://")
    app.conf.broker_transport_options = options
    wiring = wiring_for(app, Settings())
    assert wiring.events_url == wiring.broker_redis_url == url_of(kombu, options)
    assert wiring.broker_is_events_redis and not wiring.backend_is_redis


class SentinelSet:
    """A master, its replica and three sentinels watching them."""

    def __init__(self, directory: Path) -> None:
        self.master = start_redis(directory=self._folder(directory, "master"), die_with_parent=True)
        self.replica = start_redis(
            None,
            self._folder(directory, "replica"),
            "--replicaof",
            "127.0.0.1",
            str(self.master.port),
            die_with_parent=True,
        )
        self.sentinels: list[tuple[int, subprocess.Popen[bytes]]] = []
        for index in range(3):
            port = free_port()
            config = self._folder(directory, f"sentinel{index}") / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\nsentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\nsentinel parallel-syncs {SERVICE} 1\n"
            )
            process = subprocess.Popen(
                [redis_binary(), str(config), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.sentinels.append((port, process))
        self._until(lambda: self.replica_synced(), "the replica in sync")
        self._until(lambda: all(self.master_seen_by(port) for port, _ in self.sentinels), "the sentinels")

    @staticmethod
    def _folder(directory: Path, name: str) -> Path:
        folder = directory / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @staticmethod
    def _until(ready: Any, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def replica_synced(self) -> bool:
        try:
            info = redis.Redis(port=self.replica.port).info("replication")
        except redis.RedisError:
            return False
        return info.get("master_link_status") == "up"

    def master_seen_by(self, port: int) -> int | None:
        """The master's port as sentinel ``port`` sees it (None while it does not answer)."""
        try:
            client = redis.Redis(port=port, socket_timeout=1)
            address = client.execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)
            known = client.execute_command("SENTINEL", "sentinels", SERVICE)
        except redis.RedisError:
            return None
        return int(address[1]) if address and len(known) >= 2 else None

    @property
    def url(self) -> str:
        """svc's form: ``redis+sentinel://h:p,h:p/service/db``."""
        hosts = ",".join(f"127.0.0.1:{port}" for port, _ in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    @property
    def kombu_url(self) -> str:
        """kombu's and Celery's form: ``sentinel://h:p;sentinel://h:p``."""
        return ";".join(f"sentinel://127.0.0.1:{port}" for port, _ in self.sentinels)

    def stop(self) -> None:
        for _, process in self.sentinels:
            process.terminate()
        for _, process in self.sentinels:
            process.wait(timeout=10)
        self.replica.stop()
        self.master.stop()


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    made = SentinelSet(tmp_path)
    yield made
    made.stop()


@pytest.fixture
def on_sentinel(sentinel_set: SentinelSet, tmp_path: Path) -> Iterator[tuple[Service, Service]]:
    """A worker and an API with their events on the Sentinel set, broker and backend on a Redis of their
    own (Celery's broker is not what this test fails over)."""
    broker = start_redis(directory=SentinelSet._folder(tmp_path, "broker"), die_with_parent=True)
    elsewhere = {"SVC_REDIS_URL": sentinel_set.url, "SVC_BROKER_URL": broker.url}
    elsewhere["SVC_RESULT_BACKEND"] = broker.url
    worker = start_worker(
        sentinel_set.master.url, tmp_path, "worker-sentinel", "--concurrency", "8", **elsewhere
    )
    api = start_api(broker.url, tmp_path, name="api-sentinel", **elsewhere)
    yield api, worker
    api.stop()
    worker.stop()
    broker.stop()


def team_env(sentinel_set: SentinelSet) -> dict[str, str]:
    """What the team's processes see: their Sentinel URLs and no SVC_REDIS_URL."""
    env = {key: value for key, value in svc_env("unused").items() if key != "SVC_REDIS_URL"}
    env.update(TEAM_SENTINELS=sentinel_set.kombu_url, TEAM_MASTER=SERVICE, TEAM_QUEUE="sentinel-team")
    return env


@pytest.fixture
def team_on_sentinel(sentinel_set: SentinelSet, tmp_path: Path) -> Iterator[tuple[Service, Service]]:
    """``celery -A tests.apps.sentinel_team worker`` and ``svc api -A tests.apps.sentinel_team``: broker,
    result backend and events all on the Sentinel set, found from the app's own ``sentinel://`` URL."""
    env = team_env(sentinel_set)
    hostname = f"sentinel-team-{uuid.uuid4().hex[:6]}@localhost"
    args = ["-A", "tests.apps.sentinel_team", "worker", "--loglevel", "INFO", "--hostname", hostname]
    args += ["--concurrency", "8", "--without-mingle", "--without-gossip"]
    worker_log = tmp_path / "sentinel-team-worker.log"
    worker = spawn(args, env, worker_log, module="celery")
    master = redis.Redis(port=sentinel_set.master.port)
    wait_for(lambda: master.zscore(f"{NAMESPACE}:workers", hostname) is not None, 60, "team worker", worker)
    master.close()
    port = free_port()
    api_log = tmp_path / "sentinel-team-api.log"
    command = ["api", "-A", "tests.apps.sentinel_team", "--port", str(port), "--log-level", "warning"]
    api = spawn(command, env, api_log)
    wait_until_answers(f"http://127.0.0.1:{port}/healthz", api, "team api", timeout=60)
    yield Service(api, api_log, port=port), Service(worker, worker_log, hostname=hostname)
    Service(api, api_log).stop()
    Service(worker, worker_log).stop()


async def fail_over_mid_run(
    api: Service, sentinel_set: SentinelSet, task: str, body: dict[str, Any]
) -> Failover:
    """TASKS watched tasks through a SIGKILL of the Sentinel set's master; its replica is master after."""
    old_master = sentinel_set.master.port

    async def kill() -> None:
        sentinel_set.master.process.send_signal(signal.SIGKILL)

    seen = await watch_through(api, TASKS, task, body, kill)
    new_master = sentinel_set.master_seen_by(sentinel_set.sentinels[0][0])
    assert new_master == sentinel_set.replica.port != old_master
    return seen


async def test_a_sentinel_failover_of_the_events_redis_leaves_no_watcher_without_its_end(
    sentinel_set: SentinelSet, on_sentinel: tuple[Service, Service]
) -> None:
    api, _ = on_sentinel
    seen = await fail_over_mid_run(api, sentinel_set, "count_to", {"args": [10], "kwargs": {"delay": 0.05}})
    assert seen.finished_before_kill < TASKS  # the master died mid-run
    print(f"sentinel failover, events Redis: {seen}")


async def test_a_sentinel_failover_of_a_teams_broker_backend_and_events_redis(
    sentinel_set: SentinelSet, team_on_sentinel: tuple[Service, Service]
) -> None:
    api, _ = team_on_sentinel
    seen = await fail_over_mid_run(api, sentinel_set, "count_slowly", {"args": [10]})
    assert seen.finished_before_kill < TASKS
    print(f"sentinel failover, broker + backend + events: {seen}")
