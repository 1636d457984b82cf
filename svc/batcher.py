"""Coalesce concurrent Redis commands into one pipelined round trip: the submits' writes, and the
history reads of many subscribers catching up at once.

Each caller hands over a short list of commands and awaits their replies; while one round trip is in
flight, newcomers queue and go together in the next. Commands of one caller run in order on one
connection, so "record PENDING, then LPUSH" keeps its order. At most ``max_batch`` commands a trip,
and at most ``max_queued`` callers waiting: past that, callers wait for room (backpressure), never
an unbounded queue.

A trip is written as one buffer packed by hiredis (C) and its replies read raw, under one timeout for
the whole trip, on a connection taken from the client's pool for as long as trips follow each other:
redis-py's pipeline packs in Python and adds per-command bookkeeping (a timeout context per reply, a
pool checkout per trip) that cost more than a submit's own work (BENCHMARKS.md). A trip that fails is
not retried (a retry after a write that reached Redis would push a task twice); its callers get the
error, and the API answers 503.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

Command = tuple[Any, ...]
Caller = tuple[list[Command], asyncio.Future[list[Any]]]


class Batcher:
    """Pipelines commands from many concurrent callers over one Redis client."""

    def __init__(self, redis: aioredis.Redis, max_batch: int = 512, max_queued: int = 10_000) -> None:
        self.redis = redis
        self.max_batch = max_batch
        self.max_queued = max_queued
        self.timeout: float | None = redis.connection_pool.connection_kwargs.get("socket_timeout")
        self._queue: deque[Caller] = deque()
        self._in_flight = 0  # callers queued or in a trip: what max_queued bounds
        self._room: deque[asyncio.Future[None]] = deque()  # callers waiting for room, in order
        self._flusher: asyncio.Task[None] | None = None
        self.round_trips = 0

    async def execute(self, *commands: Command) -> list[Any]:
        """Run ``commands`` in order, batched with other callers'; return their replies.

        Raises the first command error (e.g. ``ResponseError``) or the connection error of the trip.
        """
        loop = asyncio.get_running_loop()
        while self._in_flight >= self.max_queued:
            room = loop.create_future()
            self._room.append(room)
            await room
        self._in_flight += 1
        try:
            future: asyncio.Future[list[Any]] = loop.create_future()
            self._queue.append((list(commands), future))
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush())
            return await future
        finally:
            self._in_flight -= 1
            while self._room:
                room = self._room.popleft()
                if not room.done():
                    room.set_result(None)
                    break

    async def _flush(self) -> None:
        pool = self.redis.connection_pool
        connection: AbstractConnection | None = None
        try:
            while self._queue:
                batch = self._next_batch()
                try:
                    if connection is None:
                        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
                    commands = [command for commands, _ in batch for command in commands]
                    replies = await self._round_trip(connection, commands)
                except BaseException as exc:
                    failure = exc if isinstance(exc, Exception) else ConnectionError("flush cancelled")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(failure)
                    if connection is not None:
                        await connection.disconnect()  # its replies may be half read: never reuse it
                    if not isinstance(exc, Exception):
                        raise
                    continue  # the next trip reconnects
                self.round_trips += 1
                _settle(batch, replies)
        finally:
            if connection is not None:
                await pool.release(connection)

    def _next_batch(self) -> list[Caller]:
        batch: list[Caller] = []
        size = 0
        while self._queue and (not batch or size + len(self._queue[0][0]) <= self.max_batch):
            caller = self._queue.popleft()
            batch.append(caller)
            size += len(caller[0])
        return batch

    async def _round_trip(self, connection: AbstractConnection, commands: list[Command]) -> list[Any]:
        """Send ``commands`` in one write and read their replies; an error reply is returned in place."""
        async with asyncio.timeout(self.timeout):
            await connection.send_packed_command(
                b"".join([hiredis.pack_command(command) for command in commands]), check_health=False
            )
            replies: list[Any] = []
            for _ in commands:
                try:  # math.inf: no timeout of its own (the trip's covers it)
                    replies.append(await connection.read_response(timeout=math.inf))
                except ResponseError as error:
                    replies.append(error)
            return replies


def _settle(batch: list[Caller], replies: list[Any]) -> None:
    """Hand each caller its slice of the replies, or its first error reply."""
    position = 0
    for commands, future in batch:
        mine = replies[position : position + len(commands)]
        position += len(commands)
        if future.done():
            continue
        error = next((reply for reply in mine if isinstance(reply, Exception)), None)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(mine)
