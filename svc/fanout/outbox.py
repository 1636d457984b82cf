"""A bounded send queue per WebSocket connection, so one slow client never slows the others.

Policy when full (``limit`` frames queued):
- a PROGRESS event replaces the task's queued PROGRESS event when that is the task's newest queued
  frame (coalescing: the client sees the latest progress, with a jump in ``seq``);
- any other event is still queued, up to ``2 * limit`` frames; terminal events are never dropped;
- past ``2 * limit`` the outbox overflows: its frames are dropped and ``on_overflow`` is called (the
  connection cancels its writer, even one stuck in a send), the connection is closed with 1013 and
  the client resumes with ``since`` from the history, where nothing was lost;
- a subscription's backlog (what it read from the history when it began or resumed, and the live frames
  held while it read) is queued with :meth:`Outbox.push_backlog`, outside those limits: it is already
  in memory, bounded by the history's and the stream's caps, and a client resuming a long stream must
  be able to take it at its own pace instead of being cut again. Only live frames count to the limits.

No writer waits on an empty outbox. While none is at work (:attr:`Outbox.busy` is False, and then
nothing is queued), ``send_now`` may send a frame from the caller at once; a frame it cannot send is
queued and ``on_queued`` starts a writer, which takes frames with :meth:`Outbox.pop` until none is
left and then calls :meth:`Outbox.writer_done`. A send that ``send_now`` began and that had to wait
is queued with :meth:`push_unfinished`, so the writer finishes it before it sends anything newer, and a
sent frame the writer must still act on (a terminal event) with :meth:`push_sent`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

# (task_id, seq, state, text) -> whether the frame was sent at once (else it is queued)
SendNow = Callable[[str | None, int, str, str], bool]


class Overflow(Exception):
    """The client read too slowly and its queue passed the hard limit (raised by :meth:`Outbox.get`)."""


class Closed(Exception):
    """The outbox was closed and everything queued before has been taken (raised by :meth:`Outbox.get`)."""


@dataclass(slots=True)
class Frame:
    """One text frame waiting to be sent, with what the queue policy needs to know of it."""

    task_id: str | None
    seq: int
    state: str
    text: str
    unfinished: Awaitable[None] | None = None  # a send begun at once that had to wait: finish it first
    sent: bool = False  # already on the socket (send_now): the writer only does what follows a send
    backlog: bool = False  # from a subscription's history read: outside the limits


class Outbox:
    """Bounded FIFO of frames for one connection; ``push`` never blocks."""

    __slots__ = (
        "_backlog",
        "_drained",
        "_frames",
        "_newest",
        "_waiter",
        "busy",
        "closed",
        "coalesced",
        "limit",
        "on_overflow",
        "on_queued",
        "overflowed",
        "send_now",
    )

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._frames: deque[Frame] | None = None  # made on the first queued frame, dropped when emptied
        self._newest: dict[str, Frame] = {}
        self._drained: asyncio.Future[None] | None = None  # made only while someone waits
        self._waiter: asyncio.Future[None] | None = None  # a get() waiting for a frame
        self.busy = False  # a writer is at work (from the first queued frame until writer_done)
        self.closed = False  # the connection sent its close: nothing more is taken
        self.overflowed = False
        self.on_overflow: Callable[[], object] | None = None
        self.on_queued: Callable[[], object] | None = None  # start a writer
        self.send_now: SendNow | None = None
        self.coalesced = 0
        self._backlog = 0  # backlog frames queued (they do not count to the limits)

    def __len__(self) -> int:
        return len(self._frames) if self._frames is not None else 0

    def push(self, task_id: str | None, seq: int, state: str, text: str) -> None:
        """Send or queue a frame under the policy above; never blocks."""
        if self.overflowed or self.closed:
            return
        send_now = self.send_now
        if not self.busy and send_now is not None and send_now(task_id, seq, state, text):
            return  # no writer at work, so nothing queued to overtake
        frames = self._queue()
        live = len(frames) - self._backlog
        if live >= self.limit and state == "PROGRESS" and task_id is not None:
            newest = self._newest.get(task_id)
            if newest is not None and newest.state == "PROGRESS":
                newest.seq, newest.text = seq, text
                self.coalesced += 1
                return
        if live >= 2 * self.limit:
            self.overflowed = True
            frames.clear()
            self._newest.clear()
            self._backlog = 0
            _resolve(self._drained)
            self._wake()
            if self.on_overflow is not None:
                self.on_overflow()
            return
        frame = Frame(task_id, seq, state, text)
        frames.append(frame)
        if task_id is not None:
            self._newest[task_id] = frame
        self._start_writer()

    def push_backlog(self, task_id: str | None, seq: int, state: str, text: str) -> None:
        """Send or queue a frame of a subscription's backlog: never coalesced, never an overflow."""
        if self.overflowed or self.closed:
            return
        send_now = self.send_now
        if not self.busy and send_now is not None and send_now(task_id, seq, state, text):
            return
        frame = Frame(task_id, seq, state, text, backlog=True)
        self._queue().append(frame)
        self._backlog += 1
        if task_id is not None:
            self._newest[task_id] = frame
        self._start_writer()

    def push_unfinished(self, send: Awaitable[None]) -> None:
        """Queue the rest of a send that ``send_now`` began and that had to wait."""
        if not self.overflowed:
            self._queue().append(Frame(None, 0, "unfinished", "", send))
            self._start_writer()

    def push_sent(self, task_id: str, seq: int, state: str) -> None:
        """Tell the writer that ``send_now`` sent this frame itself, for what the writer does after a
        frame (a terminal event ends its subscription)."""
        if not self.overflowed:
            self._queue().append(Frame(task_id, seq, state, "", sent=True))
            self._start_writer()

    def _queue(self) -> deque[Frame]:
        frames = self._frames
        if frames is None:
            frames = self._frames = deque()
        return frames

    def _start_writer(self) -> None:
        self._wake()
        if not self.busy:
            self.busy = True
            if self.on_queued is not None:
                self.on_queued()

    def pop(self) -> Frame | None:
        """The oldest queued frame, for the writer; None when none is left (or the outbox overflowed)."""
        frames = self._frames
        if not frames:
            return None
        frame = frames.popleft()
        if frame.backlog:
            self._backlog -= 1
        if frame.task_id is not None and self._newest.get(frame.task_id) is frame:
            del self._newest[frame.task_id]
        if not frames:
            self._frames = None
        return frame

    def writer_done(self) -> None:
        """The writer stopped (it found nothing left, or it was cancelled): ``send_now`` may send again."""
        self.busy = False
        if self._frames and not self.overflowed and not self.closed:
            self._start_writer()  # queued between the writer's last pop and its end
            return
        _resolve(self._drained)
        self._drained = None

    async def get(self) -> Frame:
        """For a consumer that pulls frames instead of pushing them to a socket (the dashboard's feed,
        ``Gateway.watch``, server-sent events): the oldest frame, waiting for one; raises Overflow once
        the hard limit was passed, and Closed once the outbox was closed and nothing is left."""
        while True:
            if self.overflowed:
                raise Overflow(f"more than {2 * self.limit} frames queued")
            frame = self.pop()
            if frame is not None:
                if not self._frames:
                    self.writer_done()
                return frame
            if self.closed:
                raise Closed("the outbox was closed")
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        """Take no more frames: a :meth:`get` raises Closed once the frames queued before are taken."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drained(self) -> None:
        """Return once the writer has sent everything queued (or the outbox overflowed)."""
        if not self.busy or self.overflowed:
            return
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drained)


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)
