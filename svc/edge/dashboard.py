"""``WS /ws/dashboard``: the monitor's view pushed to dashboards, a snapshot then a batch of changes
every ``svc.monitor.feed.TICK`` seconds (one serialisation shared by every dashboard, never one frame
per event).

With auth on, a dashboard shows an API key: in the ``Authorization`` header, or (browsers cannot set
headers on a WebSocket) in a first frame ``{"op": "auth", "key": "…"}`` within AUTH_SECONDS.
A dashboard that reads too slowly overflows its small queue and is closed with 1013; it reconnects
and gets a fresh snapshot, so it never sees a partial state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from svc.edge import auth, ws
from svc.fanout.outbox import Outbox, Overflow

if TYPE_CHECKING:
    from svc.runtime import Runtime

log = logging.getLogger("svc.edge.dashboard")

AUTH_SECONDS = 10.0
QUEUE_FRAMES = 8


async def serve_dashboard(runtime: Runtime, websocket: WebSocket) -> None:
    """Admit, authenticate, then stream the snapshot and the changes until the dashboard goes."""
    if not await ws.admit(runtime, websocket):
        return
    await websocket.accept()
    if not await _authenticated(runtime, websocket):
        await websocket.close(code=ws.CLOSE_POLICY, reason="an API key is required")
        return
    session = DashboardSession(websocket)
    session.outbox.push(None, 0, "snapshot", runtime.monitor.snapshot().decode())
    runtime.dashboard.outboxes.add(session.outbox)
    client = ws.client_of(runtime, websocket)
    runtime.admit_connection(session, client)
    try:
        await session.serve()
    finally:
        runtime.dashboard.outboxes.discard(session.outbox)
        runtime.release_connection(session, client)
        if session.outbox.overflowed:
            log.warning("event=slow_dashboard_disconnected")
            await session.close(ws.CLOSE_TRY_LATER, "too slow: reconnect", ws.SLOW_CLOSE_GRACE)


class DashboardSession:
    """One dashboard's socket and its small send queue."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.outbox = Outbox(QUEUE_FRAMES)

    async def serve(self) -> None:
        """Send queued frames and drain the client's until either side stops (or the queue overflows)."""
        writer = asyncio.create_task(self._write())
        self.outbox.on_overflow = writer.cancel
        tasks = [writer, asyncio.create_task(ws.drain(self.websocket))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def shut_down(self, grace: float) -> None:
        """Server shutdown: send what is queued (for at most ``grace`` seconds), then close with 1001."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.outbox.drained()
        await self.close(ws.CLOSE_GOING_AWAY, "server shutting down", grace)

    async def close(self, code: int, reason: str, grace: float) -> None:
        """Close the socket if it is still open (waiting at most ``grace`` seconds)."""
        if self.websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(grace):
                    await self.websocket.close(code=code, reason=reason)

    async def _write(self) -> None:
        with contextlib.suppress(Overflow):
            while True:
                frame = await self.outbox.get()
                await self.websocket.send_text(frame.text)


async def _authenticated(runtime: Runtime, websocket: WebSocket) -> bool:
    settings = runtime.settings
    if not settings.auth_enabled or auth.has_api_key(settings, websocket.headers.get("authorization")):
        return True
    try:
        async with asyncio.timeout(AUTH_SECONDS):
            frame = orjson.loads(await websocket.receive_text())
    except (TimeoutError, WebSocketDisconnect, orjson.JSONDecodeError, KeyError, RuntimeError):
        return False
    key = frame.get("key") if isinstance(frame, dict) and frame.get("op") == "auth" else None
    return isinstance(key, str) and auth.has_api_key(settings, f"Bearer {key}")
