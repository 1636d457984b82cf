"""The fan-out ceiling: about the least a Python server can do to deliver svc's events to WebSockets.

    python -m bench.ceiling --port P --redis URL --namespace NS

It serves ``/ws/tasks/{id}`` the way bench.fanout's clients use it and nothing else: the handshake,
the task's recorded history once, then every event published on the task's channel, each event's
WebSocket frame encoded once and written to every watching socket's transport, and a close after the
terminal event. One pub/sub connection for all channels, uvloop, no framework. It keeps none of svc's
guarantees (no token, origin or frame-size check, no seq dedupe across the history/live seam, no
bounded queue, no pings), which is why it is a yardstick and not a server: bench.fanout measures svc
against it in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import struct
from collections import defaultdict
from typing import Any

import orjson
import redis.asyncio as aioredis
import uvloop

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TERMINAL = (b'"state":"SUCCESS"', b'"state":"FAILURE"', b'"state":"REVOKED"')
CLOSE_DONE = b"\x88\x02\x03\xe8"  # a close frame, code 1000


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented server text frame."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return b"\x81\x7e" + struct.pack("!H", size) + payload
    return b"\x81\x7f" + struct.pack("!Q", size) + payload


class Ceiling:
    """Watchers per channel, one pub/sub connection, frames written straight to transports."""

    def __init__(self, redis: aioredis.Redis, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace
        self.watchers: defaultdict[bytes, set[asyncio.Transport]] = defaultdict(set)
        self.pubsub = redis.pubsub()

    async def watch(self, transport: asyncio.Transport, task_id: str) -> None:
        """Send the history, then add the socket to its channel's watchers."""
        channel = f"{self.namespace}:task:{task_id}".encode()
        new = channel not in self.watchers
        self.watchers[channel].add(transport)
        if new:
            await self.pubsub.subscribe(channel)
        for event in await self.redis.zrange(f"{self.namespace}:task:{task_id}:history", 0, -1):
            transport.write(text_frame(event))

    def forget(self, transport: asyncio.Transport, task_id: str) -> None:
        """A socket that went away before its task ended."""
        self.watchers.get(f"{self.namespace}:task:{task_id}".encode(), set()).discard(transport)

    async def listen(self) -> None:
        """Fan every published event out: encoded once, written to each watcher."""
        connection = self.pubsub.connection  # made by the first SUBSCRIBE, before this starts
        if connection is None:
            raise RuntimeError("listen() before any SUBSCRIBE")
        while True:
            reply: Any = await connection.read_response(push_request=True)
            if not isinstance(reply, list) or reply[0] != b"message":
                continue
            channel, data = reply[1], reply[2]
            frame = text_frame(data)
            terminal = any(marker in data for marker in TERMINAL)
            watchers = self.watchers.pop(channel, set()) if terminal else self.watchers.get(channel, ())
            for transport in watchers:
                transport.write(frame)
                if terminal:
                    transport.write(CLOSE_DONE)
                    transport.close()


class Connection(asyncio.Protocol):
    """One client: the HTTP upgrade, then nothing but the close it may send."""

    def __init__(self, ceiling: Ceiling) -> None:
        self.ceiling = ceiling
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.task_id: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport

    def data_received(self, data: bytes) -> None:
        if self.upgraded or self.transport is None:
            return  # client frames (its close) need no answer here: the server closes first
        self.buffer += data
        head, found, _ = self.buffer.partition(b"\r\n\r\n")
        if not found:
            return
        request_line, *header_lines = head.split(b"\r\n")
        path = request_line.split(b" ")[1].decode()
        headers = dict(line.split(b": ", 1) for line in header_lines if b": " in line)
        key = headers.get(b"Sec-WebSocket-Key") or headers.get(b"sec-websocket-key") or b""
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.upgraded = True
        self.task_id = path.split("?", 1)[0].removeprefix("/ws/tasks/")
        asyncio.get_running_loop().create_task(self.ceiling.watch(self.transport, self.task_id))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None and self.task_id is not None:
            self.ceiling.forget(self.transport, self.task_id)


async def serve(port: int, redis_url: str, namespace: str) -> None:
    """Serve until killed."""
    # A quiet channel is no error (no socket timeout); history reads wait for one of 64 connections.
    pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=64, socket_timeout=None)
    redis = aioredis.Redis(connection_pool=pool)
    ceiling = Ceiling(redis, namespace)
    await ceiling.pubsub.subscribe(f"{namespace}:ceiling:ready")
    listener = asyncio.create_task(ceiling.listen())
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(ceiling), "127.0.0.1", port, backlog=4096)
    print(orjson.dumps({"listening": port}).decode(), flush=True)
    async with server:
        await asyncio.gather(server.serve_forever(), listener)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--namespace", required=True)
    options = parser.parse_args()
    uvloop.run(serve(options.port, options.redis, options.namespace))


if __name__ == "__main__":
    main()
