"""A private RabbitMQ node for the broker tests: started from Debian's rabbitmq-server on free ports,
in a folder of the test's own; the machine's RabbitMQ on 127.0.0.1:5672 is the fallback."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kombu import Connection

from svc.embedded import free_port

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # the script itself, not the user-switching wrapper
SHARED_URL = "amqp://guest:guest@127.0.0.1:5672//"


@dataclass
class Broker:
    """A reachable AMQP broker, and the process to stop if the test started it."""

    url: str
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def reachable(url: str, timeout: float = 3) -> bool:
    """True when an AMQP connection to ``url`` opens."""
    try:
        with Connection(url, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


def start_private_node(directory: Path, timeout: float = 60) -> Broker | None:
    """Start our own RabbitMQ node; None when the server is not installed or does not come up."""
    if not SERVER.exists():
        return None
    port = free_port()
    name = f"svctest-{uuid.uuid4().hex[:6]}@localhost"
    env = {
        **os.environ,
        "HOME": str(directory),  # its own Erlang cookie
        "RABBITMQ_NODENAME": name,
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(free_port()),
        "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
        "RABBITMQ_LOG_BASE": str(directory / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq"),
        "RABBITMQ_PID_FILE": str(directory / "pid"),
        "RABBITMQ_FEATURE_FLAGS_FILE": str(directory / "feature_flags"),
        "ERL_CRASH_DUMP": str(directory / "erl_crash.dump"),
    }
    with (directory / "rabbitmq.out").open("wb") as out:
        process = subprocess.Popen(
            [str(SERVER)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=directory,
        )
    broker = Broker(f"amqp://guest:guest@127.0.0.1:{port}//", process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if reachable(broker.url, timeout=1):
            return broker
        time.sleep(0.5)
    broker.stop()
    return None


def start_broker(directory: Path) -> tuple[Broker | None, str]:
    """Our own node where we can start one, else the machine's; (None, reason) when neither exists."""
    directory.mkdir(parents=True, exist_ok=True)
    own = start_private_node(directory)
    if own is not None:
        return own, "a private RabbitMQ node"
    if reachable(SHARED_URL):
        return Broker(SHARED_URL), "the machine's RabbitMQ on 127.0.0.1:5672"
    return None, (
        "no RabbitMQ: /usr/lib/rabbitmq/bin/rabbitmq-server could not start a node and nothing answers "
        "AMQP on 127.0.0.1:5672 (apt-get install rabbitmq-server)"
    )
