"""The two hottest kinds of request answered straight from ASGI, ahead of FastAPI's routing, dependency
injection and exception middlewares (BENCHMARKS.md, "Where the time goes"):

- ``POST /tasks/{name}``: that machinery cost more CPU than the submit itself;
- the task WebSockets: a connection lives for hours, and every middleware and routing frame FastAPI
  keeps alive under it is memory held per subscriber.

The FastAPI routes of the same paths stay: they document the operations and run the same handlers if
this layer is not installed. Everything else passes through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from svc.errors import PayloadTooLarge, SvcError

PREFIX = "/tasks/"
# (app scope, task name, request headers, raw body, client host) -> the response
Handler = Callable[[Scope, str, Headers, bytes, str | None], Awaitable[Response]]
ErrorResponse = Callable[[Exception], Response]
# (scope, receive, send) -> whether it was a WebSocket route it serves (and has served)
WebSocketHandler = Callable[[Scope, Receive, Send], Awaitable[bool]]


class SubmitFastPath:
    """Serve ``POST /tasks/{name}`` with ``handler``; pass every other request to ``app``."""

    def __init__(self, app: ASGIApp, handler: Handler, error_response: ErrorResponse, limit: int) -> None:
        self.app = app
        self.handler = handler
        self.error_response = error_response
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        name = path[len(PREFIX) :]
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not path.startswith(PREFIX)
            or not name
            or "/" in name
        ):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        client = scope.get("client")
        try:
            raw = await self._body(headers, receive)
            response = await self.handler(scope, name, headers, raw, client[0] if client else None)
        except Exception as exc:  # mapped exactly as the app's exception handlers map it
            response = self.error_response(exc)
        await response(scope, receive, send)

    async def _body(self, headers: Headers, receive: Receive) -> bytes:
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            raise PayloadTooLarge(f"the body is over {self.limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise SvcError("the client went away")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise PayloadTooLarge(f"the body is over {self.limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class WebSocketFastPath:
    """Offer every WebSocket connection to ``handler``; those it does not serve go to ``app``."""

    def __init__(self, app: ASGIApp, handler: WebSocketHandler) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or not await self.handler(scope, receive, send):
            await self.app(scope, receive, send)
