"""The loop that sends what a channel owes: lease due rows, send them, record the outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import structlog

from mercurio.backoff import backoff_delay
from mercurio.consumers import wait_event
from mercurio.store.outbox import Backlog, Delivery, Outbox

log = structlog.get_logger("mercurio.channels")


class Result(Enum):
    SENT = "sent"
    DROPPED = "dropped"  # owed no more: read or deleted meanwhile, muted, turned off
    PRUNED = "pruned"  # the address is gone (a push subscription answered 404 or 410)
    FAILED = "failed"  # refused for good, or expired before it could be sent
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Result
    reason: str = ""
    retry_after: float | None = None
    """For RETRY: seconds the remote asked us to wait (Retry-After), else the backoff decides."""


SENT = Outcome(Result.SENT)
BACKLOG_EVERY = 1.0
FINISHED = (Result.SENT, Result.DROPPED, Result.PRUNED, Result.FAILED)


class Channel(Protocol):
    """How one channel sends: a group is one delivery, or with whole_client all of a client's."""

    name: str
    whole_client: bool

    async def deliver(self, group: Sequence[Delivery]) -> Outcome: ...


@dataclass
class Tally:
    """What this node's dispatcher did, for /metrics and tests."""

    finished: dict[Result, int] = field(default_factory=lambda: dict.fromkeys(FINISHED, 0))
    retried: int = 0
    failures: int = 0
    """Rounds the database refused (claim or record); the rows stay owed."""
    reasons: dict[str, int] = field(default_factory=dict)


class Dispatcher:
    """Sends a channel's due deliveries, up to `concurrency` groups at once; sleeps until the next.

    A group that is slow to answer holds one slot, not the loop: the others keep being claimed
    and sent as slots free up (a push service that hangs for one user delays nobody else).
    """

    def __init__(
        self,
        channel: Channel,
        outbox: Outbox,
        *,
        concurrency: int = 16,
        poll: float = 5.0,
        first_retry: float = 1.0,
        retry_cap: float = 600.0,
    ) -> None:
        self.channel = channel
        self.outbox = outbox
        self.concurrency = concurrency
        self.poll = poll
        """Seconds between looks when nothing rang: rows made or freed by other nodes."""
        self.first_retry = first_retry
        self.retry_cap = retry_cap
        self.tally = Tally()
        self.backlog = Backlog(0, None)
        """What the channel owes, as of the last look (at most BACKLOG_EVERY seconds old
        while the loop runs, one poll when idle): for /metrics, whose scrape cannot query."""
        self._backlog_at = 0.0
        self._sending: set[asyncio.Task[None]] = set()
        self._bell = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        released = await self.outbox.release_own()
        if released:
            log.info("channel.resumed", channel=self.channel.name, deliveries=released)
        self._closing.clear()
        self._task = asyncio.create_task(self._run(), name=f"mercurio-{self.channel.name}")

    def wake(self) -> None:
        """New deliveries were committed here, or a slot freed: look now, not at the next poll."""
        self._bell.set()

    async def close(self, grace: float = 10.0) -> None:
        """Stop claiming and finish the sends under way (within grace); leases of cut ones run
        out or are released at the next start."""
        self._closing.set()
        self._bell.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._sending:
            _, cut = await asyncio.wait(set(self._sending), timeout=grace)
            for task in cut:
                task.cancel()
            await asyncio.gather(*cut, return_exceptions=True)

    async def _run(self) -> None:
        attempt = 0
        while not self._closing.is_set():
            self._bell.clear()
            room = self.concurrency - len(self._sending)
            try:
                await self._look_at_backlog()
                if room > 0 and await self._claim_and_launch(room):
                    attempt = 0
                    continue
                wake_at = await self.outbox.next_due() if room > 0 else None
            except Exception as exc:  # the database is away: try again later, forget nothing
                self.tally.failures += 1
                log.warning("channel.failed", channel=self.channel.name, error=repr(exc))
                await wait_event(self._closing, backoff_delay(attempt, 0.1, self.poll))
                attempt += 1
                continue
            attempt = 0
            pause = self.poll if wake_at is None else min(self.poll, wake_at - time.time())
            if pause > 0:
                await wait_event(self._bell, pause)

    async def _look_at_backlog(self) -> None:
        now = time.monotonic()
        if now - self._backlog_at >= BACKLOG_EVERY:
            self._backlog_at = now
            self.backlog = await self.outbox.backlog()

    async def _claim_and_launch(self, room: int) -> bool:
        """Lease up to `room` due groups and start sending each; whether any was due."""
        claimed = await self.outbox.claim(room, whole_client=self.channel.whole_client)
        groups: dict[object, list[Delivery]] = {}
        for delivery in claimed:
            key = delivery.client_id if self.channel.whole_client else delivery.id
            groups.setdefault(key, []).append(delivery)
        for group in groups.values():
            task = asyncio.create_task(self._send(group))
            self._sending.add(task)
            task.add_done_callback(self._landed)
        return bool(claimed)

    def _landed(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._bell.set()  # a slot is free

    async def _send(self, group: list[Delivery]) -> None:
        try:
            outcome = await self.channel.deliver(group)
        except Exception as exc:
            log.warning("channel.send_failed", channel=self.channel.name, error=repr(exc))
            outcome = Outcome(Result.RETRY, "error")
        try:
            await self._record(group, outcome)
        except Exception as exc:  # the lease runs out and the rows are claimed again
            self.tally.failures += 1
            log.warning("channel.record_failed", channel=self.channel.name, error=repr(exc))

    async def _record(self, group: list[Delivery], outcome: Outcome) -> None:
        ids = [delivery.id for delivery in group]
        tally = self.tally
        tally.reasons[outcome.reason] = tally.reasons.get(outcome.reason, 0) + 1
        if outcome.result is Result.RETRY:
            attempts = max(delivery.attempts for delivery in group)
            delay = backoff_delay(attempts - 1, self.first_retry, self.retry_cap)
            if outcome.retry_after is not None:
                delay = max(delay, outcome.retry_after)
            await self.outbox.retry(ids, time.time() + delay)
            tally.retried += len(ids)
            return
        await self.outbox.finish(ids)
        tally.finished[outcome.result] += len(ids)
