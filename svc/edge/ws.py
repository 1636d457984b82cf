"""WebSocket connections: the ASGI task reads, the bridge writes (through a bounded outbox, and a writer
task while frames wait in it).

Close codes (SPEC): 1000 the watched task ended, 1001 server shutting down, 1008 auth/origin refused,
1009 frame too large (enforced by the server's frame limit), 1011 an unexpected server error (logged),
1013 the client read too slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Coroutine
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from svc.bridge import Subscription
from svc.edge import auth
from svc.edge.wsprotocol import FrameCache, frame_writer
from svc.errors import SvcError
from svc.fanout.eager import run_eagerly
from svc.fanout.outbox import Outbox
from svc.runtime import Runtime
from svc.wire import events

log = logging.getLogger("svc.edge.ws")

TASK_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
MAX_SINCE = 2**53 - 1  # the largest integer every client (JavaScript's numbers) holds exactly
SINCE_ERROR = "since must be a non-negative integer"
CLOSE_DONE, CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_INTERNAL, CLOSE_TRY_LATER = 1000, 1001, 1008, 1011, 1013
UNEXPECTED = "an unexpected error occurred; it has been logged"
# How long a slow client's 1013 close may wait behind the bytes it has not read yet.
SLOW_CLOSE_GRACE = 30.0
# The bridge hands every subscriber of an event the same text: its frame is encoded once, here.
FRAMES = FrameCache()


def origin_allowed(runtime: Runtime, websocket: WebSocket) -> bool:
    """Non-browser clients (no Origin), same-origin pages, and exactly the allow-listed origins pass."""
    origin = websocket.headers.get("origin")
    if origin is None or origin in runtime.settings.allowed_origins:
        return True
    host = websocket.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


class Connection:
    """One accepted WebSocket: its outbox, its subscriptions, and the task that serves it.

    The ASGI task reads the client's frames; events are written from the bridge's dispatch while the
    socket takes them at once (``_send_now``), and a writer task exists only while frames wait in the
    outbox (a full socket buffer, a terminal event's follow-up on ``/ws``): an idle socket holds one
    task, not three."""

    def __init__(self, runtime: Runtime, websocket: WebSocket, *, close_after_terminal: bool) -> None:
        self.client = client_of(runtime, websocket)
        self.runtime = runtime
        self.websocket = websocket
        self.outbox = Outbox(runtime.settings.ws_send_queue)
        self.subscriptions: dict[str, Subscription] = {}
        self.close_after_terminal = close_after_terminal
        self.authorization = websocket.headers.get("authorization")
        self.last_watched = time.monotonic()  # when a task was last watched (for the idle timeout)
        # svc api's protocol writes an encoded frame straight to the socket (svc.edge.wsprotocol);
        # under any other ASGI server, frames go through ASGI's send.
        self.write_frame = frame_writer(websocket.scope)
        self.writer: asyncio.Task[None] | None = None
        self._serving: asyncio.Task[Any] | None = None
        self._stopping = False  # serve() cancelled its own reader: the writer failed or overflowed

    async def serve(self, reader: Coroutine[Any, Any, None]) -> None:
        """Run ``reader`` (in this task) while events are written; when it ends, or the writer fails or
        overflows, clean up (an overflowed connection is then closed with 1013)."""
        self.runtime.admit_connection(self, self.client)
        serving = self._serving = asyncio.current_task()
        outbox = self.outbox
        outbox.send_now, outbox.on_queued, outbox.on_overflow = self._send_now, self._start_writer, self._stop
        try:
            await reader
        except asyncio.CancelledError:
            if not self._stopping or serving is None:
                raise
            serving.uncancel()  # cancelled by _stop: go on to clean up
        finally:
            outbox.send_now = outbox.on_queued = outbox.on_overflow = None
            writer = self.writer
            if writer is not None:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer
            for subscription in list(self.subscriptions.values()):
                await self.runtime.bridge.close(subscription)
            self.subscriptions.clear()
            self.runtime.release_connection(self, self.client)
        if outbox.overflowed:
            await self._close_slow_client()

    def _start_writer(self) -> None:
        self.writer = asyncio.get_running_loop().create_task(self._write())

    def _stop(self) -> None:
        """End the connection from outside its reader: cancel the writer (even one stuck in a send) and
        the reader; serve() then cleans up."""
        if self.writer is not None and self.writer is not asyncio.current_task():
            self.writer.cancel()
        if not self._stopping and self._serving is not None:
            self._stopping = True
            self._serving.cancel()

    async def _close_slow_client(self) -> None:
        """Close with 1013. The close frame waits behind the unread bytes in the socket's buffer (which is
        bounded); a client that never reads again is dropped after SLOW_CLOSE_GRACE seconds."""
        log.warning("event=slow_client_disconnected client_limit=%d", 2 * self.outbox.limit)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SLOW_CLOSE_GRACE):
                await self.close(CLOSE_TRY_LATER, "send queue full: reconnect with since")

    async def subscribe(self, task_id: str, since: int) -> None:
        """Start (or restart, with a new ``since``) delivery of one task's events to this client."""
        previous = self.subscriptions.pop(task_id, None)
        if previous is not None:
            await self.runtime.bridge.close(previous)
        self.subscriptions[task_id] = await self.runtime.bridge.open(task_id, since, self.outbox)

    async def unsubscribe(self, task_id: str) -> None:
        """Stop delivering one task's events."""
        subscription = self.subscriptions.pop(task_id, None)
        if subscription is not None:
            self.last_watched = time.monotonic()
            await self.runtime.bridge.close(subscription)

    def send_error(self, task_id: str | None, detail: str) -> None:
        """Queue an ``{"op": "error"}`` frame."""
        text = orjson.dumps({"op": "error", "task_id": task_id, "detail": detail}).decode()
        self.outbox.push(None, 0, "error", text)

    async def shut_down(self, grace: float) -> None:
        """Send what is queued (for at most ``grace`` seconds), then close with 1001."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.outbox.drained()
        await self.close(CLOSE_GOING_AWAY, "server shutting down")

    async def close(self, code: int, reason: str = "") -> None:
        """Close the socket if it is still open; nothing is sent after it."""
        self.outbox.closed = True
        if self.websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.websocket.close(code=code, reason=reason)

    def _send_now(self, task_id: str | None, seq: int, state: str, text: str) -> bool:
        """Send a frame from the caller (the bridge) while no writer is at work, without starting one.

        With svc api's protocol, the event's frame (encoded once for all its subscribers) is written to
        the socket unless the socket cannot take it at once. A terminal frame on ``/ws/tasks/{id}`` is
        followed by the close (1000) at once; on ``/ws`` the writer is told, to end the subscription.
        Otherwise the ASGI send is run at once (svc/fanout/eager.py), terminal frames left to the
        writer."""
        write = self.write_frame
        if write is not None:
            if not write(FRAMES.frame(text)):
                return False
            self.runtime.metrics.events_delivered += 1
            if task_id is None or state not in events.TERMINAL_STATES:
                return True
            if not (self.close_after_terminal and self._close_at_once(CLOSE_DONE, "task finished")):
                self.outbox.push_sent(task_id, seq, state)
            return True
        if state in events.TERMINAL_STATES:
            return False
        try:
            unfinished = run_eagerly(self.websocket.send_text(text))
        except Exception:
            return False  # refused before anything was written: the writer sends it and meets the error
        self.runtime.metrics.events_delivered += 1
        if unfinished is not None:
            self.outbox.push_unfinished(unfinished)
        return True

    def _close_at_once(self, code: int, reason: str) -> bool:
        """Send the close frame from the caller; False (nothing sent) when it could not go at once. The
        subscriptions end when the client's answer ends the reader (serve's cleanup)."""
        if self.websocket.application_state != WebSocketState.CONNECTED:
            return False
        try:
            unfinished = run_eagerly(self.websocket.close(code=code, reason=reason))
        except Exception:
            return False
        self.outbox.closed = True
        if unfinished is not None:
            self.outbox.push_unfinished(unfinished)
        return True

    async def _write(self) -> None:
        """Send what is queued, in order, then end (the next queued frame starts a new writer)."""
        outbox, write, metrics = self.outbox, self.write_frame, self.runtime.metrics
        send = self.websocket.send_text
        try:
            while (frame := outbox.pop()) is not None:
                if frame.unfinished is not None:
                    await frame.unfinished  # already counted
                    continue
                if not frame.sent:
                    if write is None or not write(FRAMES.frame(frame.text)):
                        await send(frame.text)  # waits while the socket's buffer is full
                    metrics.events_delivered += 1
                if frame.state in events.TERMINAL_STATES and frame.task_id is not None:
                    finished = self.subscriptions.pop(frame.task_id, None)
                    if finished is not None:
                        self.last_watched = time.monotonic()
                        await self.runtime.bridge.close(finished)
                    if self.close_after_terminal:
                        await self.close(CLOSE_DONE, "task finished")
                        return
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket is gone (the reader sees it too) or a send was refused
            self._stop()
        finally:
            if self.writer is asyncio.current_task():
                self.writer = None
            outbox.writer_done()

    async def drain_reads(self) -> None:
        """Read and ignore client frames until the client goes (the per-task endpoint)."""
        await drain(self.websocket)

    async def read_ops(self) -> None:
        """Serve the multiplexed endpoint's subscribe/unsubscribe frames until the client goes, or
        until it has watched nothing for SVC_WS_IDLE_TIMEOUT seconds (closed with 1000)."""
        idle = self.runtime.settings.ws_idle_timeout
        wait = idle
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                try:
                    async with asyncio.timeout(wait):
                        message = await self.websocket.receive()
                except TimeoutError:
                    if self.subscriptions:
                        self.last_watched = time.monotonic()
                    wait = idle - (time.monotonic() - self.last_watched)
                    if wait <= 0:
                        await self.close(CLOSE_DONE, "idle: nothing watched")
                        return
                    continue
                wait = idle
                if message["type"] == "websocket.disconnect":
                    return
                raw = message.get("text")
                if raw is None:
                    raw = (message.get("bytes") or b"").decode("utf-8", "replace")
                await self._handle_op(raw)

    async def _handle_op(self, raw: str) -> None:
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.send_error(None, "frame is not JSON")
            return
        if not isinstance(frame, dict):
            self.send_error(None, "frame is not a JSON object")
            return
        op, task_id = frame.get("op"), frame.get("task_id")
        if not isinstance(task_id, str) or not TASK_ID.match(task_id):
            self.send_error(task_id if isinstance(task_id, str) else None, "task_id is missing or malformed")
            return
        if op == "unsubscribe":
            await self.unsubscribe(task_id)
            return
        if op != "subscribe":
            self.send_error(task_id, "op must be 'subscribe' or 'unsubscribe'")
            return
        since = frame.get("since", 0)
        token = frame.get("token")
        if not isinstance(since, int) or isinstance(since, bool) or not 0 <= since <= MAX_SINCE:
            self.send_error(task_id, SINCE_ERROR)
            return
        if (
            task_id not in self.subscriptions
            and len(self.subscriptions) >= self.runtime.settings.ws_max_subscriptions
        ):
            self.send_error(
                task_id, f"at most {self.runtime.settings.ws_max_subscriptions} subscriptions per connection"
            )
            return
        try:
            await auth.require_task_access(
                self.runtime.settings,
                task_id,
                token if isinstance(token, str) else None,
                self.authorization,
                self.runtime.workflow_of,
            )
        except SvcError as exc:
            self.send_error(task_id, exc.detail)
            return
        try:
            await self.subscribe(task_id, since)
        except Exception:  # one task's trouble must not cost the connection its other subscriptions
            log.exception("event=subscribe_failed task_id=%s", task_id)
            self.send_error(task_id, f"could not subscribe: {UNEXPECTED}")


async def drain(websocket: WebSocket) -> None:
    """Read and ignore what a client sends, until it goes."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return


