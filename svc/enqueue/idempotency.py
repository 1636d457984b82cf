"""``Idempotency-Key``: one request, one task, however often the request is sent.

The key's Redis value is ``<phase>:<fingerprint>:<task id>``. The fingerprint is a digest of what was
asked (the task's name, its validated arguments and its options), so the same key sent with another
request is refused (409) instead of answering for a task the client did not ask for. The phase is
``enqueued`` once the task is really in the broker, and ``claimed`` only while a submit that cannot be
done in one atomic step (a broker apart from the events Redis) is under way: such a claim expires after
:func:`claim_seconds` and is deleted at once when the submit fails, so a retry after a failure enqueues.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import orjson

from svc.errors import Conflict

ENQUEUED, CLAIMED = "enqueued", "claimed"
MIN_CLAIM_SECONDS = 30


def claim_seconds(redis_timeout: float) -> int:
    """How long a claim lives: longer than a submit's steps can take (each bounded by the Redis timeout)."""
    return max(MIN_CLAIM_SECONDS, math.ceil(4 * redis_timeout))


def fingerprint(name: str, kwargs: dict[str, Any], options: dict[str, Any]) -> str:
    """A digest of one request: equal for equal task, arguments and options, whatever their key order."""
    text = orjson.dumps([name, kwargs, options], option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(text).hexdigest()[:32]


def value(phase: str, digest: str, task_id: str) -> str:
    """The value stored under an Idempotency-Key."""
    return f"{phase}:{digest}:{task_id}"


@dataclass(frozen=True)
class Recorded:
    """What an Idempotency-Key holds: the phase, the request's fingerprint and the task id."""

    phase: str
    fingerprint: str | None  # None for a value written before fingerprints existed
    task_id: str

    @classmethod
    def parse(cls, raw: bytes | str) -> Recorded:
        """Read a stored value (an older bare task id counts as enqueued, with no fingerprint)."""
        text = raw.decode() if isinstance(raw, bytes) else raw
        phase, digest, task_id = text.split(":", 2) if text.count(":") >= 2 else (ENQUEUED, "", text)
        return cls(phase, digest or None, task_id)

    def task_for(self, digest: str) -> str:
        """The task id to answer a repeat of the request ``digest`` with; 409 for another request."""
        if self.fingerprint is not None and self.fingerprint != digest:
            raise Conflict(
                "this Idempotency-Key was first used for a different request (another task, other"
                " arguments or other options): use a new key for a new request"
            )
        return self.task_id
