"""Prometheus metrics: one registry per app, read from plain counters when scraped.

The hot paths (fan-out, stream writes, publishes) only bump plain ints and list slots on the
event loop's thread; nothing takes a lock or builds a label set per delivery. The collector
turns those numbers into Prometheus families at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from mercurio.stats import PUBLISH_KINDS, LatencyTally, PublishStats

if TYPE_CHECKING:
    from mercurio.channels.dispatcher import Dispatcher
    from mercurio.fanout import Fanout
    from mercurio.hub import Hub
    from mercurio.store import Store

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The metrics of one node: its own registry, so several nodes can live in one process."""

    def __init__(
        self,
        hub: Hub,
        store: Store,
        fanout: Fanout,
        publishes: PublishStats,
        dispatchers: dict[str, Dispatcher] | None = None,
    ) -> None:
        self.publishes = publishes
        self.http = HttpTally()
        self.registry = CollectorRegistry(auto_describe=False)
        collector = _NodeCollector(hub, store, fanout, publishes, dispatchers or {})
        self.registry.register(collector)
        self.registry.register(_HttpCollector(self.http))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _NodeCollector(Collector):
    """Reads the hub's, the store's and the broker's counters at scrape time."""

    def __init__(
        self,
        hub: Hub,
        store: Store,
        fanout: Fanout,
        publishes: PublishStats,
        dispatchers: dict[str, Dispatcher],
    ) -> None:
        self.hub = hub
        self.store = store
        self.fanout = fanout
        self.publishes = publishes
        self.dispatchers = dispatchers

    def collect(self) -> Iterable[Metric]:
        hub = self.hub
        yield GaugeMetricFamily(
            "mercurio_open_streams", "SSE streams open on this node.", value=hub.open_streams
        )
        deliveries = CounterMetricFamily(
            "mercurio_deliveries",
            "Notification frames queued to open streams, by kind.",
            labels=["kind"],
        )
        deliveries.add_metric(["direct"], hub.deliveries - hub.announce_deliveries)
        deliveries.add_metric(["announce"], hub.announce_deliveries)
        yield deliveries
        yield CounterMetricFamily(
            "mercurio_slow_reader_disconnects",
            "Streams closed because their reader let the buffer fill.",
            value=hub.slow_disconnects,
        )
        yield CounterMetricFamily(
            "mercurio_replayed_notifications",
            "Notifications sent from the store to streams resuming with Last-Event-ID.",
            value=hub.replayed,
        )
        yield histogram(
            hub.deliver_latency,
            "mercurio_publish_to_deliver_seconds",
            "From a publish's commit (or its arrival from the broker) to its frame written "
            "to a stream; one observation per write, for the oldest notification in it.",
        )
        yield from self._publishes()
        yield from self._broker()
        yield from self._store()
        yield from self._channels()

    def _channels(self) -> Iterable[Metric]:
        if not self.dispatchers:
            return
        outcomes = CounterMetricFamily(
            "mercurio_channel_deliveries",
            "Web Push and e-mail deliveries this node finished, by channel and result (sent; "
            "dropped: owed no more, read or deleted meanwhile, muted or turned off; pruned: "
            "the subscription is gone; failed: refused for good or expired; retried: put back "
            "for a later try).",
            labels=["channel", "result"],
        )
        depth = GaugeMetricFamily(
            "mercurio_channel_queue_depth",
            "Deliveries a channel still owes, all nodes (as of the dispatcher's last look).",
            labels=["channel"],
        )
        age = GaugeMetricFamily(
            "mercurio_channel_oldest_owed_seconds",
            "Age of the oldest notification a channel still owes (0 when none), delay included.",
            labels=["channel"],
        )
        now = time.time()
        for name, dispatcher in self.dispatchers.items():
            tally = dispatcher.tally
            for result, count in tally.finished.items():
                outcomes.add_metric([name, result.value], count)
            outcomes.add_metric([name, "retried"], tally.retried)
            backlog = dispatcher.backlog
            depth.add_metric([name], backlog.depth)
            oldest = backlog.oldest_created
            age.add_metric([name], 0.0 if oldest is None else max(0.0, now - oldest))
        yield outcomes
        yield depth
        yield age

    def _publishes(self) -> Iterable[Metric]:
        stats = self.publishes
        requests = CounterMetricFamily(
            "mercurio_publishes", "Publish requests answered, by kind.", labels=["kind"]
        )
        stored = CounterMetricFamily(
            "mercurio_published_notifications",
            "Notifications stored by publishes, by kind.",
            labels=["kind"],
        )
        for kind in PUBLISH_KINDS:
            requests.add_metric([kind], stats.requests[kind])
            stored.add_metric([kind], stats.notifications[kind])
        yield requests
        yield stored
        yield histogram(
            stats.latency,
            "mercurio_publish_seconds",
            "From a publish request's start to its rows committed.",
        )

    def _broker(self) -> Iterable[Metric]:
        health = self.fanout.health()
        if health is None:
            return  # MERCURIO_MQ=off: no broker to report on
        yield GaugeMetricFamily(
            "mercurio_broker_up",
            "1 when the broker connection is up, 0 when it is down.",
            value=1 if health.connected else 0,
        )
        yield CounterMetricFamily(
            "mercurio_broker_reconnects",
            "Times the broker connection was re-established.",
            value=health.reconnects,
        )

    def _store(self) -> Iterable[Metric]:
        store = self.store
        checked_out = GaugeMetricFamily(
            "mercurio_db_pool_checked_out",
            "Database connections in use, by pool.",
            labels=["pool"],
        )
        size = GaugeMetricFamily(
            "mercurio_db_pool_size", "Database connections kept open, by pool.", labels=["pool"]
        )
        for name, (used, kept) in store.pool_usage().items():
            checked_out.add_metric([name], used)
            size.add_metric([name], kept)
        yield checked_out
        yield size
        yield CounterMetricFamily(
            "mercurio_store_commits",
            "Publish transactions committed (each may carry many publishes).",
            value=store.batches_committed,
        )


