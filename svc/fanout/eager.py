"""Run a coroutine at once, to its end, when it never has to wait.

Sending a WebSocket frame through ASGI is a coroutine that almost never waits: uvicorn frames the text
and writes it to the transport at once, and waits only while the transport's buffer is full. Driving
such a send from the caller, instead of waking the connection's writer task for every frame, saves a
future, a loop callback and a task step per frame (BENCHMARKS.md, fan-out). A send that does have to
wait is handed back as an awaitable that finishes it, to be awaited by the writer in frame order.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any


def run_eagerly(coroutine: Coroutine[Any, Any, None]) -> Awaitable[None] | None:
    """Run ``coroutine`` until it ends or first waits. None when it ended; else an awaitable that
    finishes it (await it once). An exception it raises before waiting propagates here."""
    try:
        waiting_on = coroutine.send(None)
    except StopIteration:
        return None
    return _finish(coroutine, waiting_on)


@types.coroutine
def _finish(coroutine: Coroutine[Any, Any, None], waiting_on: Any) -> Generator[Any, Any, None]:
    """Do for ``coroutine`` what the task that started it would have done: wait on what it yielded,
    resume it, and pass cancellation and errors through."""
    while True:
        try:
            yield waiting_on
        except BaseException as exc:  # cancelled while waiting: the coroutine decides what that means
            try:
                waiting_on = coroutine.throw(exc)
            except StopIteration:
                return
            continue
        try:
            waiting_on = coroutine.send(None)
        except StopIteration:
            return
