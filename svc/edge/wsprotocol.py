"""svc's WebSocket protocol for uvicorn (``uvicorn.Config(ws=...)``, what ``svc api`` runs): uvicorn's
websockets-sansio protocol with the two costs that grow with subscribers taken out of it.

- **Frames encoded once.** The ASGI scope carries the extension ``"svc.frames"``, ``{"write": write}``:
  ``write(frame)`` puts an already-encoded server frame (:func:`text_frame`) on the socket and returns
  True, or returns False and writes nothing when it cannot go at once (the handshake is not done, a
  close was sent, the transport is paused or closing), and the caller sends the frame the ASGI way.
  An event's frame is the same bytes for every subscriber (a server's frames are not masked), so the
  bridge's dispatch encodes it once instead of once per socket. The extension is offered only when no
  WebSocket extension (per-message deflate) was negotiated, which would make each socket's bytes its own.
- **Keepalive without a timer per socket.** One :class:`Keepalive` per event loop pings every
  socket every ``ws_ping_interval`` seconds, a slice of them each second, with one shared frame per
  slice; a socket whose pong has not come ``ws_ping_timeout`` seconds later is failed with 1011, as
  uvicorn's own keepalive does. uvicorn's two timers per socket (ping, pong deadline) cost a loop
  callback and a heap entry each per ping: with 10,000 idle sockets, that was most of the API's idle CPU
  (BENCHMARKS.md, "Idle").

Everything else (handshake, limits, close codes, the 1012 of uvicorn's own shutdown) is uvicorn's.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame
from websockets.http11 import Request
from websockets.protocol import Protocol

from svc.flag import Flag, WaitQueue

EXTENSION = "svc.frames"
TICK = 1.0  # seconds between the keepalive's slices
_HEADER_7BIT, _HEADER_16BIT, _HEADER_64BIT = 126, 1 << 16, 1 << 63


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented server text frame holding ``payload`` (UTF-8)."""
    size = len(payload)
    if size < _HEADER_7BIT:
        return bytes((0x81, size)) + payload
    if size < _HEADER_16BIT:
        return b"\x81\x7e" + struct.pack("!H", size) + payload
    return b"\x81\x7f" + struct.pack("!Q", size) + payload


class FrameCache:
    """The frame of the last text encoded: the bridge hands one event's text (the same ``str`` object)
    to every subscriber, so consecutive calls with it encode it once."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: tuple[str | None, bytes] = (None, b"")  # one tuple: replaced whole, never torn

    def frame(self, text: str) -> bytes:
        """``text``'s frame (from the cache when ``text`` is the very string encoded last)."""
        last = self._last
        if last[0] is text:
            return last[1]
        frame = text_frame(text.encode())
        self._last = (text, frame)
        return frame


