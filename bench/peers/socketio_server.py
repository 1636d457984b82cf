"""python-socketio doing svc's task-watching job, for bench.fanout to measure beside svc.

    python -m bench.peers.socketio_server --port P --redis URL --namespace NS

``socketio.AsyncServer(async_mode="asgi", client_manager=socketio.AsyncRedisManager(URL))`` wrapped
in ``socketio.ASGIApp`` (at ``/socket.io/``), written the way a user of python-socketio does this:

- a client connects (Engine.IO v4; bench.fanout's clients go straight to the WebSocket transport) and
  emits ``watch`` with a task id; the server enters its sid in the room named after the task, then
  emits the task's recorded history to that sid (``event``, one per member of ``{ns}:task:{id}:history``);
- one relay task in the server process psubscribes to ``{ns}:task:*`` (svc's task channels) and calls
  ``sio.emit("event", event, room=task_id)`` for each message. That goes through the Redis manager as
  it would with several server processes: python-socketio 5 delivers it to this process's members of
  the room at once and publishes it on the manager's own channel for the other processes (this one
  reads its copy back and drops it). With several processes a user would run the relay once, in one of
  them or with a write-only ``AsyncRedisManager`` in a process of its own;
- after the terminal event (SUCCESS, FAILURE or REVOKED) the *client* disconnects itself, as a
  socket.io client does when it has what it came for (``socket.disconnect()``: a ``41`` packet, then
  the WebSocket's close). python-socketio has no call that disconnects a room's members, and
  ``manager.get_participants`` sees only this process's, so a server-side close would not carry over
  to several processes; the server drops the sid from its rooms when it disconnects.

Like the ceiling, it keeps none of svc's guarantees (no token check, no seq dedupe where the history
meets the live events). History reads share the ceiling's pool (64 connections, waited for); the
manager's own client gets one setting, ``redis_options={"max_connections": 2**31}``: python-socketio
makes it with ``Redis.from_url``, whose pool redis-py 8 caps at 100 and refuses past that, which made
the manager's publishes fail under a burst of watches.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis
import socketio

from bench.peers import Options, history, history_client, parse_options, run
from svc.wire import events


def build(options: Options) -> Any:
    """The ASGI app: python-socketio on the Redis manager, with the ``watch`` handler and the relay."""
    # The manager makes its client with Redis.from_url(url, **redis_options): redis-py 8 caps that
    # pool at 100 connections and raises past it, and every emit publishes, so a burst of watches
    # failed with "Too many connections". Its cap back to redis-py's default before 8.0 (2**31).
    manager = socketio.AsyncRedisManager(options.redis_url, redis_options={"max_connections": 2**31})
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager)
    redis = history_client(options.redis_url)
    pubsub = aioredis.Redis.from_url(options.redis_url).pubsub()

    async def watch(sid: str, task_id: str) -> None:
        """Put the client in its task's room, then send it the task's history."""
        await sio.enter_room(sid, task_id)
        for raw in await history(redis, options.namespace, task_id):
            await sio.emit("event", orjson.loads(raw), to=sid)

    async def relay() -> None:
        """Every event on a task channel, emitted to the task's room."""
        async for message in pubsub.listen():
            if message["type"] != "pmessage":
                continue
            task_id = events.channel_task_id(options.namespace, message["channel"].decode())
            if task_id is not None:
                await sio.emit("event", orjson.loads(message["data"]), room=task_id)

    async def start() -> None:
        await pubsub.psubscribe(events.task_channel(options.namespace, "*"))
        sio.start_background_task(relay)

    sio.on("watch", watch)
    return socketio.ASGIApp(sio, on_startup=start)


def main() -> None:
    options = parse_options(__doc__.splitlines()[0])
    run(build(options), options.port)


if __name__ == "__main__":
    main()
