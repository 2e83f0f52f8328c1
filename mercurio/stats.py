"""Plain counters the hot paths bump (latency tallies, publish counts); a leaf module.

The hot paths (fan-out, stream writes, publishes) only bump plain ints and list slots on the
event loop's thread; nothing takes a lock or builds a label set per delivery. The Prometheus
exporter (metrics.py) reads them at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

PUBLISH_KINDS = ("unicast", "broadcast", "announce", "topic")

# Seconds. Publishes wait for a group commit (an fsync on SQLite, a round trip on PostgreSQL);
# deliveries add the fan-out and one socket write.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class LatencyTally:
    """A histogram kept as plain numbers: one bisect and two additions per observation.

    Everything that observes runs on the event loop's thread, as does the scrape, so no lock.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left puts a value equal to a bound in that bound's bucket: Prometheus' `le`.
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds


class PublishStats:
    """Publish requests and the notifications they stored, by kind, and their latency."""

    __slots__ = ("latency", "notifications", "requests")

    def __init__(self) -> None:
        self.requests = dict.fromkeys(PUBLISH_KINDS, 0)
        self.notifications = dict.fromkeys(PUBLISH_KINDS, 0)
        self.latency = LatencyTally()

    def record(self, kind: str, stored: int, seconds: float) -> None:
        self.requests[kind] += 1
        self.notifications[kind] += stored
        self.latency.observe(seconds)
