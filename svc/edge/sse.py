"""``GET /tasks/{task_id}/events`` as server-sent events (``Accept: text/event-stream``): the frames of
``WS /ws/tasks/{task_id}``, for clients behind proxies that refuse WebSockets, and for ``curl -N``.

Each frame is one SSE message, ``id: <seq>`` and ``data: <the frame's JSON>``; ``Last-Event-ID`` (what
a browser's ``EventSource`` sends when it reconnects) or ``?since=`` resumes after that seq. The
response ends after the task's terminal event. While nothing happens, a comment (``: ping``) goes out
every PING_EVERY seconds, so proxies keep the response open and a dead client is noticed.

Delivery is the WebSocket's: history then live with no gap and no duplicate (svc.bridge), through a
bounded outbox (svc/fanout/outbox.py: PROGRESS coalesces past ``SVC_WS_SEND_QUEUE`` frames, stream
chunks and terminal events never). A client too slow for it has its response ended once the outbox
overflows, as a WebSocket is closed with 1013; it resumes with ``Last-Event-ID``. A server shutting down
sends what is queued, then ends every response.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from svc.edge import ws
from svc.fanout.outbox import Closed, Outbox, Overflow
from svc.runtime import Runtime
from svc.wire import events

MEDIA_TYPE = "text/event-stream"
PING_EVERY = 15.0
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering (nginx)


def wants_event_stream(accept: str | None) -> bool:
    """True when an ``Accept`` header asks for server-sent events."""
    return accept is not None and MEDIA_TYPE in accept.lower()


class EventStream:
    """One server-sent-events response: its outbox, and its end when the server shuts down."""

    def __init__(self, runtime: Runtime, task_id: str, since: int, client: str) -> None:
        self.runtime = runtime
        self.task_id = task_id
        self.since = since
        self.client = client
        self.outbox = Outbox(runtime.settings.ws_send_queue)

    async def shut_down(self, grace: float) -> None:
        """End the response once what is queued has gone (``grace`` is the writer's to keep)."""
        self.outbox.close()

    async def body(self) -> AsyncIterator[bytes]:
        """The response's bytes: the frames, each an SSE message, until the terminal event."""
        runtime, outbox = self.runtime, self.outbox
        subscription = None
        try:
            yield b": svc\n\n"  # the headers and a first byte go out at once (curl -N, proxies)
            subscription = await runtime.bridge.open(self.task_id, self.since, outbox)
            while True:
                try:
                    frame = await asyncio.wait_for(outbox.get(), PING_EVERY)
                except TimeoutError:
                    yield b": ping\n\n"
                    continue
                except (Overflow, Closed):
                    return
                messages = [frame]
                while len(outbox):  # what else waits goes out in the same write
                    messages.append(await outbox.get())
                yield b"".join(b"id: %d\ndata: %s\n\n" % (m.seq, m.text.encode()) for m in messages)
                if any(m.state in events.TERMINAL_STATES for m in messages):
                    return
        finally:
            if subscription is not None:
                # Also when the client went away and the response was cancelled.
                with contextlib.suppress(Exception):
                    await asyncio.shield(runtime.bridge.close(subscription))


def parse_resume(last_event_id: str | None, since: str | None) -> int | None:
    """Where to resume: ``Last-Event-ID`` if sent, else ``?since=``, else 0; None when malformed."""
    return ws.parse_since(last_event_id.strip() if last_event_id is not None else since)


class EventStreamResponse(StreamingResponse):
    """A streaming response counted as one of its client's connections from the moment it is made
    (so that the per-client limit is checked and taken in one step) until it has been served."""

    def __init__(self, stream: EventStream) -> None:
        super().__init__(stream.body(), media_type=MEDIA_TYPE, headers=HEADERS)
        self.stream = stream
        stream.runtime.admit_connection(stream, stream.client)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.runtime.release_connection(self.stream, self.stream.client)


def event_stream(runtime: Runtime, task_id: str, since: int, client: str) -> EventStreamResponse:
    """The SSE response for one task from ``since``."""
    return EventStreamResponse(EventStream(runtime, task_id, since, client))
