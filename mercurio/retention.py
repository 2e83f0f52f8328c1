"""The node's retention loop: purges what the settings say is past keeping, now and then.

Every node runs it (at start, then every MERCURIO_PRUNE_INTERVAL seconds); on PostgreSQL one
node at a time prunes, the others find the lock held and skip that turn (store/retention.py).
`mercurio db prune` runs the same pass once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog

from mercurio.config import Settings
from mercurio.consumers import wait_event
from mercurio.store import Store
from mercurio.store.retention import Policy, Report, prune

log = structlog.get_logger("mercurio.retention")

RETRY = 60.0
"""Seconds before another try after a run failed (the database was away)."""


def policy(settings: Settings, now: datetime | None = None) -> Policy:
    """What a run starting now purges, from the settings."""
    now = now or datetime.now(UTC)
    return Policy(
        old_before=now - timedelta(days=settings.retention_days),
        settled_before=now - timedelta(seconds=settings.retention_grace),
        inbox_max=settings.inbox_max,
    )


async def prune_now(store: Store, settings: Settings, *, dry_run: bool = False) -> Report:
    """One pass (dry_run: only counted)."""
    return await prune(store, policy(settings), dry_run=dry_run)


def _logged(report: Report) -> None:
    if report.total:
        log.info(
            "retention.pruned",
            notifications=report.total,
            states=report.states,
            deliveries=report.deliveries,
            **{f"by_{reason}": count for reason, count in report.notifications.items()},
        )


class RetentionLoop:
    """Runs prune_now every interval until closed; a run in progress finishes its batch."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.runs = 0
        """Runs this node finished (skipped ones included)."""
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._closing.clear()
        self._task = asyncio.create_task(self._loop(), name="mercurio-retention")

    async def close(self) -> None:
        self._closing.set()
        if self._task is not None:
            # A batch is one short transaction: cancelling mid-batch rolls it back whole.
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        # At start too: a node restarted more often than the interval still prunes.
        while not self._closing.is_set():
            delay = self.settings.prune_interval
            try:
                _logged(await prune_now(self.store, self.settings))
                self.runs += 1
            except Exception as exc:
                log.warning("retention.failed", error=type(exc).__name__)
                delay = min(delay, RETRY)
            await wait_event(self._closing, delay)
