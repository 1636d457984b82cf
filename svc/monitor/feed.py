"""The ticker that batches the monitor's changes for every connected dashboard."""

from __future__ import annotations

import asyncio
import contextlib

from svc.fanout.outbox import Outbox
from svc.monitor.live import Monitor

TICK = 0.5  # seconds between two updates a dashboard receives


class DashboardFeed:
    """Sends the monitor's changes to every connected dashboard every TICK seconds."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.outboxes: set[Outbox] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the ticker."""
        self._task = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        """Stop the ticker."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            if not self.outboxes:
                self.monitor.forget_changes()  # nobody to tell: a dashboard starts from a snapshot
                continue
            update = self.monitor.take_update()
            if update is None:
                continue
            text = update.decode()
            for outbox in list(self.outboxes):
                outbox.push(None, 0, "update", text)