class Keepalive:
    """Pings for every open socket of one event loop, from one timer: each TICK, the sockets of one
    slot (of ``interval / TICK`` slots) get a ping, and those pinged ``timeout`` seconds ago that have not
    answered are failed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float, timeout: float | None) -> None:
        self.loop = loop
        self.slots: list[set[SvcWebSocketProtocol]] = [set() for _ in range(max(1, round(interval / TICK)))]
        self.deadline_ticks = max(1, math.ceil(timeout / TICK)) if timeout is not None else None
        self.awaiting: dict[int, list[SvcWebSocketProtocol]] = {}  # tick -> sockets pinged then
        self.tick = 0
        self.members = 0
        self.timer: asyncio.TimerHandle | None = None

    def add(self, protocol: SvcWebSocketProtocol) -> None:
        """Ping ``protocol`` from one interval from now on."""
        slot = self.tick % len(self.slots)
        self.slots[slot].add(protocol)
        protocol.keepalive_slot = slot
        self.members += 1
        if self.timer is None:
            self.timer = self.loop.call_later(TICK, self._on_tick)

    def remove(self, protocol: SvcWebSocketProtocol) -> None:
        """Stop pinging ``protocol``."""
        slot = protocol.keepalive_slot
        if slot is not None:
            protocol.keepalive_slot = None
            self.slots[slot].discard(protocol)
            self.members -= 1

    def _on_tick(self) -> None:
        self.tick += 1
        tick = self.tick
        if self.deadline_ticks is not None:
            payload = _payload(tick - self.deadline_ticks)
            for protocol in self.awaiting.pop(tick - self.deadline_ticks, ()):
                if protocol.pending_ping_payload == payload and protocol.keepalive_slot is not None:
                    protocol.keepalive_timeout()
        payload = _payload(tick)
        frame = b"\x89\x04" + payload
        pinged = []
        for protocol in tuple(self.slots[tick % len(self.slots)]):
            if (
                protocol.pending_ping_payload is None
                and not protocol.close_sent
                and not protocol.transport.is_closing()
            ):
                protocol.pending_ping_payload = payload
                protocol.ping_sent_at = self.loop.time()
                protocol.transport.write(frame)
                pinged.append(protocol)
        if pinged and self.deadline_ticks is not None:
            self.awaiting[tick] = pinged
        self.timer = self.loop.call_later(TICK, self._on_tick) if self.members or self.awaiting else None


def _payload(tick: int) -> bytes:
    return struct.pack("!I", tick & 0xFFFFFFFF)


_keepalives: dict[asyncio.AbstractEventLoop, Keepalive] = {}


def keepalive_for(loop: asyncio.AbstractEventLoop, interval: float, timeout: float | None) -> Keepalive:
    """The event loop's Keepalive (made on first use; one per loop, for the server's settings)."""
    keepalive = _keepalives.get(loop)
    if keepalive is None:
        for stale in [other for other in _keepalives if other.is_closed()]:
            del _keepalives[stale]
        keepalive = _keepalives[loop] = Keepalive(loop, interval, timeout)
    return keepalive


class SvcWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with frames written as given and a shared keepalive (above)."""

    keepalive_slot: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The same API as uvicorn's asyncio.Queue and asyncio.Event, about 3 KiB less per socket.
        self.queue = WaitQueue()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code != 101:
            return
        if not self.conn.extensions:
            # The app's task was created but has not run yet: it sees the extension.
            self.scope["extensions"][EXTENSION] = {"write": self.write_frame}
        if not self.conn.reader.buffer:
            # websockets' server parser keeps the handshake's Request (about 2.5 KiB of headers) in
            # its frame for the socket's whole life, then parses frames with the base parser: start
            # that one directly. Nothing of a frame has been read yet (the buffer is empty; a client
            # sends none before the 101 it waits for), so both parsers are at the same point.
            self.conn.parser = Protocol.parse(self.conn)
            next(self.conn.parser)

    def write_frame(self, frame: bytes) -> bool:
        """Write ``frame`` (complete, unmasked) if it can go at once; else write nothing, return False."""
        if (
            self.close_sent
            or self.disconnected
            or not self.handshake_complete
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(frame)
        return True

    def start_keepalive(self) -> None:
        # Called once the handshake's response is written: the request and the response are not
        # read again, and were about 2.5 KiB of headers per socket.
        self.__dict__.pop("request", None)
        self.__dict__.pop("response", None)
        if self.ping_interval is not None and self.ping_interval > 0:
            keepalive_for(self.loop, self.ping_interval, self.ping_timeout).add(self)

    def stop_keepalive(self) -> None:
        keepalive = _keepalives.get(self.loop) if self.keepalive_slot is not None else None
        if keepalive is not None:
            keepalive.remove(self)
        self.pending_ping_payload = None

    def handle_pong(self, event: Frame) -> None:
        if self.pending_ping_payload is not None and bytes(event.data) == self.pending_ping_payload:
            self.last_ping_rtt = self.loop.time() - self.ping_sent_at
            self.pending_ping_payload = None

    def keepalive_timeout(self) -> None:
        self.stop_keepalive()
        super().keepalive_timeout()


FrameWriter = Callable[[bytes], bool]


def frame_writer(scope: Any) -> FrameWriter | None:
    """The ``write`` of the scope's ``"svc.frames"`` extension, or None when the server offers none
    (any ASGI server but ``svc api``'s, or a socket with per-message deflate)."""
    extension = (scope.get("extensions") or {}).get(EXTENSION)
    write = None if extension is None else extension.get("write")
    return write if callable(write) else None
