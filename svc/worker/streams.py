"""``svc.stream``: a running task's partial output (an LLM's tokens, log lines, rows), written to the
task's stream in batches.

A chunk is encoded at the call (data JSON cannot carry raises there, in the task) and kept in this
process's buffer; a flusher thread writes what waits within ``SVC_STREAM_FLUSH`` seconds, at most
``events.STREAM_BATCH_MAX`` chunks per Redis round trip (svc.wire.events.STREAM_SCRIPT numbers them in
the task's own ``seq``, stores, caps and announces them in one step). Every event svc publishes for a
task first writes that task's waiting chunks, so the order of seqs is the order of the calls and no
chunk comes after the task's terminal event.

Policy when full: past ``SVC_STREAM_BUFFER`` unwritten chunks in the process, ``svc.stream`` writes
them itself, so the task waits for Redis; nothing is dropped. A batch whose reply was lost is sent
again by the client's retries and stored once (the script counts each attempt's stored chunks). A
batch that still fails after the events client's minute of retries is logged
(``event=stream_chunks_lost``) and counted in :attr:`StreamWriter.lost`; the task goes on.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import redis
from celery._state import get_current_task

from svc.redis_clients import PatientCluster
from svc.wire import events
from svc.worker.state import Instrumentation, instrumentation_of

log = logging.getLogger("svc.worker.streams")

NAME = re.compile(rf"^[A-Za-z0-9_.:\-]{{1,{events.STREAM_NAME_MAX}}}$")
NAME_RULE = f"a stream's name is 1 to {events.STREAM_NAME_MAX} of A-Z a-z 0-9 _ . : -"
ENDS_ATTEMPT = events.TERMINAL_STATES | {"RETRY"}
T = TypeVar("T")


@dataclass(slots=True)
class Attempt:
    """One running attempt of one task in this process: its chunks waiting, and how many went out."""

    task_id: str
    producer: str  # the task hash's field counting this attempt's stored chunks
    written: int = 0  # chunks handed to Redis so far: the index of the next batch's first chunk
    waiting: list[bytes] = field(default_factory=list)
    prefixes: dict[str, bytes] = field(default_factory=dict)


class StreamWriter:
    """The chunks of one app's tasks in one process, and the thread that writes them."""

    def __init__(self, state: Instrumentation) -> None:
        self.state = state
        self.pid = os.getpid()
        self.flush_after = state.settings.stream_flush
        self.limit = state.settings.stream_buffer
        self.max_chunk = state.settings.stream_max_chunk
        self.attempts: dict[str, Attempt] = {}
        self.waiting = 0  # chunks appended and not yet taken for writing
        self.lost = 0  # chunks that could not be written (logged)
        self._lock = threading.Lock()  # attempts and waiting
        self._writing = threading.Lock()  # one write at a time: a task's batches keep their order
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def append(self, task_id: str, name: str, data: bytes) -> None:
        """Queue one encoded chunk of ``task_id``'s stream ``name`` (see the module's policy)."""
        with self._lock:
            attempt = self.attempts.get(task_id)
            if attempt is None:
                attempt = self.attempts[task_id] = Attempt(task_id, f"stream:{uuid.uuid4().hex}")
            prefix = attempt.prefixes.get(name)
            if prefix is None:
                prefix = attempt.prefixes[name] = events.stream_prefix(task_id, name)
            attempt.waiting.append(events.stream_body(prefix, data))
            self.waiting += 1
            first, full = self.waiting == 1, self.waiting >= self.limit
        if full:
            self.flush()
        elif first:
            if self._thread is None:
                self._start()
            self._wake.set()

    def before_event(self, task_id: str, state: str) -> None:
        """Write ``task_id``'s waiting chunks before its event ``state`` is published; an event that
        ends the attempt (terminal, RETRY) also forgets it."""
        if task_id not in self.attempts:
            return
        self.flush(task_id)
        if state in ENDS_ATTEMPT:
            with self._lock:
                attempt = self.attempts.get(task_id)
                if attempt is not None and not attempt.waiting:
                    del self.attempts[task_id]

    def flush(self, task_id: str | None = None) -> None:
        """Write the waiting chunks (of one task, or of all), in order, before returning."""
        with self._writing:
            with self._lock:
                chosen = self.attempts.values() if task_id is None else [self.attempts.get(task_id)]
                taken = [(attempt, attempt.waiting) for attempt in chosen if attempt and attempt.waiting]
                for attempt, chunks in taken:
                    attempt.waiting = []
                    self.waiting -= len(chunks)
            limit = events.STREAM_BATCH_MAX
            batches = [
                (attempt, chunks[start : start + limit])
                for attempt, chunks in taken
                for start in range(0, len(chunks), limit)
            ]
            if batches:
                self._write(batches)

    def _write(self, batches: list[tuple[Attempt, list[bytes]]]) -> None:
        """Every batch in one round trip (a pipeline of script calls); then the workflow copies of the
        steps' chunks, in another."""
        settings = self.state.settings
        calls, firsts = [], []
        for attempt, chunks in batches:
            firsts.append(attempt.written)
            calls.append(
                events.stream_args(settings, attempt.task_id, attempt.producer, attempt.written, chunks)
            )
            attempt.written += len(chunks)
        try:
            replies = self._run_scripts(calls)
        except redis.RedisError as exc:
            replies = [exc] * len(calls)
        copies = []
        for (attempt, chunks), first, reply in zip(batches, firsts, replies, strict=True):
            if isinstance(reply, Exception):
                self.lost += len(chunks)
                log.error(
                    "event=stream_chunks_lost task_id=%s chunks=%d error=%r",
                    attempt.task_id,
                    len(chunks),
                    reply,
                )
                continue
            last, stored, workflow_id, step = int(reply[0]), int(reply[1]), reply[2], reply[3]
            if not last:
                log.debug("event=stream_chunks_after_end task_id=%s chunks=%d", attempt.task_id, len(chunks))
            elif workflow_id and step is not None:
                fresh = chunks[len(chunks) - stored :]
                base, workflow = last - len(fresh), workflow_id.decode()
                steps = [events.step_chunk(c, workflow, int(step), base + 1 + i) for i, c in enumerate(fresh)]
                first_fresh = first + len(chunks) - len(fresh)
                copies.append(events.stream_args(settings, workflow, attempt.producer, first_fresh, steps))
        if copies:
            try:
                failed = [reply for reply in self._run_scripts(copies) if isinstance(reply, Exception)]
            except redis.RedisError as exc:
                failed = [exc]
            if failed:
                log.error("event=stream_copy_lost batches=%d error=%r", len(failed), failed[0])

    def _run_scripts(self, calls: list[tuple[list[str], list[str | bytes | int]]]) -> list[Any]:
        """Every call in one pipeline, as EVAL: a Redis restarted under a retried pipeline has no script
        cache, and would answer EVALSHA with NOSCRIPT (Redis caches the script by its hash anyway)."""
        client, _ = self.state.client()
        script = events.stream_script(self.state.settings.layout)

        def run() -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for keys, args in calls:
                # execute_command: redis-py's cluster pipeline has no eval, yet routes an EVAL by its keys
                pipe.execute_command("EVAL", script, len(keys), *keys, *args)
            return list(pipe.execute(raise_on_error=False))

        # A batch is idempotent (its producer's count), so a cluster's pipeline may run again after a
        # failover; one Redis's client retries by itself.
        return client.patiently(run) if isinstance(client, PatientCluster) else run()

    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name="svc-stream-flusher", daemon=True)
        self._thread = thread
        thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            # Let a batch gather: a chunk waits at most flush_after (and the round trip).
            time.sleep(self.flush_after)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # never let the flusher die: the next chunk must still go out
                log.exception("event=stream_flush_failed")


