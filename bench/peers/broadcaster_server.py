"""encode/broadcaster doing svc's task-watching job, for bench.fanout to measure beside svc.

    python -m bench.peers.broadcaster_server --port P --redis URL --namespace NS

``Broadcast("redis://…")`` and a Starlette WebSocket endpoint at ``/ws/tasks/{id}``, in the library's
documented usage (its README's chat example): each socket runs a receiver (which only notices the
client leaving) beside a sender that holds ``async with broadcast.subscribe(channel) as subscriber``
on the task's channel. The sender sends the task's recorded history (``{ns}:task:{id}:history``), then
each message of the subscription, and closes with 1000 after the terminal event (SUCCESS, FAILURE or
REVOKED). Subscribing comes before the history read, so nothing published in between is missed by
the endpoint (it may come twice; like the ceiling it keeps none of svc's guarantees).

The library runs as shipped (broadcaster 0.3.1): its Redis backend shares one pub/sub connection,
every subscriber gets an unbounded queue, and the listener awaits each queue in turn. Its subscribe
races: concurrent first subscribers of a channel each SUBSCRIBE and overwrite each other's queue
(the losers get nothing, and their unsubscribe raises KeyError), and the backend's listener is woken
(``_ready.set()``) *before* its ``PubSub.subscribe`` records the channel. With redis-py 8 (installed:
8.1.0) that call yields to the loop first, so the listener finds nothing subscribed, its ``listen()``
returns at once, ``_ready`` is cleared, and it reads nothing more until a later subscribe of a channel
new to the ``Broadcast`` wakes it while some channel is recorded. (On one subscriber and one publish,
redis-py 5.0.8, 5.2.1, 6.4.0, 7.0.1, 7.1.0 and 7.4.1 deliver it; 8.0.0 and 8.1.0 lose it.) That is an
incompatibility with the installed redis-py with no documented workaround (svc pins redis 8), so it
is measured as it is: the frames it loses show in bench.fanout's "got terminal" column, and nothing
here works around them.

One change from the README, forced by the installed Starlette: it starts the broadcast with
``Starlette(on_startup=[broadcast.connect], on_shutdown=[broadcast.disconnect])``, and Starlette 1.0
removed those arguments. Starlette's replacement is a ``lifespan`` context manager, here
``async with broadcast:`` (``Broadcast`` is an async context manager that connects and disconnects,
as broadcaster's own tests use it). History reads share the ceiling's pool (64 connections, waited for).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from bench.peers import Options, history, history_client, parse_options, run
from svc.wire import events


def build(options: Options) -> Starlette:
    """The Starlette app: ``/ws/tasks/{id}`` over one ``Broadcast`` on svc's Redis."""
    broadcast = Broadcast(options.redis_url)
    redis = history_client(options.redis_url)

    async def send_task(websocket: WebSocket, task_id: str) -> None:
        """The history, then the channel's messages until the terminal event; then a 1000 close."""
        channel = events.task_channel(options.namespace, task_id)
        async with broadcast.subscribe(channel=channel) as subscriber:
            for raw in await history(redis, options.namespace, task_id):
                await websocket.send_text(raw.decode())
                if events.parse(raw)["state"] in events.TERMINAL_STATES:
                    await websocket.close(1000)
                    return
            # broadcaster 0.3.1 annotates Subscriber.__aiter__ as returning "AsyncGenerator | None"
            async for event in subscriber:  # type: ignore[union-attr]
                if event is None:  # never yielded (the end of a subscription stops the loop), but typed so
                    return
                await websocket.send_text(event.message)
                if events.parse(event.message)["state"] in events.TERMINAL_STATES:
                    await websocket.close(1000)
                    return

    async def task_socket(websocket: WebSocket) -> None:
        """Run the sender and a receiver together; whichever ends first (the terminal event, or the
        client leaving) cancels the other."""
        await websocket.accept()
        task_id = websocket.path_params["task_id"]
        async with anyio.create_task_group() as group:

            async def receive() -> None:
                async for _ in websocket.iter_text():
                    pass
                group.cancel_scope.cancel()

            group.start_soon(receive)
            await send_task(websocket, task_id)
            group.cancel_scope.cancel()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with broadcast:
            yield
        await redis.aclose()

    return Starlette(routes=[WebSocketRoute("/ws/tasks/{task_id}", task_socket)], lifespan=lifespan)


def main() -> None:
    options = parse_options(__doc__.splitlines()[0])
    run(build(options), options.port)


if __name__ == "__main__":
    main()