# HTTP answers: counted by RequestContext once per request, turned into families at scrape time.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Why a request was refused, by status: the label operators alert on (a burst of
# unauthenticated means expired tokens; rate_limited, a publisher over its budget).
REFUSALS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}


class HttpTally:
    """Answers by method, route template and status, as plain ints bumped per request."""

    __slots__ = ("answers",)

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str, int], int] = {}

    def record(self, method: str, route: str, status: int) -> None:
        """Count one answer; status 0 is a client that left before it was answered."""
        # A method is whatever the client sent: anything unusual is one label, not many.
        key = (method if method in HTTP_METHODS else "OTHER", route, status)
        self.answers[key] = self.answers.get(key, 0) + 1


class _HttpCollector(Collector):
    """The HTTP request and refusal counters."""

    def __init__(self, tally: HttpTally) -> None:
        self.tally = tally

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "mercurio_http_requests",
            "HTTP requests answered, by method, route template and status "
            '(status "none": the client left before the answer).',
            labels=["method", "route", "status"],
        )
        refusals = CounterMetricFamily(
            "mercurio_http_refusals",
            "HTTP requests refused (4xx, and 503 while the store is unavailable), by route "
            "template and reason.",
            labels=["route", "reason"],
        )
        refused: dict[tuple[str, str], int] = {}
        for (method, route, status), count in list(self.tally.answers.items()):
            requests.add_metric([method, route, str(status) if status else "none"], count)
            if 400 <= status < 500 or status == 503:
                key = (route, REFUSALS.get(status, f"status_{status}"))
                refused[key] = refused.get(key, 0) + count
        for (route, reason), count in refused.items():
            refusals.add_metric([route, reason], count)
        yield requests
        yield refusals


def histogram(tally: LatencyTally, name: str, documentation: str) -> HistogramMetricFamily:
    """A tally as a Prometheus histogram (cumulative buckets, `le` bounds)."""
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(tally.bounds, tally.counts, strict=False):
        running += count
        buckets.append((repr(float(bound)), running))
    running += tally.counts[-1]
    buckets.append(("+Inf", running))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=tally.total)
