"""``svc api --workers N``: N API processes on one listening socket, kept running by a small parent.

The parent binds the socket once, then forks the processes, which all accept on it: the kernel hands
each new connection to one of them. Each process is a whole API with its own bridge (one pub/sub
connection each), its own monitor and its own limits; nothing is shared between them but the socket and
Redis. The gateway is made before the fork and does no I/O until its lifespan starts in each process,
so no connection is ever shared across a fork.

The parent only supervises:

- SIGTERM, SIGINT or SIGHUP to it: one SIGTERM to each process (which closes its WebSockets with 1001
  after their queued frames), then it waits for them all. The processes live in a process group of
  their own, so a Ctrl-C in the terminal reaches them once, through the parent, never twice (a second
  signal would make uvicorn skip the graceful shutdown).
- A parent killed outright (SIGKILL) takes the processes with it, on Linux (``PR_SET_PDEATHSIG``).
- A process that exits while nothing asked it to (killed by a signal, the OOM killer's SIGKILL
  included, or exiting) is started again, unless it exited by itself with an error status within
  START_GRACE seconds of its start (a failure at start-up, which a restart would only repeat): then the
  others are stopped and the parent exits with that status.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

from svc.embedded import exit_with_parent

log = logging.getLogger("svc.api.processes")

START_GRACE = 5.0  # seconds: a process that dies sooner after its start crashed at start-up


def listening_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` and listening, inheritable by forked processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def supervise(count: int, serve: Callable[[], None]) -> int:
    """Run ``serve`` in ``count`` forked processes until a signal stops them; the exit status.

    ``serve`` runs in each child and returns when that process has shut down."""
    children: dict[int, float] = {}  # pid -> when it started
    stopping = False
    status = 0

    def start() -> None:
        die_with_parent = exit_with_parent()  # made here, in the parent, whose pid it checks
        pid = os.fork()
        if pid == 0:  # the child: serve, then leave without running the parent's clean-up
            code = 0
            try:
                if die_with_parent is not None:
                    die_with_parent()  # a parent killed outright takes its processes with it
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                serve()
            except BaseException:
                log.exception("event=api_process_failed")
                code = 1
            finally:
                os._exit(code)
        with contextlib.suppress(OSError):
            os.setpgid(pid, 0)  # out of the terminal's group: signals come from the parent only
        children[pid] = time.monotonic()

    def stop(*_: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    for _ in range(count):
        start()
    log.info("event=api_processes_started count=%d pids=%s", count, ",".join(map(str, children)))
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries os.wait
            continue
        started = children.pop(pid, None)
        if started is None:
            continue
        code = os.waitstatus_to_exitcode(wait_status)
        if stopping:
            continue
        if code > 0 and time.monotonic() - started < START_GRACE:
            log.error("event=api_process_failed_to_start pid=%d code=%d action=stop_all", pid, code)
            status = code
            stop()
            continue
        log.warning("event=api_process_exited pid=%d code=%d action=restart", pid, code)
        start()
    return status
