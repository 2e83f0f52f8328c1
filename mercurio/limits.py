"""Abuse limits: token buckets for publishers."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class RateLimiter:
    """One token bucket per key: `rate` tokens a second, at most `burst` saved up.

    A rate of 0 turns the limit off. Buckets of keys that went quiet long enough to be full
    again are forgotten once there are many keys, so memory stays bounded.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, last refill time]

    def take(self, key: str, cost: float = 1.0) -> float:
        """Spend cost tokens: 0.0 when allowed, else the seconds until it would be."""
        wait = self.wait(key, cost)
        if wait == 0.0:
            self.spend(key, cost)
        return wait

    def spend(self, key: str, cost: float) -> None:
        """Spend cost tokens that wait(key, cost) has just said are there."""
        if self.rate > 0:
            self._buckets[key][0] -= min(cost, self.burst)

    def wait(self, key: str, cost: float = 1.0) -> float:
        """The seconds until cost tokens could be spent (0.0: now), spending nothing.

        A cost above the burst needs a full bucket, so an oversized request is slowed down
        instead of refused forever.
        """
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_idle(now)
            bucket = self._buckets[key] = [self.burst, now]
        bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        cost = min(cost, self.burst)
        return 0.0 if bucket[0] >= cost else (cost - bucket[0]) / self.rate

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / self.rate
        idle = [k for k, (_, last) in self._buckets.items() if now - last >= full_after]
        for key in idle:
            del self._buckets[key]


class PublishBudget:
    """A publisher's budget: requests, stored rows and stored bytes, each a token bucket.

    A broadcast is one request but thousands of rows: counting requests alone let one small
    request store hundreds of megabytes.
    """

    def __init__(self, requests: RateLimiter, rows: RateLimiter, stored_bytes: RateLimiter) -> None:
        self.limiters = (requests, rows, stored_bytes)

    def take(self, key: str, rows: int, stored_bytes: int) -> float:
        """Charge one request of rows and bytes: 0.0 when allowed, else seconds to wait."""
        requests, rows_limit, bytes_limit = self.limiters
        # Nothing is spent unless every bucket can pay, so a refusal costs the publisher nothing.
        # One wait per bucket (it refills the bucket to now), then spend: no second refill.
        wait = max(
            requests.wait(key),
            rows_limit.wait(key, rows),
            bytes_limit.wait(key, stored_bytes),
        )
        if wait > 0:
            return wait
        requests.spend(key, 1.0)
        rows_limit.spend(key, rows)
        bytes_limit.spend(key, stored_bytes)
        return 0.0


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