async def shut_down_all(runtime: Runtime, grace: float = 5.0) -> None:
    """Close every connection of this process with 1001, each after sending what it had queued."""
    connections = [c for c in list(runtime.connections) if hasattr(c, "shut_down")]
    await asyncio.gather(*(connection.shut_down(grace) for connection in connections))


def client_of(runtime: Runtime, websocket: WebSocket) -> str:
    """The client a connection counts against: its API key, else its address."""
    host = websocket.client.host if websocket.client else None
    return auth.client_identity(runtime.settings, websocket.headers.get("authorization"), host)


async def refuse(websocket: WebSocket, reason: str, code: int = CLOSE_POLICY) -> None:
    """Close with ``code`` (1008 by default). Accepted first so that clients see the code; nothing is
    sent before the close."""
    await websocket.accept()
    await websocket.close(code=code, reason=reason[:120])


async def admit(runtime: Runtime, websocket: WebSocket) -> bool:
    """Origin and per-client connection checks shared by both endpoints; refuses and returns False."""
    if not origin_allowed(runtime, websocket):
        await refuse(websocket, "origin not allowed")
        return False
    if runtime.connections_full(client_of(runtime, websocket)):
        await refuse(websocket, "too many connections from this client", CLOSE_TRY_LATER)
        return False
    return True


