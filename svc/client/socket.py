"""The Python client's one multiplexed WebSocket (``WS /ws``), shared by all its watched tasks.

Opened when the first task is watched, closed once nothing has been watched for ``idle_timeout``
seconds. Each watched handle is subscribed with its token and ``since`` (the newest seq it took); a
lost connection (a network cut, an API restart, 1001 at a shutdown, 1013 for a reader too slow) is
reopened after svc's one reconnect policy (svc.backoff: full jitter, capped) and every handle
resubscribed from where it is, so that each event and chunk arrives once, in order. A handshake the
server refuses for good (1008: a bad API key or origin) fails every handle instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from svc.backoff import Reconnects
from svc.client.errors import SvcClientError

log = logging.getLogger("svc.client")
REFUSED = 1008  # auth or origin: reconnecting cannot help
MAX_FRAME = 64 * 2**20  # the largest frame taken from the server (a task's result can be big)


class Watched(Protocol):
    """What the socket needs of a watched handle (svc.client.tasks.AsyncTask)."""

    @property
    def id(self) -> str:
        """The task or workflow id it subscribes to."""

    @property
    def token(self) -> str | None:
        """The task's token."""

    @property
    def since(self) -> int:
        """Where a (re)subscription resumes."""

    @property
    def done(self) -> bool:
        """True once it has ended."""

    def take(self, frame: dict[str, Any]) -> None:
        """One frame for it."""

    def refuse(self, detail: str) -> None:
        """The server will not let it be watched."""

    def fail(self, error: BaseException) -> None:
        """Watching failed for good."""


class MuxSocket:
    """Watches tasks over one connection; ``watch``/``unwatch`` never block."""

    def __init__(
        self, ws_url: str, headers: dict[str, str], idle_timeout: float, connect_timeout: float
    ) -> None:
        self.url = ws_url
        self.headers = headers
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.watched: dict[str, Watched] = {}
        self.connections = 0  # connections opened so far (1 while nothing was lost)
        self._connection: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None  # closes the connection once nothing is watched
        self._closed = False

    @property
    def is_open(self) -> bool:
        """True while the connection is up."""
        return self._connection is not None

    def watch(self, handle: Watched) -> None:
        """Deliver ``handle``'s frames to it from now on (subscribing at once if connected)."""
        if self._closed:
            handle.fail(SvcClientError("the client is closed"))
            return
        self.watched[handle.id] = handle
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="svc-client-socket")
        elif self._connection is not None:
            self._send(
                {"op": "subscribe", "task_id": handle.id, "token": handle.token, "since": handle.since}
            )

    def unwatch(self, handle: Watched) -> None:
        """Stop delivering ``handle``'s frames (unsubscribing if it has not ended)."""
        if self.watched.get(handle.id) is handle:
            del self.watched[handle.id]
            if self._connection is not None and not handle.done:
                self._send({"op": "unsubscribe", "task_id": handle.id})
            if not self.watched and self._idle is None:
                self._idle = asyncio.get_running_loop().call_later(self.idle_timeout, self._close_if_idle)

    async def close(self) -> None:
        """Close the connection and stop reconnecting."""
        self._closed = True
        runner = self._runner
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
        for handle in list(self.watched.values()):
            handle.fail(SvcClientError("the client is closed"))

    def _close_if_idle(self) -> None:
        self._idle = None
        connection = self._connection
        if not self.watched and connection is not None:
            task = asyncio.get_running_loop().create_task(connection.close())
            task.add_done_callback(_ignore_result)

    def _send(self, frame: dict[str, Any]) -> None:
        connection = self._connection
        if connection is not None:
            task = asyncio.get_running_loop().create_task(connection.send(orjson.dumps(frame).decode()))
            task.add_done_callback(_ignore_result)

    async def _run(self) -> None:
        reconnects = Reconnects()
        while self.watched:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    connection = await websockets.connect(
                        self.url, additional_headers=self.headers, max_size=MAX_FRAME, open_timeout=None
                    )
            except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
                if isinstance(exc, websockets.InvalidStatus) and exc.response.status_code in (401, 403):
                    self._fail_all(SvcClientError(f"the server refused the WebSocket: {exc}"))
                    return
                await asyncio.sleep(reconnects.next_delay())
                continue
            self.connections += 1
            reconnects.connected()
            try:
                await self._serve(connection)
            except websockets.ConnectionClosedOK:
                pass  # closed by _close_if_idle, or the server's own idle timeout (1000)
            except websockets.ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else None
                if code == REFUSED:
                    reason = closed.rcvd.reason if closed.rcvd is not None else ""
                    self._fail_all(SvcClientError(f"the server refused the WebSocket (1008): {reason}"))
                    return
                log.info("event=client_socket_lost code=%s", code)
            except OSError as exc:
                log.info("event=client_socket_lost error=%r", exc)
            finally:
                self._connection = None
                await connection.close()
            if self.watched:
                await asyncio.sleep(reconnects.next_delay())

    async def _serve(self, connection: ClientConnection) -> None:
        """Subscribe every watched handle, then route frames until the connection closes (raises): lost,
        or closed by ``_close_if_idle`` once nothing has been watched for ``idle_timeout`` seconds."""
        self._connection = connection
        for handle in list(self.watched.values()):
            await connection.send(orjson.dumps(subscribe_frame(handle)).decode())
        route = self._route
        while True:
            route(orjson.loads(await connection.recv()))

    def _route(self, frame: Any) -> None:
        if not isinstance(frame, dict):
            return
        if frame.get("op") == "error":
            handle = self.watched.get(str(frame.get("task_id")))
            if handle is not None:
                handle.refuse(str(frame.get("detail")))
            return
        # A workflow step's frames (events and chunks) name the workflow they were copied to.
        owner = frame.get("workflow_id") if "step_seq" in frame else frame.get("task_id")
        handle = self.watched.get(str(owner))
        if handle is not None:
            handle.take(frame)

    def _fail_all(self, error: BaseException) -> None:
        for handle in list(self.watched.values()):
            handle.fail(error)


def subscribe_frame(handle: Watched) -> dict[str, Any]:
    """The subscribe frame of a handle, from where it is (``since``: the newest seq it took)."""
    return {"op": "subscribe", "task_id": handle.id, "token": handle.token, "since": handle.since}


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # a send on a connection that is going: its loss is handled by _run
