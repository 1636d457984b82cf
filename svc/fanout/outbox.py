"""A bounded send queue per WebSocket connection, so one slow client never slows the others.

Policy when full (``limit`` frames queued):
- a PROGRESS event replaces the task's queued PROGRESS event when that is the task's newest queued
  frame (coalescing: the client sees the latest progress, with a jump in ``seq``);
- any other event is still queued, up to ``2 * limit`` frames; terminal events are never dropped;
- past ``2 * limit`` the outbox overflows: its frames are dropped and ``on_overflow`` is called (the
  connection cancels its writer, even one stuck in a send), the connection is closed with 1013 and
  the client resumes with ``since`` from the history, where nothing was lost.

While the writer is idle (nothing queued), ``send_now`` may send a frame at once instead of waking the
writer; a send that had to wait is queued with :meth:`push_unfinished`, so the writer finishes it
before it sends anything newer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

# (task_id, seq, state, text) -> whether the frame was sent at once (else it is queued)
SendNow = Callable[[str | None, int, str, str], bool]


class Overflow(Exception):
    """The client read too slowly and its queue passed the hard limit."""


@dataclass(slots=True)
class Frame:
    """One text frame waiting to be sent, with what the queue policy needs to know of it."""

    task_id: str | None
    seq: int
    state: str
    text: str
    unfinished: Awaitable[None] | None = None  # a send begun at once that had to wait: finish it first


class Outbox:
    """Bounded FIFO of frames for one connection; ``push`` never blocks, ``get`` waits."""

    __slots__ = (
        "_drained",
        "_frames",
        "_newest",
        "_waiter",
        "coalesced",
        "limit",
        "on_overflow",
        "overflowed",
        "send_now",
    )

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._frames: deque[Frame] | None = None  # made on the first push, dropped when emptied
        self._newest: dict[str, Frame] = {}
        # Futures made only while someone waits: most pushes wake no one and allocate nothing.
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self.overflowed = False
        self.on_overflow: Callable[[], object] | None = None
        self.send_now: SendNow | None = None
        self.coalesced = 0

    def __len__(self) -> int:
        return len(self._frames) if self._frames is not None else 0

    def push(self, task_id: str | None, seq: int, state: str, text: str) -> None:
        """Queue a frame under the policy above; never blocks."""
        if self.overflowed:
            return
        send_now = self.send_now
        if self._waiter is not None and send_now is not None and send_now(task_id, seq, state, text):
            return  # the writer waits on an empty queue: nothing to overtake
        frames = self._frames
        if frames is None:
            frames = self._frames = deque()
        if len(frames) >= self.limit and state == "PROGRESS" and task_id is not None:
            newest = self._newest.get(task_id)
            if newest is not None and newest.state == "PROGRESS":
                newest.seq, newest.text = seq, text
                self.coalesced += 1
                return
        if len(frames) >= 2 * self.limit:
            self.overflowed = True
            frames.clear()
            self._newest.clear()
            self._wake()
            _resolve(self._drained)
            if self.on_overflow is not None:
                self.on_overflow()
            return
        frame = Frame(task_id, seq, state, text)
        frames.append(frame)
        if task_id is not None:
            self._newest[task_id] = frame
        self._wake()

    def push_unfinished(self, send: Awaitable[None]) -> None:
        """Queue the rest of a send that ``send_now`` began and that had to wait."""
        if self.overflowed:
            return
        if self._frames is None:
            self._frames = deque()
        self._frames.append(Frame(None, 0, "unfinished", "", send))
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            _resolve(waiter)

    async def get(self) -> Frame:
        """The oldest queued frame; raises Overflow once the hard limit was passed."""
        frames = self._frames
        while not frames:
            if self.overflowed:
                raise Overflow(f"more than {2 * self.limit} frames queued")
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter
            frames = self._frames
        frame = frames.popleft()
        if frame.task_id is not None and self._newest.get(frame.task_id) is frame:
            del self._newest[frame.task_id]
        if not frames:
            self._frames = None
            _resolve(self._drained)
            self._drained = None
        return frame

    async def drained(self) -> None:
        """Return once every queued frame has been taken by the writer (or the outbox overflowed)."""
        if not self._frames:
            return
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drained)


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)
