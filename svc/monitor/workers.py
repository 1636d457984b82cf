"""Worker health from Celery's own mechanisms: its worker events (online, heartbeat, offline) and
``inspect`` (pool size, queues), gathered in a thread so the event loop never waits on the broker.

A worker is online while its heartbeats are current: it goes offline when two heartbeat intervals
(``freq``, 2 s by default) pass without one, or at once when it says goodbye (``worker-offline``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from svc.backoff import Reconnects

log = logging.getLogger("svc.monitor.workers")

MISSED_HEARTBEATS = 2
INSPECT_TIMEOUT = 1.0
WORKER_EVENTS = ("worker-online", "worker-heartbeat", "worker-offline")


@dataclass(slots=True)
class Worker:
    """What the dashboard shows of one worker."""

    hostname: str
    online: bool = False
    last_heartbeat: float = 0.0
    freq: float = 2.0
    active: int = 0
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    pool: int | None = None
    queues: list[str] = field(default_factory=list)
    loadavg: list[float] = field(default_factory=list)
    pid: int | None = None
    version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form sent to dashboards."""
        return {
            "hostname": self.hostname,
            "online": self.online,
            "last_heartbeat": self.last_heartbeat,
            "active": self.active,
            "processed": self.processed,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "pool": self.pool,
            "queues": self.queues,
            "loadavg": self.loadavg,
            "pid": self.pid,
            "version": self.version,
        }


class WorkerBoard:
    """Every worker seen, updated from Celery worker events; ``changed`` is called on each change."""

    def __init__(self, app: Celery, changed: Callable[[], None]) -> None:
        self.app = app
        self.changed = changed
        self._workers: dict[str, Worker] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._receiver: Any = None

    def all(self) -> list[Worker]:
        """Every worker seen since this process started, by hostname."""
        return [self._workers[name] for name in sorted(self._workers)]

    def get(self, hostname: str) -> Worker:
        """The worker called ``hostname`` (a new, offline entry if it was never seen)."""
        worker = self._workers.get(hostname)
        if worker is None:
            worker = self._workers[hostname] = Worker(hostname)
        return worker

    async def start(self) -> None:
        """Listen for worker events in a thread, and expire silent workers from the loop."""
        self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._listen, name="svc-worker-events", daemon=True).start()
        self._tasks.append(asyncio.create_task(self._expire()))

    async def stop(self) -> None:
        """Stop listening (the thread ends at its next wake-up, within a second)."""
        self._stop.set()
        if self._receiver is not None:
            self._receiver.should_stop = True
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # the listener thread ------------------------------------------------------------------------

    def _listen(self) -> None:
        reconnects = Reconnects()
        while not self._stop.is_set():
            try:
                with self.app.connection_for_read() as connection:
                    reconnects.connected()
                    self._receiver = self.app.events.Receiver(
                        connection, handlers={name: self._hand_over for name in WORKER_EVENTS}
                    )
                    self._receiver.capture(limit=None, timeout=None, wakeup=True)
            except Exception as exc:  # the broker went away: try again with backoff
                if self._stop.is_set():
                    return
                delay = reconnects.next_delay()
                log.warning("event=worker_events_disconnected error=%r retry_in=%.2f", exc, delay)
                self._stop.wait(delay)

    def _hand_over(self, event: dict[str, Any]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._apply, event)

    # the event loop -----------------------------------------------------------------------------

    def _apply(self, event: dict[str, Any]) -> None:
        hostname = event.get("hostname")
        if not isinstance(hostname, str):
            return
        worker = self.get(hostname)
        kind = event.get("type")
        was_online = worker.online
        if kind == "worker-offline":
            worker.online = False
        else:
            worker.online = True
            worker.last_heartbeat = time.time()  # our clock: another machine's may be skewed
            worker.freq = float(event.get("freq") or 2.0)
            worker.active = int(event.get("active") or 0)
            worker.processed = int(event.get("processed") or 0)
            worker.loadavg = list(event.get("loadavg") or [])
            worker.pid = event.get("pid")
            worker.version = event.get("sw_ver")
            if not was_online or worker.pool is None:
                self._tasks.append(asyncio.create_task(self._inspect(hostname)))
        self.changed()

    async def _inspect(self, hostname: str) -> None:
        """Pool size and queues of a worker that came online (Celery's ``inspect``, off the loop)."""
        try:
            stats, queues = await asyncio.to_thread(self._inspect_blocking, hostname)
        except Exception as exc:
            log.info("event=inspect_failed worker=%s error=%r", hostname, exc)
            return
        worker = self.get(hostname)
        pool = (stats or {}).get("pool") or {}
        concurrency = pool.get("max-concurrency")
        worker.pool = int(concurrency) if isinstance(concurrency, int) else worker.pool
        worker.queues = [queue["name"] for queue in queues or [] if isinstance(queue, dict)]
        self.changed()

    def _inspect_blocking(self, hostname: str) -> tuple[dict[str, Any] | None, list[Any] | None]:
        inspect = self.app.control.inspect(destination=[hostname], timeout=INSPECT_TIMEOUT)
        stats = (inspect.stats() or {}).get(hostname)
        queues = (inspect.active_queues() or {}).get(hostname)
        return stats, queues

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.time()
            for worker in self._workers.values():
                if worker.online and now - worker.last_heartbeat > MISSED_HEARTBEATS * worker.freq:
                    worker.online = False
                    worker.active = 0
                    self.changed()
            self._tasks = [task for task in self._tasks if not task.done()]
