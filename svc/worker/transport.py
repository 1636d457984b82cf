"""kombu's Redis transport, made to survive any message: what cannot become a message is parked, not fatal.

Stock kombu decodes each ``BRPOP`` reply inside the worker's event loop, so one entry on the queue that
is not JSON, not a JSON object, lacks ``properties``/``delivery_tag``/``delivery_info`` or has a body that
its ``body_encoding`` cannot decode raises out of the loop: the worker dies ("Unrecoverable error"), or,
for a ``KeyError`` (which kombu counts as a connection error), reconnects and loses the message.

:class:`Transport` (selected with ``broker_transport = "svc.worker.transport:Transport"``) checks each
reply before kombu builds a message from it. One that fails is *parked*: pushed, wrapped, onto the
namespace's dead-letter list, logged once (``event=message_parked queue=… reason=… task_id=…``) and,
when its headers name a task id, handed to the transport's ``on_parked`` hook (svc's consumer step
records a FAILURE for that task). Then the next message is served. Everything else is kombu's own code.

The dead-letter list is ``events.dead_letter_key(namespace)`` in the broker's Redis (``LPUSH`` then
``LTRIM`` to ``events.DEAD_LETTER_MAX``: newest first). Each entry is one JSON object::

    {"queue": "svc", "reason": "not_json", "detail": "Expecting value: line 1 column 1 (char 0)",
     "task_id": null, "task": null, "ts": 1764000000.123, "raw": "…", "raw_encoding": "utf-8"}

``reason`` is a short code (see ``REASONS``); ``raw`` is the message exactly as it was on the queue, as
text, or base64 when ``raw_encoding`` is ``"base64"`` (bytes that are not UTF-8). An operator can fix a
``raw`` and ``LPUSH`` it back onto ``queue``. The namespace comes from the transport option
``svc_namespace`` (kombu ignores options it does not know; svc's Channel reads this one).
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from queue import Empty
from typing import Any

import orjson
import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from svc.wire import events

log = logging.getLogger("svc.worker.transport")

# kombu's own decoding, exactly as its _brpop_read does it (kombu's functions carry no annotations).
_loads: Callable[[str], Any] = loads
_bytes_to_str: Callable[[bytes | str], str] = bytes_to_str

#: Why a message was parked (transport-level ones here; the consumer adds invalid_task and the like).
REASONS: dict[str, str] = {
    "not_json": "the message is not JSON",
    "not_an_object": "the message is JSON but not an object",
    "no_properties": "the message has no properties object",
    "no_delivery_tag": "the message's properties have no delivery_tag",
    "no_delivery_info": "the message's properties have no delivery_info with exchange and routing_key",
    "headers_not_an_object": "the message's headers are not an object",
    "bad_body_encoding": "the message's body cannot be decoded with its body_encoding",
}


@dataclass(frozen=True)
class Parked:
    """A message that was parked: where it came from, why, and the task it names (if any)."""

    queue: str
    reason: str
    detail: str
    task_id: str | None = None
    task: str | None = None


class Unusable(Exception):
    """A queue entry that cannot become a kombu message (``reason`` is a key of ``REASONS``)."""

    def __init__(self, reason: str, detail: str, payload: Any = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.payload = payload  # the decoded JSON, when it was JSON


def task_identity(headers: Any) -> tuple[str | None, str | None]:
    """The task id and name a message's headers name, when they are strings."""
    if not isinstance(headers, dict):
        return None, None
    task_id, name = headers.get("id"), headers.get("task")
    return (task_id if isinstance(task_id, str) and task_id else None), (
        name if isinstance(name, str) else None
    )


def dead_letter_entry(
    raw: bytes | str, queue: str, reason: str, detail: str, task_id: str | None, task: str | None
) -> bytes:
    """One dead-letter entry (the JSON object the module docstring describes)."""
    if isinstance(raw, bytes):
        try:
            text, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    else:
        text, encoding = raw, "utf-8"
    entry = {
        "queue": queue,
        "reason": reason,
        "detail": detail,
        "task_id": task_id,
        "task": task,
        "ts": round(time.time(), 6),
        "raw": text,
        "raw_encoding": encoding,
    }
    return orjson.dumps(entry)