def parse_since(raw: str | None) -> int | None:
    """A URL's ``since``: absent is 0; ASCII digits up to MAX_SINCE are that number; anything else None."""
    if raw is None:
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > len(str(MAX_SINCE)):
        return None
    value = int(raw)
    return value if value <= MAX_SINCE else None


async def serve_task_socket(runtime: Runtime, websocket: WebSocket, task_id: str) -> None:
    """``WS /ws/tasks/{task_id}?token=…&since=…`` from its URL: a malformed id or ``since`` is refused with
    1008; the rest is :func:`serve_one_task`."""
    query = websocket.query_params
    since = parse_since(query.get("since"))
    if not TASK_ID.match(task_id):
        await refuse(websocket, "task_id is malformed")
    elif since is None:
        await refuse(websocket, SINCE_ERROR)
    else:
        await serve_one_task(runtime, websocket, task_id, query.get("token"), since)


async def serve_many_socket(runtime: Runtime, websocket: WebSocket) -> None:
    """``WS /ws?token=…`` from its URL: :func:`serve_many_tasks`."""
    await serve_many_tasks(runtime, websocket, websocket.query_params.get("token"))


async def serve_one_task(
    runtime: Runtime, websocket: WebSocket, task_id: str, token: str | None, since: int
) -> None:
    """``WS /ws/tasks/{task_id}``: history then live events of one task; closes 1000 after its end."""
    if not await admit(runtime, websocket):
        return
    try:
        await auth.require_task_access(
            runtime.settings, task_id, token, websocket.headers.get("authorization"), runtime.workflow_of
        )
    except SvcError as exc:
        await refuse(websocket, exc.detail)
        return
    await websocket.accept()
    connection = Connection(runtime, websocket, close_after_terminal=True)

    async def read_after_subscribing() -> None:
        try:
            await connection.subscribe(task_id, since)
        except Exception:
            log.exception("event=subscribe_failed task_id=%s", task_id)
            await connection.close(CLOSE_INTERNAL, UNEXPECTED)
            return
        await connection.drain_reads()

    await connection.serve(read_after_subscribing())


async def serve_many_tasks(runtime: Runtime, websocket: WebSocket, token: str | None) -> None:
    """``WS /ws``: a client subscribes and unsubscribes tasks with frames on one connection."""
    if not await admit(runtime, websocket):
        return
    settings = runtime.settings
    authorization = websocket.headers.get("authorization")
    if settings.auth_enabled and not (
        auth.has_api_key(settings, authorization) or auth.plausible_token(token)
    ):
        await refuse(websocket, "an API key or a task token is required")
        return
    await websocket.accept()
    connection = Connection(runtime, websocket, close_after_terminal=False)
    await connection.serve(connection.read_ops())
