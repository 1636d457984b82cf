"""Coalesce concurrent Redis writes into one pipelined round trip.

Each caller hands over a short list of commands and awaits their replies; while one round trip is in
flight, newcomers queue and go together in the next. Commands of one caller run in order on one
connection, so "record PENDING, then LPUSH" keeps its order. At most ``max_batch`` commands a trip,
and at most ``max_queued`` callers waiting: past that, callers wait for room (backpressure), never
an unbounded queue.

A trip is written as one buffer packed by hiredis (C) on a connection of the client's pool and its
replies read raw: redis-py's pipeline packs in Python and adds per-command bookkeeping that cost more
than a submit's own work (BENCHMARKS.md). A trip that fails is not retried (a retry after a write that
reached Redis would push a task twice); its callers get the error, and the API answers 503.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

Command = tuple[Any, ...]


class Batcher:
    """Pipelines commands from many concurrent callers over one Redis client."""

    def __init__(self, redis: aioredis.Redis, max_batch: int = 512, max_queued: int = 10_000) -> None:
        self.redis = redis
        self.max_batch = max_batch
        self._queue: deque[tuple[list[Command], asyncio.Future[list[Any]]]] = deque()
        self._room = asyncio.Semaphore(max_queued)
        self._flusher: asyncio.Task[None] | None = None
        self.round_trips = 0

    async def execute(self, *commands: Command) -> list[Any]:
        """Run ``commands`` in order, batched with other callers'; return their replies.

        Raises the first command error (e.g. ``ResponseError``) or the connection error of the trip.
        """
        async with self._room:
            future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._queue.append((list(commands), future))
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush())
            return await future

    async def _flush(self) -> None:
        while self._queue:
            batch: list[tuple[list[Command], asyncio.Future[list[Any]]]] = []
            size = 0
            while self._queue and (not batch or size + len(self._queue[0][0]) <= self.max_batch):
                commands, future = self._queue.popleft()
                batch.append((commands, future))
                size += len(commands)
            try:
                replies = await self._round_trip([command for commands, _ in batch for command in commands])
            except BaseException as exc:
                failure = exc if isinstance(exc, Exception) else ConnectionError("flush cancelled")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(failure)
                if not isinstance(exc, Exception):
                    raise
                continue
            self.round_trips += 1
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

    async def _round_trip(self, commands: list[Command]) -> list[Any]:
        """Send ``commands`` in one write and read their replies; an error reply is returned in place."""
        pool = self.redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(
                b"".join(hiredis.pack_command(command) for command in commands), check_health=False
            )
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as error:
                    replies.append(error)
            return replies
        except BaseException:
            await connection.disconnect()  # its replies may be half read: never reuse it
            raise
        finally:
            await pool.release(connection)
