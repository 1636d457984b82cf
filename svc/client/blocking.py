"""``Client``: the blocking twin of ``AsyncClient``, for scripts, CLIs, notebooks and sync code.

It runs an ``AsyncClient`` on an event loop of its own, in a daemon thread, and waits for each call;
``Task`` wraps the async handle the same way (its iterators pull one item at a time). Every guarantee
is the async client's: one WebSocket, resumed with ``since``, each event and chunk once, in order.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

from svc.client.asyncclient import AsyncClient
from svc.client.tasks import DEFAULT_STREAM, AsyncTask

T = TypeVar("T")


class Client:
    """A blocking client of one svc API (the arguments are ``AsyncClient``'s). Use it as
    ``with Client(url) as client`` (or call ``close()``)."""

    def __init__(self, base_url: str, api_key: str | None = None, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="svc-client-loop", daemon=True)
        self._thread.start()
        self._async: AsyncClient = self._call(_make(base_url, api_key, options))

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the client (its socket, its HTTP pool, its thread)."""
        if self._loop.is_closed():
            return
        self._call(self._async.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def submit(
        self,
        name: str,
        args: list[Any] | tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Task:
        """``AsyncClient.submit``, waited for."""
        return Task(self, self._call(self._async.submit(name, args, kwargs, **options)))

    def workflow(self, **plan: Any) -> Task:
        """``AsyncClient.workflow``, waited for."""
        return Task(self, self._call(self._async.workflow(**plan)))

    def task(self, task_id: str, token: str | None = None) -> Task:
        """A handle on a task submitted elsewhere."""
        return Task(self, self._async.task(task_id, token))

    def tasks(self) -> list[dict[str, Any]]:
        """``GET /tasks``: the exposed tasks with their argument schemas."""
        return self._call(self._async.tasks())

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._call(anext(iterator))  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            if not self._loop.is_closed():
                aclose = getattr(iterator, "aclose", None)
                if aclose is not None:
                    self._call(aclose())


class Task:
    """A blocking handle: ``AsyncTask``'s methods, each waited for."""

    def __init__(self, client: Client, handle: AsyncTask) -> None:
        self._client = client
        self.handle = handle

    @property
    def id(self) -> str:
        """The task's (or workflow's) id."""
        return self.handle.id

    @property
    def token(self) -> str | None:
        """The task's token."""
        return self.handle.token

    @property
    def state(self) -> str:
        """The newest event's state."""
        return self.handle.state

    def result(self, timeout: float | None = None) -> Any:
        """``AsyncTask.result``: the return value, or TaskFailed / TaskRevoked / TimeoutError."""
        return self._client._call(self.handle.result(timeout))

    def text(self, name: str = DEFAULT_STREAM, timeout: float | None = None) -> str:
        """``AsyncTask.text``: the stream's chunks joined, once the task has ended."""
        return self._client._call(self.handle.text(name, timeout))

    def events(self) -> Iterator[dict[str, Any]]:
        """``AsyncTask.events``: every event in seq order, until the terminal one."""
        return self._client._iterate(self.handle.events())

    def stream(self, name: str = DEFAULT_STREAM) -> Iterator[Any]:
        """``AsyncTask.stream``: each chunk's data, until the task ends."""
        return self._client._iterate(self.handle.stream(name))

    def cancel(self, terminate: bool = False) -> dict[str, Any]:
        """``AsyncTask.cancel``."""
        return self._client._call(self.handle.cancel(terminate))


async def _make(base_url: str, api_key: str | None, options: dict[str, Any]) -> AsyncClient:
    return AsyncClient(base_url, api_key, **options)  # made on the client's own loop
