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
from mercurio.store.outbox import Delivery, Outbox

log = structlog.get_logger("mercurio.channels")


class Result(Enum):
    SENT = "sent"
    DROPPED = "dropped"  # given up on purpose: read meanwhile, gone, refused for good
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Result
    reason: str = ""
    retry_after: float | None = None
    """For RETRY: seconds the remote asked us to wait (Retry-After), else the backoff decides."""


SENT = Outcome(Result.SENT)


class Channel(Protocol):
    """How one channel sends: a group is one delivery, or with whole_client all of a client's."""

    name: str
    whole_client: bool

    async def deliver(self, group: Sequence[Delivery]) -> Outcome: ...


@dataclass
class Tally:
    """What this node's dispatcher did, for /metrics and tests."""

    sent: int = 0
    dropped: int = 0
    retried: int = 0
    failures: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class Dispatcher:
    """Sends a channel's due deliveries, a bounded number at a time; sleeps until the next."""

    def __init__(
        self,
        channel: Channel,
        outbox: Outbox,
        *,
        batch: int = 64,
        concurrency: int = 16,
        poll: float = 5.0,
        first_retry: float = 1.0,
        retry_cap: float = 600.0,
    ) -> None:
        self.channel = channel
        self.outbox = outbox
        self.batch = batch
        self.poll = poll
        """Seconds between looks when nothing rang: rows made or freed by other nodes."""
        self.first_retry = first_retry
        self.retry_cap = retry_cap
        self.tally = Tally()
        self._slots = asyncio.Semaphore(concurrency)
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
        """New deliveries were committed here: look now rather than at the next poll."""
        self._bell.set()

    async def close(self, grace: float = 10.0) -> None:
        """Finish the sends under way (within grace); leases of cut ones run out or are
        released at the next start."""
        self._closing.set()
        self._bell.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        attempt = 0
        while not self._closing.is_set():
            self._bell.clear()
            try:
                claimed = await self.outbox.claim(
                    self.batch, whole_client=self.channel.whole_client
                )
                if claimed:
                    await self._send_all(claimed)
                    attempt = 0
                    continue
                wake_at = await self.outbox.next_due()
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

    async def _send_all(self, claimed: list[Delivery]) -> None:
        groups: dict[object, list[Delivery]] = {}
        for delivery in claimed:
            key = delivery.client_id if self.channel.whole_client else delivery.id
            groups.setdefault(key, []).append(delivery)
        await asyncio.gather(*(self._send(group) for group in groups.values()))

    async def _send(self, group: list[Delivery]) -> None:
        async with self._slots:
            try:
                outcome = await self.channel.deliver(group)
            except Exception as exc:
                log.warning("channel.send_failed", channel=self.channel.name, error=repr(exc))
                outcome = Outcome(Result.RETRY, "error")
        await self._record(group, outcome)

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
        if outcome.result is Result.SENT:
            tally.sent += len(ids)
        else:
            tally.dropped += len(ids)
