"""svc.fanout.eager: a send that needs no waiting runs at once; one that waits finishes later, in order."""

from __future__ import annotations

import asyncio

import pytest

from svc.fanout.eager import run_eagerly
from svc.fanout.outbox import Outbox


async def test_a_coroutine_that_never_waits_ends_at_once() -> None:
    done: list[str] = []

    async def send() -> None:
        done.append("sent")

    assert run_eagerly(send()) is None
    assert done == ["sent"]


async def test_a_coroutine_that_waits_is_finished_by_awaiting_what_is_returned() -> None:
    gate = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def send() -> None:
        steps.append("before")
        steps.append(await gate)
        await asyncio.sleep(0)
        steps.append("after")

    rest = run_eagerly(send())
    assert rest is not None and steps == ["before"]
    finishing = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    assert not finishing.done()
    gate.set_result("opened")
    await asyncio.wait_for(finishing, 5)
    assert steps == ["before", "opened", "after"]


async def test_cancelling_the_rest_cancels_the_coroutine() -> None:
    gate = asyncio.get_running_loop().create_future()
    cleaned: list[bool] = []

    async def send() -> None:
        try:
            await gate
        finally:
            cleaned.append(True)

    rest = run_eagerly(send())
    assert rest is not None
    finishing = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    finishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finishing
    assert cleaned == [True] and gate.cancelled()


async def test_an_error_before_waiting_reaches_the_caller() -> None:
    async def send() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError):
        run_eagerly(send())


async def test_frames_sent_at_once_and_frames_queued_behind_a_waiting_send_keep_their_order() -> None:
    outbox = Outbox(limit=10)
    wire: list[str] = []
    gate = asyncio.get_running_loop().create_future()
    all_sent = asyncio.Event()
    writers: list[asyncio.Task[None]] = []

    async def socket_send(text: str) -> None:
        if text == "2":
            await gate  # the transport's buffer is full for a while
        wire.append(text)
        if len(wire) == 4:
            all_sent.set()

    def send_now(task_id: str | None, seq: int, state: str, text: str) -> bool:
        rest = run_eagerly(socket_send(text))
        if rest is not None:
            outbox.push_unfinished(rest)
        return True

    async def writer() -> None:
        try:
            while (frame := outbox.pop()) is not None:
                if frame.unfinished is not None:
                    await frame.unfinished
                else:
                    await socket_send(frame.text)
        finally:
            outbox.writer_done()

    outbox.send_now = send_now
    outbox.on_queued = lambda: writers.append(asyncio.create_task(writer()))
    outbox.push("t", 1, "PROGRESS", "1")
    assert wire == ["1"] and not writers  # sent by the caller, no writer started
    outbox.push("t", 2, "PROGRESS", "2")  # begins, then has to wait: a writer finishes it
    assert len(writers) == 1 and outbox.busy
    outbox.push("t", 3, "PROGRESS", "3")  # the writer is busy now: queued behind it
    outbox.push("t", 4, "SUCCESS", "4")
    assert wire == ["1"] and len(writers) == 1
    gate.set_result(None)
    await asyncio.wait_for(all_sent.wait(), 5)
    await asyncio.wait_for(writers[0], 5)
    assert wire == ["1", "2", "3", "4"] and not outbox.busy
    outbox.push("t", 5, "PROGRESS", "5")  # idle again: sent at once
    assert wire[-1] == "5" and len(writers) == 1
