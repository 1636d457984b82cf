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

On a Redis Cluster, :class:`ClusterBatcher` splits each caller's commands by the primary that owns
their key's slot and runs each part on that node's Batcher (so a caller's commands keep their order on
each node). A command a node answers ``MOVED`` (its slot has another owner since: a failover or a
migration) was not run there: the slot map is reloaded and that command alone sent to the new owner,
once; ``ASK`` (a slot being migrated) sends it to the node named, after ``ASKING``.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import AskError, MovedError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from svc.topology import Address, Topology

Command = tuple[Any, ...]
Caller = tuple[list[Command], asyncio.Future[list[Any]], bool]  # commands, replies, errors in place


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
        return await self._execute(commands, False)

    async def execute_each(self, *commands: Command) -> list[Any]:
        """As :meth:`execute`, with a command's error reply (``ResponseError``) returned in its place
        instead of raised; a connection error of the trip is still raised."""
        return await self._execute(commands, True)

    async def _execute(self, commands: tuple[Command, ...], errors_in_place: bool) -> list[Any]:
        loop = asyncio.get_running_loop()
        while self._in_flight >= self.max_queued:
            room = loop.create_future()
            self._room.append(room)
            await room
        self._in_flight += 1
        try:
            future: asyncio.Future[list[Any]] = loop.create_future()
            self._queue.append((list(commands), future, errors_in_place))
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
                    commands = [command for commands, _, _ in batch for command in commands]
                    replies = await self._round_trip(connection, commands)
                except BaseException as exc:
                    failure = exc if isinstance(exc, Exception) else ConnectionError("flush cancelled")
                    for _, future, _ in batch:
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
    for commands, future, errors_in_place in batch:
        mine = replies[position : position + len(commands)]
        position += len(commands)
        if future.done():
            continue
        error = (
            None if errors_in_place else next((reply for reply in mine if isinstance(reply, Exception)), None)
        )
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(mine)


def routing_key(command: Command) -> str | bytes:
    """The key a command's node is chosen by: an EVAL's or EVALSHA's first key, else the first argument."""
    if str(command[0]).upper() in ("EVAL", "EVALSHA") and int(command[2]) > 0:
        return command[3]  # type: ignore[no-any-return]
    return command[1]  # type: ignore[no-any-return]


class ClusterBatcher:
    """:class:`Batcher`'s ``execute`` on a Redis Cluster: each command runs on the primary of its slot."""

    def __init__(self, topology: Topology, max_batch: int = 512, max_queued: int = 10_000) -> None:
        self.topology = topology
        self.max_batch = max_batch
        self.max_queued = max_queued
        self._batchers: dict[Address, Batcher] = {}

    @property
    def round_trips(self) -> int:
        """Round trips made so far, over every node."""
        return sum(batcher.round_trips for batcher in self._batchers.values())

    def _batcher(self, address: Address) -> Batcher:
        made = self._batchers.get(address)
        if made is None:
            client = self.topology.client(address)
            made = self._batchers[address] = Batcher(client, self.max_batch, self.max_queued)
        return made

    async def execute(self, *commands: Command) -> list[Any]:
        """Run ``commands`` (each on the primary of its key's slot); their replies, in order. Raises as
        :meth:`Batcher.execute` does; a lost node's error also has the slot map reloaded for the next
        callers."""
        groups: dict[Address, list[int]] = {}
        for index, command in enumerate(commands):
            groups.setdefault(self.topology.owner(routing_key(command)), []).append(index)
        replies: list[Any] = [None] * len(commands)
        parts = list(groups.items())
        try:
            outcomes = await asyncio.gather(
                *(
                    self._batcher(address).execute_each(*(commands[i] for i in indices))
                    for address, indices in parts
                )
            )
        except (RedisConnectionError, RedisTimeoutError, OSError):
            await self.topology.refresh()
            raise
        for (_, indices), outcome in zip(parts, outcomes, strict=True):
            for index, reply in zip(indices, outcome, strict=True):
                replies[index] = reply
        for index, reply in enumerate(replies):
            if isinstance(reply, ResponseError):
                replies[index] = await self._redirected(commands[index], reply)
        error = next((reply for reply in replies if isinstance(reply, Exception)), None)
        if error is not None:
            raise error
        return replies

    async def _redirected(self, command: Command, error: ResponseError) -> Any:
        """The reply of a command answered MOVED or ASK, sent where Redis said (once); other errors as
        they are (redis-py parses those replies into MovedError and AskError, a MovedError being one)."""
        if not isinstance(error, AskError):
            return error
        address = (str(error.host), int(error.port))
        if isinstance(error, MovedError):
            await self.topology.refresh()  # for the callers that come next
            (reply,) = await self._batcher(address).execute_each(command)
            return reply
        _, reply = await self._batcher(address).execute_each(("ASKING",), command)
        return reply


AnyBatcher = Batcher | ClusterBatcher  # what a caller of ``execute`` may hold
