"""Cheap waiting primitives for state held per subscriber or per socket, where thousands are alive at
once and most are never waited on: they allocate a future only while someone waits.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Flag:
    """A minimal ``asyncio.Event`` that allocates a future only while someone waits (one is held per
    subscribed channel and per WebSocket under ``svc api``: an Event and its deque of waiters cost
    0.7 KiB each)."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        """True once set (until cleared)."""
        return self._set

    def set(self) -> None:
        """Set, waking the waiter."""
        self._set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def clear(self) -> None:
        """Unset."""
        self._set = False

    async def wait(self) -> None:
        """Return once set."""
        while not self._set:
            if self._waiter is None or self._waiter.done():
                self._waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._waiter)
        self._waiter = None


class WaitQueue(Generic[T]):
    """An unbounded FIFO with the part of ``asyncio.Queue``'s API a WebSocket's receive side uses
    (``put_nowait``, ``get``, ``empty``), for one reader: an ``asyncio.Queue`` and its waiter deques
    cost about 2 KiB per socket, this a deque made on first use. Unbounded because its producer is
    the socket's reader, which uvicorn pauses after each message until the app has taken it."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[T] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def empty(self) -> bool:
        """True when nothing is queued."""
        return not self._items

    def put_nowait(self, item: T) -> None:
        """Queue ``item``; never blocks."""
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def get(self) -> T:
        """The oldest item, waiting for one if none is queued."""
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        assert self._items is not None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item
