"""Where one namespace's keys and channels live: on one Redis, or spread over a Redis Cluster.

On one Redis (``SVC_REDIS_URL=redis://…`` and the like) the names are the plain ones svc/wire/events.py
lists: ``{ns}:task:{id}``, ``{ns}:task:{id}:history``, ``{ns}:recent``… and a task's events go out with
``PUBLISH`` on ``{ns}:task:{id}``.

On a Redis Cluster (``SVC_REDIS_URL=redis+cluster://…``) every task belongs to one of BUCKETS buckets
(``zlib.crc32`` of its id), and every name of a task carries its bucket as the Redis hash tag:
``{ns}:{b}:task:{id}``, ``…:history``, ``…:stream``, where ``{b}`` is the bucket in three hex digits
between braces. The namespace-wide views are split the same way, one per bucket: ``{ns}:{b}:recent``,
``{ns}:{b}:unclaimed`` and the monitor's feed channel ``{ns}:{b}:feed``. So the publish script touches
one hash slot only (a task's keys, its bucket's recent set, its channel and its bucket's feed), and stays
one atomic step; events go out with ``SPUBLISH`` (sharded pub/sub: delivered by the shard that owns the
slot, not broadcast to every node). A reader of a namespace-wide view reads its BUCKETS parts. Single keys
that are not per task (``{ns}:workers``, ``{ns}:idempotency:{key}``, rate limits, ``{ns}:deadletter``)
keep their names: each is one key in one slot, and nothing reads two of them in one command.

1024 buckets spread over up to about a hundred shards within a few per cent of even; changing the number
would move every task's keys, so it is fixed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

BUCKETS = 1024
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def is_cluster(url: str | None) -> bool:
    """True for a ``redis+cluster://`` (or ``rediss+cluster://``) URL."""
    return url is not None and url.startswith(CLUSTER_SCHEMES)


def bucket_of(task_id: str) -> int:
    """The bucket of a task (or workflow) id on a cluster: ``crc32(id) % BUCKETS``."""
    return zlib.crc32(task_id.encode()) % BUCKETS


def _bucket_tag(bucket: int) -> str:
    """A bucket's hash tag: its number in three hex digits between braces."""
    return f"{{{bucket:03x}}}"


# The names on one Redis, for code that knows no Layout (tests, benchmarks, the redelivery sweep that
# runs only on one Redis): each is the Layout's own.


def task_key(namespace: str, task_id: str) -> str:
    """Hash holding a task's last ``seq`` and its terminal state (on one Redis)."""
    return Layout(namespace).task_key(task_id)


def history_key(namespace: str, task_id: str) -> str:
    """Sorted set of a task's events, scored by ``seq`` (on one Redis)."""
    return Layout(namespace).history_key(task_id)


def task_channel(namespace: str, task_id: str) -> str:
    """Pub/sub channel on which a task's events are announced (on one Redis)."""
    return Layout(namespace).task_channel(task_id)


def stream_key(namespace: str, task_id: str) -> str:
    """Sorted set of a task's stream chunks (every named stream of it), scored by ``seq`` (on one Redis)."""
    return Layout(namespace).stream_key(task_id)


def channel_task_id(namespace: str, channel: str) -> str | None:
    """The task id of a task channel name on one Redis, or None for any other channel."""
    return Layout(namespace).channel_task_id(channel)


def recent_key(namespace: str) -> str:
    """Sorted set of the task ids with the newest events, scored by the time of their last event."""
    return Layout(namespace).recent_keys()[0]


def unclaimed_key(namespace: str) -> str:
    """Sorted set of the ids of tasks svc enqueued that no worker has received yet, scored by when."""
    return Layout(namespace)._view("unclaimed", None)


def probe_channel(namespace: str, owner: str) -> str:
    """Service channel on which a bridge checks that its own pub/sub connection is alive."""
    return f"{namespace}:probe:{owner}"


def workers_key(namespace: str) -> str:
    """Sorted set of worker hostnames scored by their last heartbeat (unix time)."""
    return f"{namespace}:workers"


def idempotency_key(namespace: str, key: str) -> str:
    """Maps a client's Idempotency-Key to the task id of its first submit."""
    return f"{namespace}:idempotency:{key}"


def dead_letter_key(namespace: str) -> str:
    """List of broker messages a worker could not decode or run (newest first)."""
    return f"{namespace}:deadletter"


@dataclass(frozen=True)
class Layout:
    """The names of one namespace's per-task keys, channels and namespace-wide views, on one Redis
    (``sharded`` False) or on a Redis Cluster (see the module docstring)."""

    namespace: str
    sharded: bool = False

    def _prefix(self, bucket: int | None) -> str:
        """``{ns}:`` on one Redis; ``{ns}:{b}:`` on a cluster, ``bucket`` being the bucket's number."""
        if not self.sharded or bucket is None:
            return f"{self.namespace}:"
        return f"{self.namespace}:{_bucket_tag(bucket)}:"

    def _task(self, task_id: str) -> str:
        return f"{self._prefix(bucket_of(task_id) if self.sharded else None)}task:{task_id}"

    def _view(self, name: str, task_id: str | None) -> str:
        """The part of a namespace-wide view (``recent``, ``unclaimed``, ``feed``) ``task_id`` is in."""
        return self._prefix(bucket_of(task_id) if self.sharded and task_id is not None else None) + name

    def task_key(self, task_id: str) -> str:
        """The task's hash (``seq``, ``state``, ``terminal``…)."""
        return self._task(task_id)

    def history_key(self, task_id: str) -> str:
        """The task's events, scored by ``seq``."""
        return self._task(task_id) + ":history"

    def stream_key(self, task_id: str) -> str:
        """The task's stream chunks, scored by ``seq``."""
        return self._task(task_id) + ":stream"

    def task_channel(self, task_id: str) -> str:
        """The channel the task's events are announced on (``SPUBLISH`` on a cluster)."""
        return self._task(task_id)

    def channel_task_id(self, channel: str) -> str | None:
        """The task id of a task channel name, or None for any other channel."""
        prefix = f"{self.namespace}:"
        if not channel.startswith(prefix):
            return None
        rest = channel[len(prefix) :]
        if self.sharded:
            tag, _, rest = rest.partition(":")
            if not (tag.startswith("{") and tag.endswith("}")):
                return None
        return rest[len("task:") :] if rest.startswith("task:") else None

    def recent_key(self, task_id: str) -> str:
        """The part of the namespace's recent-ids view that ``task_id`` is recorded in."""
        return self._view("recent", task_id)

    def unclaimed_key(self, task_id: str) -> str:
        """The part of the namespace's unclaimed-ids view that ``task_id`` is recorded in."""
        return self._view("unclaimed", task_id)

    def feed_channel(self, task_id: str) -> str:
        """The monitor's feed channel of the task's bucket on a cluster; "" on one Redis, where the monitor
        pattern-subscribes to the task channels instead."""
        return self._view("feed", task_id) if self.sharded else ""

    def recent_keys(self) -> list[str]:
        """Every part of the recent-ids view (one on one Redis, BUCKETS on a cluster)."""
        return [self._prefix(bucket) + "recent" for bucket in (range(BUCKETS) if self.sharded else [None])]

    def feed_channels(self) -> list[str]:
        """Every feed channel of a cluster (none on one Redis)."""
        return [self._prefix(bucket) + "feed" for bucket in range(BUCKETS)] if self.sharded else []
