"""One watched task (or workflow) of the Python client: its events and stream chunks as they arrive,
its result, its text.

A handle starts watching on the first ``result()``, ``events()``, ``stream()`` or ``text()`` and keeps
watching until its terminal event. Events and chunks share the task's ``seq``: each frame is taken
once, in order, and anything at or below the newest seq taken is dropped, which is what makes the
socket's reconnects (resubscribing with ``since``) seamless. A handle keeps every event and chunk it
took, so that an iterator started late replays them from the first: memory grows with the task's
output.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import orjson

from svc.client.errors import SubscriptionRefused, TaskError, error_for_event

TERMINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
DEFAULT_STREAM = "output"


class Socket(Protocol):
    """What a handle needs of its client's socket (svc.client.socket.MuxSocket)."""

    def watch(self, handle: AsyncTask) -> None:
        """Deliver ``handle``'s frames to it."""

    def unwatch(self, handle: AsyncTask) -> None:
        """Stop delivering them."""


class Owner(Protocol):
    """What a handle needs of its client (svc.client.asyncclient.AsyncClient): kept narrow, so that the
    two modules do not import each other."""

    @property
    def socket(self) -> Socket:
        """The client's one WebSocket."""

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One HTTP call to a route of the API."""


class AsyncTask:
    """A task (or workflow) watched over the client's one socket."""

    def __init__(self, client: Owner, task_id: str, token: str | None, name: str | None = None) -> None:
        self.id = task_id
        self.token = token
        self.name = name
        self.state = "PENDING"  # the newest event's state (chunks never change it)
        self.last_seq = 0  # the newest seq taken, of an event or a chunk
        self.history: list[dict[str, Any]] = []  # every event taken, in seq order
        self.chunks: dict[str, list[dict[str, Any]]] = {}  # stream name -> its chunk frames, in order
        self.outcome: dict[str, Any] | None = None  # the terminal event, once taken
        self.failure: BaseException | None = None  # why the handle can no longer watch
        self._client = client
        self._watching = False
        self._changed: asyncio.Future[None] | None = None  # made only while an iterator waits
        self._ended: asyncio.Future[None] | None = None  # made only while a result() waits

    @property
    def done(self) -> bool:
        """True once the terminal event was taken (or watching failed for good)."""
        return self.outcome is not None or self.failure is not None

    # what callers use ----------------------------------------------------------------------------

    async def result(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - the SPEC's signature
        """The task's return value once it ends (a workflow's: its final event's result). Raises
        TaskFailed or TaskRevoked for those ends, SubscriptionRefused when the server will not let this
        client watch it, and TimeoutError after ``timeout`` seconds."""
        event = await self._finished(timeout)
        error = error_for_event(self.id, event)
        if error is not None:
            raise error
        return event.get("result")

    async def text(self, name: str = DEFAULT_STREAM, timeout: float | None = None) -> str:  # noqa: ASYNC109
        """Stream ``name``'s chunks joined once the task has ended, whatever its end (strings as they
        are, other values as JSON); ``result()`` is where a failure shows. Raises as ``result()`` does for
        a task that cannot be watched, and TimeoutError."""
        await self._finished(timeout)
        return join(self.chunks.get(name, []))

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every event of the task, in seq order, from the first taken; ends after the terminal one."""
        async for event in self._follow(lambda: self.history):
            yield event

    async def stream(self, name: str = DEFAULT_STREAM) -> AsyncIterator[Any]:
        """Each chunk's ``data`` of stream ``name``, in order, from the first; ends when the task ends."""
        async for chunk in self._follow(lambda: self.chunks.get(name, [])):
            yield chunk["data"]

    async def cancel(self, terminate: bool = False) -> dict[str, Any]:
        """Revoke the task (``DELETE /tasks/{id}``; ``terminate`` stops it if it runs)."""
        query = {"token": self.token, "terminate": "true" if terminate else None}
        answer: dict[str, Any] = await self._client.request("DELETE", f"/tasks/{self.id}", query=query)
        return answer

    async def fetch_state(self) -> dict[str, Any]:
        """The task's latest event over HTTP (``GET /tasks/{id}``): the polling fallback."""
        answer: dict[str, Any] = await self._client.request(
            "GET", f"/tasks/{self.id}", query={"token": self.token}
        )
        return answer

    # what the socket calls --------------------------------------------------------------------------

    def take(self, frame: dict[str, Any]) -> None:
        """One frame for this handle, from the socket (dropped if seen, or of a kind unknown)."""
        if self.done:
            return
        seq = frame.get("seq")
        if not isinstance(seq, int) or (seq <= self.last_seq and frame.get("recovered") is not False):
            return
        self.last_seq = max(self.last_seq, seq)
        if frame.get("op") == "stream":
            self.chunks.setdefault(str(frame.get("stream", DEFAULT_STREAM)), []).append(frame)
        elif frame.get("op") is None and isinstance(frame.get("state"), str):
            self.history.append(frame)
            own = frame.get("task_id") == self.id and "step_seq" not in frame
            if own:
                self.state = frame["state"]
                if self.name is None and isinstance(frame.get("name"), str):
                    self.name = frame["name"]
                if frame["state"] in TERMINAL_STATES:
                    self.outcome = frame
                    self._client.socket.unwatch(self)
        self._notify()

    def refuse(self, detail: str) -> None:
        """The server will not let this client watch the task."""
        self.fail(SubscriptionRefused(self.id, detail))

    def fail(self, error: BaseException) -> None:
        """Watching failed for good: waiters raise ``error``."""
        if not self.done:
            self.failure = error
            self._client.socket.unwatch(self)
            self._notify()

    @property
    def since(self) -> int:
        """Where a (re)subscription resumes."""
        return self.last_seq

    # inside ---------------------------------------------------------------------------------------

    def _watch(self) -> None:
        if not self._watching and not self.done:
            self._watching = True
            self._client.socket.watch(self)

    async def _finished(self, seconds: float | None) -> dict[str, Any]:
        self._watch()
        if not self.done:
            if self._ended is None:
                self._ended = asyncio.get_running_loop().create_future()
            async with asyncio.timeout(seconds):
                await asyncio.shield(self._ended)  # a timeout cancels this wait, not the others
        if self.outcome is None:
            assert self.failure is not None
            raise self.failure
        return self.outcome

    async def _follow(self, items: Callable[[], list[dict[str, Any]]]) -> AsyncIterator[dict[str, Any]]:
        self._watch()
        index = 0
        while True:
            current = items()
            if index < len(current):
                index += 1
                yield current[index - 1]
                continue
            if self.outcome is not None:
                return
            if self.failure is not None:
                raise self.failure
            await self._next_change()

    async def _next_change(self) -> None:
        if self._changed is None or self._changed.done():
            self._changed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._changed)

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)
        if self.done and self._ended is not None and not self._ended.done():
            self._ended.set_result(None)


def join(chunks: list[dict[str, Any]]) -> str:
    """A stream's text: its chunks' data concatenated, strings as they are and other values as JSON."""
    return "".join(
        data if isinstance(data := chunk.get("data"), str) else orjson.dumps(data).decode()
        for chunk in chunks
    )


__all__ = ["DEFAULT_STREAM", "AsyncTask", "TaskError", "join"]
