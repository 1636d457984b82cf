"""The two hottest kinds of request answered straight from ASGI, ahead of FastAPI's routing, dependency
injection and exception middlewares (BENCHMARKS.md, "Where the time goes"):

- ``POST /tasks/{name}``: that machinery cost more CPU than the submit itself;
- the task WebSockets: a connection lives for hours, and every middleware and routing frame FastAPI
  keeps alive under it is memory held per subscriber.

The lanes hold no paths of their own: each serves a route of the FastAPI app, found by its name and
matched with the route's own ``matches`` (the same path pattern, parameters and ``root_path`` handling
as FastAPI's router, so a mount under a prefix changes nothing). The routes stay in the app: they
document the operations in OpenAPI and run the same handlers when a request reaches them. Everything
else passes through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from svc.edge.limits import read_body

# (scope, path parameters, request headers, raw body, client host) -> the response
SubmitHandler = Callable[[Scope, dict[str, Any], Headers, bytes, str | None], Awaitable[Response]]
ErrorResponse = Callable[[Exception], Response]
# (scope, receive, send, path parameters) -> None, once the socket is served
SocketHandler = Callable[[Scope, Receive, Send, dict[str, Any]], Awaitable[None]]


def route_named(routes: list[BaseRoute], name: str) -> BaseRoute:
    """The app's route called ``name`` (KeyError when the app declares none)."""
    for route in routes:
        if getattr(route, "name", None) == name:
            return route
    raise KeyError(f"no route named {name!r}")


class FastLanes:
    """Serve one POST route and some WebSocket routes of ``app`` with handlers of their own; pass every
    other request to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        routes: list[BaseRoute],
        submit: tuple[str, SubmitHandler],
        sockets: Mapping[str, SocketHandler],
        error_response: ErrorResponse,
        limit: int,
    ) -> None:
        self.app = app
        self.submit_route = route_named(routes, submit[0])
        self.submit = submit[1]
        self.sockets = [(route_named(routes, name), handler) for name, handler in sockets.items()]
        self.error_response = error_response
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and scope["method"] == "POST":
            match, child = self.submit_route.matches(scope)
            if match is Match.FULL:
                await self._submit(scope, receive, send, child["path_params"])
                return
        elif kind == "websocket":
            for route, handler in self.sockets:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    await handler(scope, receive, send, child["path_params"])
                    return
        await self.app(scope, receive, send)

    async def _submit(self, scope: Scope, receive: Receive, send: Send, params: dict[str, Any]) -> None:
        headers = Headers(scope=scope)
        client = scope.get("client")
        try:
            raw = await read_body(receive, self.limit, headers.get("content-length"))
            response = await self.submit(scope, params, headers, raw, client[0] if client else None)
        except Exception as exc:  # mapped exactly as the app's exception handlers map it
            response = self.error_response(exc)
        await response(scope, receive, send)