def writer_of(state: Instrumentation) -> StreamWriter:
    """The app's StreamWriter in this process (made anew after a fork: no thread or lock is inherited)."""
    writer = state.stream_writer
    if not isinstance(writer, StreamWriter) or writer.pid != os.getpid():
        writer = StreamWriter(state)
        state.stream_writer = writer
    return writer


def stream(data: Any, name: str = "output") -> None:
    """Append ``data`` (a string or any JSON value) to the running task's stream ``name``.

    Subscribers get it as ``{"op": "stream", "task_id", "seq", "stream", "data"}`` within a few
    milliseconds, numbered in the task's own ``seq``, and always before the task's terminal event.
    Raises RuntimeError outside a running task, ValueError for a bad ``name`` (1 to 100 of
    ``A-Z a-z 0-9 _ . : -``) or a chunk over ``SVC_STREAM_MAX_CHUNK`` bytes of JSON, TypeError for data
    JSON cannot carry. In a task of an app svc does not instrument it does nothing.
    """
    task = _running_task("stream", name)
    state = instrumentation_of(task.app)
    if state is None:
        return
    writer = writer_of(state)
    try:
        encoded = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise TypeError(f"svc.stream() takes a string or a JSON value: {exc}") from None
    if len(encoded) > writer.max_chunk:
        raise ValueError(f"a chunk of {len(encoded)} bytes is over SVC_STREAM_MAX_CHUNK ({writer.max_chunk})")
    writer.append(task.request.id, name, encoded)


def stream_from(chunks: Iterable[T], name: str = "output") -> Iterator[T]:
    """Stream every item of ``chunks`` (an LLM client's stream, a generator of rows) as it comes, and
    yield it on: ``text = "".join(svc.stream_from(tokens))``. Checked as :func:`stream` is, at the call."""
    _running_task("stream_from", name)
    return _passing_through(chunks, name)


def _running_task(caller: str, name: object) -> Any:
    task = get_current_task()
    if task is None or not task.request.id:
        raise RuntimeError(f"svc.{caller}() is called from inside a running task")
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(
            f"a stream's name is 1 to {events.STREAM_NAME_MAX} of A-Z a-z 0-9 _ . : -, not {name!r}"
        )
    return task


def _passing_through(chunks: Iterable[T], name: str) -> Iterator[T]:
    for chunk in chunks:
        stream(chunk, name)
        yield chunk
