"""Request body limit as plain ASGI middleware (no per-request task group, unlike BaseHTTPMiddleware)."""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from svc.errors import PayloadTooLarge, SvcError


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


def body_too_large(limit: int) -> PayloadTooLarge:
    """The 413 problem of a body over ``limit`` bytes."""
    return PayloadTooLarge(f"the body is over {limit} bytes")


def declared_too_large(content_length: bytes | str | None, limit: int) -> bool:
    """True when a Content-Length header is malformed or announces more than ``limit`` bytes."""
    if content_length is None:
        return False
    return not content_length.isdigit() or int(content_length) > limit


async def read_body(receive: Receive, limit: int, content_length: str | None) -> bytes:
    """The whole request body, refused with PayloadTooLarge (413) past ``limit`` bytes, by its header or
    while it streams in; SvcError when the client goes away first."""
    if declared_too_large(content_length, limit):
        raise body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise SvcError("the client went away")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class BodyLimit:
    """Refuse HTTP bodies over ``limit`` bytes with a 413 problem, by header or while streaming (for the
    routes FastAPI parses; the fast lanes read theirs with ``read_body``)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def error(self) -> PayloadTooLarge:
        """The 413 problem."""
        return body_too_large(self.limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and declared_too_large(value, self.limit):
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
