"""Redis pub/sub → WebSocket fan-out: one pub/sub connection per API process, however many watchers.

Guarantees to each subscriber (a :class:`Sink`): every event of its task with ``seq > since``, once,
in order. How:

1. subscribe to the task's channel and wait for Redis to confirm it;
2. then read the history (``seq > last sent``), buffering live events that arrive meanwhile;
3. then deliver history and buffer in order, dropping any ``seq`` already sent, and go live.

A live event that skips a ``seq`` triggers the same history read for that subscriber. After the pub/sub
connection is lost (Redis restart, network cut, or a probe that does not come back) the bridge
reconnects with backoff, re-subscribes every channel and repeats step 2-3 for every subscriber.
When the history cannot prove there was no gap, the subscriber gets the newest event marked
``"recovered": false``. The listener never awaits a subscriber: sinks are non-blocking queues.

On a Redis Cluster (a ``sharded`` layout) one Bridge serves one shard: it holds one connection to that
shard's primary and uses sharded pub/sub (``SSUBSCRIBE``, one command per hash slot, as Redis requires;
``SPUBLISH`` for its probe, on a channel of a slot the shard owns). svc.sharded_bridge routes each task to
the Bridge of the shard that owns its slot, and moves subscriptions between Bridges (:meth:`Bridge.adopt`,
:meth:`Bridge.release`) when a failover or a slot migration moves a slot; ``on_trouble`` tells it when to
look: the connection was lost, or Redis unsubscribed a channel this Bridge still wants (its slot moved).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.crc import key_slot
from redis.exceptions import MovedError, RedisError, ResponseError

from svc.backoff import Reconnects
from svc.fanout.history import History
from svc.flag import Flag
from svc.keyspace import Layout
from svc.wire import events

log = logging.getLogger("svc.bridge")

STEP = "STEP"
STREAM = events.STREAM
NOT_STATES = frozenset({STEP, STREAM})  # delivery states that are none of the task's own
PROBE_INTERVAL = 2.0
STALE_AFTER = 3 * PROBE_INTERVAL + 1.0
CONFIRM_TIMEOUT = 5.0


class Sink(Protocol):
    """Where a subscription delivers frames; ``push`` must not block."""

    def push(self, task_id: str | None, seq: int, state: str, text: str) -> None: ...


class StaleConnection(Exception):
    """The pub/sub connection stopped delivering (the probe did not come back)."""


class Unconfirmed(Exception):
    """Redis did not confirm a SUBSCRIBE in time."""


class Subscription:
    """One subscriber's view of one task: what it has been sent, and what is waiting to be sorted."""

    __slots__ = ("buffer", "channel", "done", "epoch_lost", "last_seq", "last_state", "sink", "task_id")

    def __init__(self, task_id: str, channel: str, since: int, sink: Sink) -> None:
        self.task_id = task_id
        self.channel = channel
        self.last_seq = since
        self.last_state = "PENDING"  # of the stream's own events sent here (what a `lost` snapshot says)
        self.sink = sink
        self.buffer: list[tuple[int, str, str]] | None = []
        self.done = False
        self.epoch_lost = False

    def deliver(self, seq: int, state: str, text: str, backlog: bool = False) -> None:
        """Send one event if it is new; remember it was sent. ``backlog``: from a catch-up, queued by a
        sink that has ``push_backlog`` outside its limits (svc/fanout/outbox.py)."""
        if self.done or (seq <= self.last_seq and not self.epoch_lost):
            return
        if self.epoch_lost:
            # The first event after a lost history: say so, so that a client that drops seqs it has
            # seen (a Redis that lost its data starts counting again) keeps it.
            self.epoch_lost = False
            if '"recovered":false' not in text:
                text = events.with_recovered_false(text.encode()).decode()
        self.last_seq = seq
        if state not in NOT_STATES:
            self.last_state = state
        push = getattr(self.sink, "push_backlog", self.sink.push) if backlog else self.sink.push
        push(self.task_id, seq, state, text)
        if state in events.TERMINAL_STATES:
            self.done = True


