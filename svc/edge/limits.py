"""Request body limit as plain ASGI middleware (no per-request task group, unlike BaseHTTPMiddleware)."""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from svc.errors import PayloadTooLarge


def json_depth(value: object) -> int:
    """How deeply arrays and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def arguments_too_deep(raw: bytes, args: list[object], kwargs: dict[str, object], limit: int) -> bool:
    """Whether ``args`` or ``kwargs``, parsed from the JSON object ``raw``, nest deeper than ``limit``.

    Counting ``raw``'s brackets (in C) settles almost every body without walking it: an argument
    inside the object cannot nest deeper than the brackets the text opens, less the object's own.
    """
    if raw.count(b"[") + raw.count(b"{") - 1 <= limit:
        return False
    return json_depth([args, kwargs]) - 1 > limit


class BodyLimit:
    """Refuse HTTP bodies over ``limit`` bytes with a 413 problem, by header or while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def error(self) -> PayloadTooLarge:
        """The 413 problem."""
        return PayloadTooLarge(f"the body is over {self.limit} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                body = orjson.dumps(self.error().problem())
                headers = [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", b"%d" % len(body)),
                ]
                await send({"type": "http.response.start", "status": 413, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise self.error()  # turned into the 413 problem by the app's SvcError handler
            return message

        await self.app(scope, counting_receive, send)
