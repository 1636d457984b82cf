"""Guards on uvicorn's HTTP connections: slow clients are cut, and one client address cannot hold
more than its share of the process's file descriptors.

uvicorn has no request-header or request-body timeout, and no limit on connections per client: a
client that sends a request line and then a header every few seconds holds its socket forever, and a
thousand of them exhaust the process's descriptors. ``guarded_protocol(settings)`` returns uvicorn's
httptools protocol with three additions:

- a request's line and headers must arrive within ``http_header_timeout`` seconds, counted from the
  connection for its first request and from the first byte of each later one: else 408 and close (a
  connection that has not begun a request is closed without an answer);
- a body must arrive within ``http_body_timeout`` seconds of its headers: else the connection is
  closed, with a 408 first when nothing of a response was sent yet, and the app's ``receive()`` sees
  ``http.disconnect``;
- past ``http_max_connections`` open HTTP connections from one peer address, a new one is answered
  429 and closed at once. A connection upgraded to a WebSocket stops counting (WebSockets have their
  own per-client limit, ``SVC_WS_MAX_CONNECTIONS``).

Time in which uvicorn itself does not read (a pipelined request waiting for the one before it, a body
the app has not taken yet) does not count against the client. Keep-alive idleness between requests
stays uvicorn's own ``timeout_keep_alive``. Everything runs in the protocol's callbacks and timers:
nothing blocks the loop, on uvloop or asyncio's own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import ClassVar, Final

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from svc.errors import SvcError
from svc.settings import Settings

log = logging.getLogger("svc.http")


class ClientConnections:
    """Open connections per client address, refusing one past ``limit`` (0 = no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, client: str) -> bool:
        """Count a new connection from ``client``; False (and nothing counted) when it is over the limit."""
        count = self._open.get(client, 0)
        if self.limit and count >= self.limit:
            return False
        self._open[client] = count + 1
        return True

    def release(self, client: str) -> None:
        """Uncount one connection of ``client`` (each successful ``acquire`` is released once)."""
        count = self._open.get(client, 0) - 1
        if count > 0:
            self._open[client] = count
        else:
            self._open.pop(client, None)

    def open(self, client: str) -> int:
        """How many connections ``client`` holds now."""
        return self._open.get(client, 0)


class _Throttled:
    """A log line at most once per ``interval`` seconds; the lines left out are counted in the next."""

    def __init__(self, level: int, interval: float = 1.0) -> None:
        self.level = level
        self.interval = interval
        self._last = float("-inf")
        self._skipped = 0

    def log(self, message: str, *args: object) -> None:
        """Log ``message % args`` on svc.http unless a line went out less than ``interval`` ago."""
        now = time.monotonic()
        if now - self._last < self.interval:
            self._skipped += 1
            return
        if self._skipped:
            log.log(self.level, f"{message} suppressed=%d", *args, self._skipped)
        else:
            log.log(self.level, message, *args)
        self._last, self._skipped = now, 0


# A connection's phase. Plain ints: these are compared a few times per request, and an Enum
# member's lookup costs several times an int's.
HEADERS: Final = 0  # waiting for a request line and headers
BODY: Final = 1  # headers in, body still arriving
IDLE: Final = 2  # the request is complete (its response may still be running)
UNGUARDED: Final = 3  # refused, closed or upgraded to a WebSocket: nothing to time any more
PART = {HEADERS: "header", BODY: "body"}


