"""svc api's WebSocket protocol (svc/edge/wsprotocol.py): frames encoded once and written as given, and
one keepalive timer for every socket that still drops a dead client and keeps a live one."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import uuid
from collections.abc import Iterator

import httpx
import pytest
import websockets
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from svc.edge.wsprotocol import FrameCache, text_frame
from tests.conftest import Service, start_api

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_a_text_frame_is_the_bytes_websockets_would_write(size: int) -> None:
    payload = ("é" * size).encode()[:size]
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


def test_one_event_text_is_encoded_once_for_all_its_subscribers() -> None:
    cache = FrameCache()
    text = '{"seq": 1, "state": "STARTED"}'
    first = cache.frame(text)
    assert cache.frame(text) is first  # the same str: the same bytes, not encoded again
    other = "".join(['{"seq": 1, ', '"state": "STARTED"}'])  # equal, but another string
    again = cache.frame(other)
    assert again == first and again is not first


@pytest.fixture(scope="module")
def pinging_api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """An `svc api` that pings every second and drops a client whose pong is a second late."""
    service = start_api(
        redis_url,
        tmp_path_factory.mktemp("pings"),
        name="api-pings",
        SVC_WS_PING_INTERVAL="1",
        SVC_WS_PING_TIMEOUT="1",
    )
    yield service
    service.stop()


async def held_task(api: Service) -> tuple[str, str]:
    """A task sent to a queue no worker consumes: its socket stays open, quiet but for pings."""
    async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
        response = await http.post(
            "/tasks/add", json={"args": [1, 2], "options": {"queue": f"held-{uuid.uuid4().hex[:8]}"}}
        )
    response.raise_for_status()
    body = response.json()
    return body["task_id"], body["token"]


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    if size == 126:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", await reader.readexactly(8))[0]
    return head[0] & 0x0F, await reader.readexactly(size)


async def test_a_client_that_never_answers_a_ping_is_dropped_and_one_that_does_stays(
    pinging_api: Service,
) -> None:
    task_id, token = await held_task(pinging_api)
    path = f"/ws/tasks/{task_id}?token={token}"
    live = await websockets.connect(f"{pinging_api.ws_url}{path}", open_timeout=10)  # answers pings
    reader, writer = await asyncio.open_connection("127.0.0.1", pinging_api.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    opcodes: list[int] = []
    async with asyncio.timeout(30):
        while True:  # PENDING from the history, pings never answered, then the server's close
            opcode, payload = await read_frame(reader)
            opcodes.append(opcode)
            if opcode == Opcode.CLOSE:
                break
    assert opcodes[0] == Opcode.TEXT and Opcode.PING in opcodes
    assert struct.unpack("!H", payload[:2])[0] == 1011
    async with asyncio.timeout(10):
        assert await reader.read() == b""  # and the connection is gone
    writer.close()
    # The live client was pinged as often, answered, and is still watching.
    assert live.state is State.OPEN
    async with asyncio.timeout(10):
        await (await live.ping())
    await live.close()
