"""Prometheus metrics of one API process (``GET /metrics``), in a registry of its own.

Counters move where things happen (submit, the bridge, the WebSocket writer, the monitor). The ones
moved on every submit, event or frame are plain integers, turned into counter families at scrape time:
a ``prometheus_client`` child takes a lock and validates its labels on every call, which was a
measurable part of a submit (BENCHMARKS.md). Gauges that describe current state (connections,
subscriptions, workers, queue depth) are read at scrape time too.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series only add noise to every scrape

RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    """The process's counters and histograms, and a collector for its live gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Plain counts, reported by _Counts at each scrape (this process's event loop is their only writer).
        self.submits: Tally[tuple[str, ...]] = Tally()  # (task, outcome)
        self.events_published: Tally[str] = Tally()  # state
        self.tasks_finished: Tally[tuple[str, ...]] = Tally()  # (task, state)
        self.events_delivered = 0
        self.stream_chunks_published = 0
        self.task_runtime = Histogram(
            "svc_task_runtime_seconds",
            "seconds from STARTED to SUCCESS or FAILURE, by task name",
            ["task"],
            buckets=RUNTIME_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Counts(self))

    def watch(self, read: Callable[[], LiveFigures]) -> None:
        """Report what ``read`` returns (connections, subscriptions, workers, queues) at each scrape."""
        self.registry.register(_LiveState(read))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _Counts(Collector):
    """The plain counters of :class:`Metrics` as Prometheus counter families."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        metrics = self._metrics
        yield _family(
            "svc_submits",
            "HTTP submits by task and outcome (accepted, invalid, rate_limited, unavailable, unknown)",
            ["task", "outcome"],
            metrics.submits,
        )
        yield _family(
            "svc_events_published",
            "task events published in this namespace (by any worker or API process), by state",
            ["state"],
            {(state,): count for state, count in metrics.events_published.items()},
        )
        yield CounterMetricFamily(
            "svc_stream_chunks_published",
            "stream chunks published in this namespace (svc.stream, by any worker)",
            value=metrics.stream_chunks_published,
        )
        yield CounterMetricFamily(
            "svc_events_delivered",
            "frames this process sent to WebSocket clients",
            value=metrics.events_delivered,
        )
        yield _family(
            "svc_tasks_finished",
            "tasks that ended, by task name and final state",
            ["task", "state"],
            metrics.tasks_finished,
        )


def _family(name: str, help_text: str, labels: list[str], counts: Mapping[tuple[str, ...], int]) -> Metric:
    family = CounterMetricFamily(name, help_text, labels=labels)
    for values, count in counts.items():
        family.add_metric(list(values), count)
    return family


@dataclass(frozen=True)
class LiveFigures:
    """What the process holds at one scrape: read when ``/metrics`` is asked, never kept in step."""

    connections: int
    subscriptions: int
    bridge_reconnects: int
    events_routed: int
    redelivered: int
    monitor_reconnects: int
    malformed: int
    workers_online: dict[str, bool]
    queue_depth: dict[str, int]


class _LiveState(Collector):
    """Gauges computed when scraped, from a reader of the process's live figures."""

    def __init__(self, read: Callable[[], LiveFigures]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        live = self._read()
        yield GaugeMetricFamily(
            "svc_websocket_connections", "open WebSocket connections", value=live.connections
        )
        yield GaugeMetricFamily(
            "svc_subscriptions", "task subscriptions held by this process", value=live.subscriptions
        )
        yield CounterMetricFamily(
            "svc_bridge_reconnects",
            "times the bridge reconnected its pub/sub connection to Redis",
            value=live.bridge_reconnects,
        )
        yield CounterMetricFamily(
            "svc_events_routed",
            "task events this process's bridge received for its subscribers",
            value=live.events_routed,
        )
        yield CounterMetricFamily(
            "svc_tasks_redelivered",
            "task messages this process pushed back after they were lost between the broker and a worker",
            value=live.redelivered,
        )
        yield CounterMetricFamily(
            "svc_monitor_reconnects",
            "times the monitor's pattern subscription to the namespace's task channels was reopened",
            value=live.monitor_reconnects,
        )
        yield CounterMetricFamily(
            "svc_events_malformed",
            "messages on task channels that were not events (ignored by the monitor)",
            value=live.malformed,
        )
        workers = GaugeMetricFamily(
            "svc_worker_online", "1 when a worker's heartbeats are current, else 0", labels=["worker"]
        )
        for hostname, online in live.workers_online.items():
            workers.add_metric([hostname], 1.0 if online else 0.0)
        yield workers
        depth = GaugeMetricFamily("svc_queue_depth", "messages waiting in a broker queue", labels=["queue"])
        for queue, count in live.queue_depth.items():
            depth.add_metric([queue], count)
        yield depth