def problem_bytes(status: int, title: str, detail: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A complete HTTP/1.1 response: ``status`` with a problem-details body and ``Connection: close``."""
    error = SvcError(detail)
    error.status, error.title = status, title
    body = orjson.dumps(error.problem())
    head = [STATUS_LINE[status]]
    for name, value in default_headers:
        head += [name, b": ", value, b"\r\n"]
    head += [
        b"content-type: application/problem+json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body timeouts and a per-client connection limit.

    Use ``guarded_protocol(settings)``: it returns a subclass with the limits set and its own counts.
    """

    header_timeout: ClassVar[float]
    body_timeout: ClassVar[float]
    clients: ClassVar[ClientConnections]
    refusals: ClassVar[_Throttled]
    timeouts: ClassVar[_Throttled]

    _phase = HEADERS
    _timer: asyncio.TimerHandle | None = None
    _counted: str | None = None  # the client address this connection is counted under
    _begun = False  # whether the parser has seen the start of the request now timed

    # The parser callbacks call the base class directly: they run for every request, and super()
    # costs more than the guard itself.

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        HttpToolsProtocol.connection_made(self, transport)
        client = self.client[0] if self.client else None  # None: a Unix socket, i.e. a local proxy
        if client is not None and self.clients.limit:
            if not self.clients.acquire(client):
                self._phase = UNGUARDED
                self.refusals.log(
                    "event=http_connection_refused client=%s open=%d", client, self.clients.open(client)
                )
                detail = f"more than {self.clients.limit} open connections from your address"
                transport.write(
                    problem_bytes(429, "Too Many Requests", detail, self.server_state.default_headers)
                )
                transport.close()
                return
            self._counted = client
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._unguard()
        HttpToolsProtocol.connection_lost(self, exc)

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase == UNGUARDED:
            return
        if phase == IDLE:
            self._phase = HEADERS  # bytes after a complete request begin the next, empty lines too
        HttpToolsProtocol.data_received(self, data)
        # A request that began in this chunk but is not complete gets its clock now, at its first
        # byte; requests that arrive whole (the usual case) never create a timer.
        phase = self._phase
        if phase < IDLE and self._timer is None and not self.transport.is_closing():
            self._arm(self.header_timeout if phase == HEADERS else self.body_timeout)

    def on_message_begin(self) -> None:
        self._phase, self._begun = HEADERS, True
        HttpToolsProtocol.on_message_begin(self)

    def on_headers_complete(self) -> None:
        if self._timer is not None:
            self._disarm()
        self._phase = BODY
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        if self._timer is not None:
            self._disarm()
        self._phase, self._begun = IDLE, False
        HttpToolsProtocol.on_message_complete(self)

    def handle_websocket_upgrade(self) -> None:
        # The transport moves to a WebSocket protocol, and this one's connection_lost never runs.
        self._unguard()
        HttpToolsProtocol.handle_websocket_upgrade(self)

    def _arm(self, delay: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _unguard(self) -> None:
        self._disarm()
        self._phase = UNGUARDED
        if self._counted is not None:
            self.clients.release(self._counted)
            self._counted = None

    def _timed_out(self) -> None:
        self._timer = None
        phase, cycle = self._phase, self.cycle
        if phase >= IDLE or self.transport.is_closing():
            return
        busy = cycle is not None and not cycle.response_complete
        if self.flow.read_paused or (phase == HEADERS and busy):
            # uvicorn is not reading (a pipelined request waits, or the app has not taken the body
            # yet), or is still answering the previous request: that time is the server's, not the
            # client's, so the clock starts again.
            self._arm(self.header_timeout if phase == HEADERS else self.body_timeout)
            return
        client = self.client[0] if self.client else "-"
        self.timeouts.log("event=http_%s_timeout client=%s", PART[phase], client)
        if phase == HEADERS:
            answer = self._begun  # with no request line begun (an idle connection), nothing to answer
        else:
            answer = cycle is not None and not cycle.response_started and not self.pipeline
            if answer:
                cycle.disconnected = True  # the app's receive() sees http.disconnect, its send() is dropped
                cycle.message_event.set()
        self._unguard()
        if answer:
            limit = self.header_timeout if phase == HEADERS else self.body_timeout
            part = "line and headers" if phase == HEADERS else "body"
            detail = f"the request's {part} did not arrive within {limit:g} seconds"
            self.transport.write(
                problem_bytes(408, "Request Timeout", detail, self.server_state.default_headers)
            )
        self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with ``settings``' HTTP limits; the classes
    returned by separate calls count connections separately."""

    class Guarded(GuardedHttpToolsProtocol):
        header_timeout = settings.http_header_timeout
        body_timeout = settings.http_body_timeout
        clients = ClientConnections(settings.http_max_connections)
        refusals = _Throttled(logging.WARNING)
        timeouts = _Throttled(logging.INFO)

    return Guarded