class Watching:
    """``watch`` over a class's ``open`` and ``close`` (a :class:`Bridge`, or one per shard)."""

    async def open(self, task_id: str, since: int, sink: Sink) -> Subscription:
        """Start a subscription; its backlog is delivered before this returns."""
        raise NotImplementedError

    async def close(self, subscription: Subscription) -> None:
        """End a subscription."""
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def watch(self, task_id: str, since: int, sink: Sink) -> AsyncIterator[Subscription]:
        """Deliver ``task_id``'s events with ``seq > since`` to ``sink`` for the life of the block."""
        subscription = await self.open(task_id, since, sink)
        try:
            yield subscription
        finally:
            await self.close(subscription)


class Bridge(Watching):
    """Owns the process's pub/sub connection (on a cluster: one shard's) and routes each task channel to
    its local subscribers.

    ``layout`` (one Redis's, by default) names the task channels; a sharded one makes this Bridge use
    sharded pub/sub, with ``probe_channel`` (which must hash to a slot of its shard) for its probe.
    ``on_trouble(bridge, channel)`` is called, without being awaited, when the connection was lost
    (``channel`` None) or Redis unsubscribed ``channel`` although it is still wanted.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        history: History,
        namespace: str,
        *,
        layout: Layout | None = None,
        probe_channel: str | None = None,
        on_trouble: Callable[[Bridge, str | None], None] | None = None,
    ) -> None:
        self.redis = redis
        self.history = history
        self.namespace = namespace
        self.layout = layout or Layout(namespace)
        self.sharded = self.layout.sharded
        self._subscribe, self._unsubscribe = (
            ("ssubscribe", "sunsubscribe") if self.sharded else ("subscribe", "unsubscribe")
        )
        self._on_trouble = on_trouble
        self.owner = uuid.uuid4().hex
        self._probe_channel = probe_channel or events.probe_channel(namespace, self.owner)
        self._subscribers: dict[str, set[Subscription]] = {}
        self._confirmed: dict[str, Flag] = {}
        self._unconfirmed: dict[str, int] = {}
        self._generation = 0
        self._pubsub: PubSub | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._resyncs: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.events_routed = 0  # events received for at least one local subscriber

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the listener and the probe; returns at once (connection happens in the background)."""
        self._tasks = [
            asyncio.create_task(self._run(), name="bridge-listener"),
            asyncio.create_task(self._probe(), name="bridge-probe"),
        ]

    async def stop(self) -> None:
        """Stop listening and close the pub/sub connection."""
        for task in [*self._tasks, *self._resyncs]:
            task.cancel()
        for task in [*self._tasks, *self._resyncs]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._drop_pubsub()

    @property
    def channel_count(self) -> int:
        """How many task channels have local subscribers."""
        return len(self._subscribers)

    @property
    def subscriptions(self) -> int:
        """How many subscriptions (one per watching client per task) this process holds."""
        return sum(len(subscribers) for subscribers in self._subscribers.values())

    # subscribing -----------------------------------------------------------------------------

    async def open(self, task_id: str, since: int, sink: Sink) -> Subscription:
        """Start a subscription (prefer :meth:`watch`); its backlog is delivered before this returns."""
        channel = self.layout.task_channel(task_id)
        subscription = Subscription(task_id, channel, since, sink)
        await self.adopt([subscription])
        try:
            await self._resync(subscription)
        except BaseException:
            await self.close(subscription)  # never leave a subscription behind that nobody holds
            raise
        return subscription

    async def adopt(self, subscriptions: Iterable[Subscription], resync: bool = False) -> None:
        """Take subscriptions on (subscribing their channels); ``resync``: catch each up from the
        history in the background, as after a reconnect (subscriptions moved here from another shard)."""
        for subscription in subscriptions:
            channel = subscription.channel
            subscribers = self._subscribers.get(channel)
            if subscribers is None:
                self._subscribers[channel] = {subscription}
                self._confirmed[channel] = Flag()
                await self._send(self._subscribe, channel)
            else:
                subscribers.add(subscription)
            if resync and not subscription.done:
                self._start_resync(subscription)

    async def release(self, channel: str, unsubscribe: bool = True) -> set[Subscription]:
        """Give up every local subscription of ``channel`` and return them, for another Bridge to adopt;
        ``unsubscribe`` False when Redis already did (a migrated slot's channels)."""
        subscribers = self._subscribers.pop(channel, set())
        self._confirmed.pop(channel, None)
        self._unconfirmed.pop(channel, None)
        if subscribers and unsubscribe:
            await self._send(self._unsubscribe, channel)
        return subscribers

    @property
    def channels(self) -> list[str]:
        """The task channels this Bridge has local subscribers for."""
        return list(self._subscribers)

    def _holds(self, subscription: Subscription) -> bool:
        """True while ``subscription`` is this Bridge's (not released to another shard's)."""
        return subscription in self._subscribers.get(subscription.channel, ())

    def _start_resync(self, subscription: Subscription) -> None:
        if subscription.buffer is None:
            subscription.buffer = []
        task = asyncio.create_task(self._resync(subscription))
        self._resyncs.add(task)
        task.add_done_callback(self._resyncs.discard)

    async def close(self, subscription: Subscription) -> None:
        """End a subscription; the channel is unsubscribed when its last local subscriber leaves."""
        subscription.done = True
        subscribers = self._subscribers.get(subscription.channel)
        if subscribers is None:
            return
        subscribers.discard(subscription)
        if not subscribers:
            del self._subscribers[subscription.channel]
            del self._confirmed[subscription.channel]
            await self._send(self._unsubscribe, subscription.channel)

    async def _send(self, command: str, *channels: str, again: bool = False) -> None:
        """SUBSCRIBE or UNSUBSCRIBE on the current connection, once it is connected (until then the
        listener's connect takes care of every channel). ``again``: a SUBSCRIBE whose answer never came
        is repeated, and this one answer is what the channel now waits for."""
        pubsub = self._pubsub
        if pubsub is None or not self.connected.is_set():
            return  # the listener subscribes every wanted channel when it (re)connects
        if command == self._subscribe:
            for channel in channels:
                self._unconfirmed[channel] = 1 if again else self._unconfirmed.get(channel, 0) + 1
        try:
            await self._command(pubsub, command, list(channels))
        except (RedisError, OSError, RuntimeError) as exc:
            # RuntimeError: uvloop's word for a write on a transport that closed before the listener
            # noticed (Redis died a moment ago). Nothing is lost: the listener's reconnect subscribes
            # every channel still wanted, and no other.
            log.warning("event=pubsub_command_failed command=%s error=%r", command, exc)

    # catching up -----------------------------------------------------------------------------

    async def _resync(self, subscription: Subscription) -> None:
        """Steps 2-3 of the module docstring for one subscriber, repeated until one pass completes
        within a single pub/sub connection (or the subscription ends)."""
        while not subscription.done and self._holds(subscription):
            generation = self._generation
            if subscription.buffer is None:
                subscription.buffer = []
            try:
                await self._await_confirmation(subscription.channel)
                await self._catch_up(subscription)
            except Unconfirmed as exc:
                # Redis never answered that SUBSCRIBE (it may never have reached it): ask again,
                # expecting one answer, rather than wait for ever on one that will not come.
                log.warning("event=subscribe_retry task_id=%s error=%r", subscription.task_id, exc)
                await self._send(self._subscribe, subscription.channel, again=True)
                continue
            except (RedisError, OSError, TimeoutError) as exc:
                log.info("event=resync_retry task_id=%s error=%r", subscription.task_id, exc)
                await asyncio.sleep(0.2)
                continue
            if generation == self._generation and self.connected.is_set():
                return

    async def _await_confirmation(self, channel: str) -> None:
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while True:
            confirmed = self._confirmed.get(channel)
            if confirmed is None or confirmed.is_set():
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unconfirmed(f"no SUBSCRIBE confirmation for {channel} within {CONFIRM_TIMEOUT:.0f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(confirmed.wait(), timeout=min(remaining, 0.5))

    async def _catch_up(self, subscription: Subscription) -> None:
        """Deliver what the history holds after the subscriber's last seq, telling it of any gap.

        Four cases: the history continues where the subscriber is (deliver it); it was trimmed past
        ``since`` or started again at 1 (a Redis that lost its data) — deliver its newest event marked
        ``recovered: false``; it is gone altogether — the result backend's snapshot (seq 0) if Celery
        still has the task, else a ``lost`` snapshot of what this process knew, so that no subscriber
        waits in silence; nothing was ever seen and nothing is recorded — wait for the first event.
        """
        task_id, since = subscription.task_id, subscription.last_seq
        backlog = await self.history.backlog(task_id, since)
        recorded = self._decoded(backlog.events, task_id)
        chunks = self._decoded(backlog.chunks, task_id)
        if recorded or chunks:
            first = min(item[0] for item in (recorded[:1] + chunks[:1]))
            if since > 0 and recorded and first - 1 > max(since, backlog.cut_up_to):
                # Trimmed past what the client saw: only the newest event can be vouched for.
                subscription.epoch_lost = True
                recorded = [_recovered_false(recorded[-1])]
            pending = sorted([*recorded, *chunks], key=lambda item: item[0])
            if backlog.cut_up_to > since:
                # Stream chunks after ``since`` are gone (the stream's cap or TTL): the first frame after
                # them says so.
                index = next((i for i, item in enumerate(pending) if item[0] > backlog.cut_up_to), -1)
                pending[index] = _recovered_false(pending[index])
            self._flush(subscription, pending)
            return
        latest = None
        if since > 0:
            newest = self._decoded([raw] if (raw := await self.history.latest(task_id)) else [], task_id)
            latest = newest[0] if newest else None
        if latest is not None:
            if max(latest[0], backlog.newest_chunk) < since:
                # The counter went backwards: Redis lost the task's keys and it started again at 1.
                subscription.epoch_lost = True
                self._flush(subscription, [_recovered_false(latest)])
            else:
                self._flush(subscription, [])
            return
        stored = await self.history.stored_result(task_id)
        if stored is None and since == 0:
            self._flush(subscription, [])  # an id nobody has published for yet: its events will come
            return
        # The history expired or was lost although the task existed: accept the stored snapshot (seq 0),
        # or say that nothing is known any more, and then the next event whatever its seq.
        subscription.epoch_lost = True
        snapshot = stored or events.lost_snapshot(task_id, subscription.last_state)
        self._flush(subscription, [(0, _state_of(snapshot, task_id), snapshot.decode())])

    def _decoded(self, recorded: list[bytes], stream_id: str) -> list[tuple[int, str, str]]:
        """Seq, state and text of each recorded event, oldest first; an entry that is not a well-formed
        event (corrupted by hand or by another writer) is skipped with a log line, never delivered."""
        decoded = []
        for raw in recorded:
            try:
                decoded.append(_decode(raw, stream_id))
            except (ValueError, KeyError, TypeError):
                log.error("event=malformed_history_entry task_id=%s", stream_id)
        return decoded

    def _flush(self, subscription: Subscription, recorded: list[tuple[int, str, str]]) -> None:
        """Deliver history then the buffered live events, in seq order, with no duplicate."""
        pending = [*recorded, *(subscription.buffer or [])]
        subscription.buffer = None
        for seq, state, text in sorted(pending, key=lambda item: item[0]):
            subscription.deliver(seq, state, text, backlog=True)

    # listening -------------------------------------------------------------------------------

    async def _run(self) -> None:
        reconnects = Reconnects()
        while True:
            try:
                await self._connect()
                reconnects.connected()
                await self._listen()
            except (RedisError, OSError, StaleConnection) as exc:
                self.connected.clear()
                await self._drop_pubsub()
                if self._on_trouble is not None:
                    self._on_trouble(self, None)
                delay = reconnects.next_delay()
                log.warning("event=bridge_disconnected error=%r retry_in=%.2f", exc, delay)
                await asyncio.sleep(delay)

    async def _connect(self) -> None:
        pubsub = self.redis.pubsub()
        self._pubsub = pubsub
        self._generation += 1
        for confirmed in self._confirmed.values():
            confirmed.clear()
        self._unconfirmed = dict.fromkeys(self._subscribers, 1)
        await self._command(pubsub, self._subscribe, [self._probe_channel, *self._subscribers])
        # Channels first watched, or given up, while that SUBSCRIBE was on its way are not in it (_send
        # leaves them to this connect): bring the connection in line before it counts as connected.
        subscribed = set(self._unconfirmed)
        while True:
            late = [channel for channel in self._subscribers if channel not in subscribed]
            gone = [channel for channel in subscribed if channel not in self._subscribers]
            if not late and not gone:
                break
            if late:
                subscribed.update(late)
                self._unconfirmed.update(dict.fromkeys(late, 1))
                await self._command(pubsub, self._subscribe, late)
            if gone:
                subscribed.difference_update(gone)
                await self._command(pubsub, self._unsubscribe, gone)
        self.connected.set()
        if self.reconnects or self._subscribers:
            log.warning(
                "event=bridge_connected reconnects=%d channels=%d", self.reconnects, len(self._subscribers)
            )
        self.reconnects += 1
        for subscribers in list(self._subscribers.values()):
            for subscription in subscribers:
                if subscription.buffer is None:
                    self._start_resync(subscription)

    async def _command(self, pubsub: PubSub, command: str, channels: list[str]) -> None:
        """(UN)SUBSCRIBE ``channels``: in one command on one Redis; one per hash slot for sharded pub/sub,
        whose commands Redis refuses across slots."""
        if not self.sharded:
            await getattr(pubsub, command)(*channels)
            return
        by_slot: dict[int, list[str]] = {}
        for channel in channels:
            by_slot.setdefault(key_slot(channel.encode()), []).append(channel)
        for group in by_slot.values():
            await getattr(pubsub, command)(*group)

    async def _listen(self) -> None:
        """Read the pub/sub connection's raw replies (``[b"message", channel, data]`` and the like):
        ``PubSub.get_message`` costs a timeout, a retry wrapper, a dict and an observability hook per
        message, more than routing the message does (BENCHMARKS.md). A connection that has said nothing
        for STALE_AFTER seconds (the probe arrives every PROBE_INTERVAL) is given up."""
        pubsub = self._pubsub
        connection = pubsub.connection if pubsub is not None else None
        if pubsub is None or connection is None:
            raise StaleConnection("the pub/sub connection is not open")
        loop = asyncio.get_running_loop()
        rescheduled = loop.time()
        try:
            async with asyncio.timeout(STALE_AFTER) as silence:
                while True:
                    try:
                        reply = await connection.read_response(timeout=math.inf, push_request=True)
                    except ResponseError as error:
                        if not self.sharded:
                            raise
                        self._on_refused(error)  # an answer, not a broken connection
                        continue
                    now = loop.time()
                    if now - rescheduled > 1.0:  # moving the deadline costs a timer: once a second at most
                        silence.reschedule(now + STALE_AFTER)
                        rescheduled = now
                    if not isinstance(reply, list) or len(reply) < 3:
                        continue
                    kind = reply[0]
                    if kind == b"message" or kind == b"smessage":
                        self._dispatch(reply[1].decode(), reply[2])
                        continue
                    if kind == b"subscribe" or kind == b"ssubscribe":
                        self._on_confirmed(reply[1].decode())
                    elif kind == b"sunsubscribe" and self._on_trouble is not None:
                        channel = reply[1].decode()
                        if channel in self._subscribers:  # still wanted: Redis moved its slot away
                            self._on_trouble(self, channel)
                    await pubsub.handle_message(reply)  # redis-py's record of subscribed channels
        except TimeoutError:
            raise StaleConnection(f"nothing received for {STALE_AFTER:.0f}s") from None

    def _on_refused(self, error: ResponseError) -> None:
        """A sharded (UN)SUBSCRIBE this node refused: MOVED names the slot, whose channels are then
        looked at again (they belong to another shard now); anything else is logged."""
        if isinstance(error, MovedError) and self._on_trouble is not None:
            for channel in [
                channel for channel in self._subscribers if key_slot(channel.encode()) == error.slot_id
            ]:
                self._on_trouble(self, channel)
            return
        log.warning("event=pubsub_refused error=%r", error)

    def _on_confirmed(self, channel: str) -> None:
        """Count a SUBSCRIBE reply; the channel is live once every SUBSCRIBE sent for it is answered."""
        outstanding = self._unconfirmed.get(channel, 1) - 1
        if outstanding > 0:
            self._unconfirmed[channel] = outstanding
            return
        self._unconfirmed.pop(channel, None)
        confirmed = self._confirmed.get(channel)
        if confirmed is not None:
            confirmed.set()

    def _dispatch(self, channel: str, data: bytes) -> None:
        subscribers = self._subscribers.get(channel)
        if not subscribers:
            return
        if b"\n" in data:  # a batch of stream chunks (JSON frames hold no raw newline)
            self._dispatch_batch(channel, data, subscribers)
            return
        try:
            seq, state, text = _decode(data, next(iter(subscribers)).task_id)
        except (ValueError, KeyError, TypeError):
            log.error("event=malformed_event channel=%s", channel)
            return
        self._route(subscribers, seq, state, text)

    def _dispatch_batch(self, channel: str, data: bytes, subscribers: set[Subscription]) -> None:
        """Each frame of a batch, in order, to every subscriber (each frame's text is shared by all)."""
        stream_id = next(iter(subscribers)).task_id
        try:
            frames = [_decode(raw, stream_id) for raw in data.split(b"\n")]
        except (ValueError, KeyError, TypeError):
            log.error("event=malformed_event channel=%s", channel)
            return
        for seq, state, text in frames:
            self._route(subscribers, seq, state, text)

    def _route(self, subscribers: set[Subscription], seq: int, state: str, text: str) -> None:
        for subscription in list(subscribers):
            if subscription.buffer is not None:
                subscription.buffer.append((seq, state, text))
            elif seq > subscription.last_seq + 1 and not subscription.epoch_lost:
                subscription.buffer = [(seq, state, text)]
                task = asyncio.create_task(self._resync(subscription))
                self._resyncs.add(task)
                task.add_done_callback(self._resyncs.discard)
            else:
                subscription.deliver(seq, state, text)
        self.events_routed += 1

    async def _probe(self) -> None:
        """Publish on our own service channel so a silently dead pub/sub socket is noticed."""
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            with contextlib.suppress(RedisError, OSError):
                if self.sharded:
                    await self.redis.spublish(self._probe_channel, b"1")
                else:
                    await self.redis.publish(self._probe_channel, b"1")

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


def _recovered_false(event: tuple[int, str, str]) -> tuple[int, str, str]:
    seq, state, text = event
    return seq, state, events.with_recovered_false(text.encode()).decode()


def _state_of(raw: bytes, stream_id: str) -> str:
    return _decode(raw, stream_id)[1]


def _decode(raw: bytes, stream_id: str) -> tuple[int, str, str]:
    """Seq, state and text of one event of ``stream_id``'s stream, parsed once for all its subscribers.

    A workflow step's copy in its workflow's stream has the state ``STEP`` for delivery purposes, and
    a stream chunk (the task's own or a step's) the state ``STREAM``: neither ends the stream or is
    coalesced.
    """
    event: dict[str, Any] = events.parse(raw)
    if event.get("op") == "stream":
        if not isinstance(event.get("task_id"), str) or not isinstance(event.get("stream"), str):
            raise ValueError("a stream chunk names its task and stream")
        return int(event["seq"]), STREAM, raw.decode()
    state = str(event["state"]) if event.get("task_id") == stream_id else STEP
    return int(event["seq"]), state, raw.decode()