class Channel(kombu_redis.Channel):
    """kombu's Redis channel that parks queue entries it cannot turn into messages."""

    from_transport_options = (*kombu_redis.Channel.from_transport_options, "svc_namespace")  # type: ignore[assignment]

    #: The svc namespace whose dead-letter list parked messages go to (transport option).
    svc_namespace = "svc"

    def park(
        self,
        raw: bytes | str,
        queue: str,
        reason: str,
        detail: str,
        task_id: str | None = None,
        task: str | None = None,
    ) -> bool:
        """Push one message onto the dead-letter list and log it; True once Redis holds it (never raises)."""
        key = events.dead_letter_key(self.svc_namespace)
        entry = dead_letter_entry(raw, queue, reason, detail, task_id, task)
        log.warning(
            "event=message_parked queue=%s reason=%s task_id=%s detail=%r", queue, reason, task_id, detail
        )
        try:
            # The pool's plain client: the exact key name, whatever global_keyprefix kombu applies.
            with redis.Redis(connection_pool=self.pool).pipeline(transaction=True) as pipe:
                pipe.lpush(key, entry)
                pipe.ltrim(key, 0, events.DEAD_LETTER_MAX - 1)
                pipe.execute()
        except Exception:
            log.exception("event=park_failed queue=%s reason=%s task_id=%s", queue, reason, task_id)
            return False
        return True

    def _decode(self, item: bytes | str) -> dict[str, Any]:
        """The decoded entry, if kombu can build a message from it; raises Unusable otherwise."""
        try:
            payload = _loads(_bytes_to_str(item))
        except Exception as exc:  # JSONDecodeError, or one of kombu's registered type decoders
            raise Unusable("not_json", str(exc)) from None
        self._check(payload)
        checked: dict[str, Any] = payload
        return checked

    def _check(self, payload: Any) -> None:
        """Raise Unusable unless kombu's Message and QoS can take ``payload`` (mirrors what they read)."""
        if not isinstance(payload, dict):
            raise Unusable("not_an_object", f"a JSON {type(payload).__name__}", payload)
        properties = payload.get("properties")
        if not isinstance(properties, dict):
            raise Unusable("no_properties", "properties is missing or not an object", payload)
        tag = properties.get("delivery_tag")
        if not (isinstance(tag, str) and tag) and not (isinstance(tag, int) and not isinstance(tag, bool)):
            raise Unusable("no_delivery_tag", "delivery_tag is missing or not a string", payload)
        info = properties.get("delivery_info")
        if not isinstance(info, dict) or "exchange" not in info or "routing_key" not in info:
            raise Unusable("no_delivery_info", "delivery_info lacks exchange or routing_key", payload)
        headers = payload.get("headers")
        if headers is not None and not isinstance(headers, dict):
            raise Unusable("headers_not_an_object", f"headers is a JSON {type(headers).__name__}", payload)
        body = payload.get("body")
        if body:
            try:
                self.decode_body(body, properties.get("body_encoding"))  # type: ignore[no-untyped-call]
            except Exception as exc:  # binascii.Error, an unknown encoding, a body that is not text
                raise Unusable("bad_body_encoding", str(exc), payload) from None

    def _deliver_or_park(self, item: bytes | str, queue: str) -> None:
        """Hand a queue entry to kombu, or park it when kombu could not make a message of it."""
        try:
            payload = self._decode(item)
        except Unusable as unusable:
            headers = unusable.payload.get("headers") if isinstance(unusable.payload, dict) else None
            task_id, task = task_identity(headers)
            self.park(item, queue, unusable.reason, unusable.detail, task_id, task)
            hook: Callable[[Parked], None] | None = getattr(self.connection, "on_parked", None)
            if hook is not None and task_id is not None:
                try:
                    hook(Parked(queue, unusable.reason, unusable.detail, task_id, task))
                except Exception:
                    log.exception("event=parked_hook_failed queue=%s task_id=%s", queue, task_id)
            return
        self.connection._deliver(payload, queue)

    def _brpop_read(self, **options: Any) -> bool:
        # kombu 5.7's Channel._brpop_read, with the one step that can raise on a bad entry
        # (``loads`` + ``_deliver``) replaced by _deliver_or_park.
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                # if there's a ConnectionError, disconnect so the next iteration reconnects
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise Empty()
            dest, item = dest__item
            dest = _bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            self._deliver_or_park(item, dest)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]  # as kombu does: no BRPOP in flight
            # The BRPOP connection is idle now: kombu's moment to flush a pending re-auth token.
            self._flush_brpop_reauth()  # type: ignore[no-untyped-call]

    def _deliver_fanout_message(self, message: Any, exchange: str) -> bool:
        # Broadcasts (remote control, gossip) go through the same check; a bad one is dropped, not parked:
        # every worker gets its own copy and no task waits on it.
        try:
            self._check(message)
        except Unusable as unusable:
            log.warning(
                "event=broadcast_dropped exchange=%s reason=%s detail=%r",
                exchange,
                unusable.reason,
                unusable.detail,
            )
            return False
        result: bool = super()._deliver_fanout_message(message, exchange)  # type: ignore[no-untyped-call]
        return result


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with svc's :class:`Channel`.

    ``on_parked``, when set (svc's consumer step sets it after each connect), is called with a
    :class:`Parked` for every parked message that names a task id, in the consumer's thread.
    """

    Channel = Channel
    on_parked: Callable[[Parked], None] | None = None


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel (the master found through the sentinels) that parks like :class:`Channel`."""

    from_transport_options = (*kombu_redis.SentinelChannel.from_transport_options, "svc_namespace")  # type: ignore[assignment]


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport (``sentinel://`` brokers) with svc's :class:`SentinelChannel`;
    ``on_parked`` as on :class:`Transport`."""

    Channel = SentinelChannel
    on_parked: Callable[[Parked], None] | None = None
