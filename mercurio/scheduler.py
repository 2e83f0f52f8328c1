"""The scheduler: moves scheduled notifications into the ledger when they are due.

It sleeps until the earliest row is due (store/scheduled.py), woken early by a local
schedule; it also looks every POLL_SECONDS, for rows another node scheduled and can no longer
move (stopped or died). On start it frees its own old leases, so a restart delivers what fell
due while it was down at once. A due row goes through `publish` (Node.publish: the writer,
then fan-out and the durable consumers) like any publish, so it gets a fresh id in commit
order and every stream, on every node, sees it live or in a resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog

from mercurio.errors import EventConflict
from mercurio.model import NewNotification, Notification
from mercurio.store import Due, Store
from mercurio.store.scheduled import counting_from

log = structlog.get_logger("mercurio.scheduler")

POLL_SECONDS = 5.0
"""Longest sleep: how late a row another node scheduled (and cannot move) may be moved here."""
LEASE_SECONDS = 60.0
"""How long a node's claim on due rows keeps other nodes away (a move takes milliseconds)."""
BATCH = 1000
"""Rows moved per claim."""

Publish = Callable[[list[NewNotification]], Awaitable[list[Notification]]]
Retract = Callable[[str, str], Awaitable[object]]


class Scheduler:
    """One node's mover of due scheduled notifications."""

    def __init__(self, store: Store, owner: str, publish: Publish, retract: Retract) -> None:
        self.store = store
        self.owner = owner
        self._publish = publish
        self._retract = retract
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.moved = 0

    async def start(self) -> None:
        """Free this node's leases from before a restart, then run."""
        await self.store.release_own_scheduled(self.owner)
        self._task = asyncio.create_task(self._run(), name="mercurio-scheduler")

    def scheduled(self) -> None:
        """Something was scheduled here: look at the next due time again."""
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            # Cleared before the look: a schedule made while moving wakes the next sleep.
            self._wake.clear()
            try:
                if await self.move_due():
                    continue  # a full batch: more may be due
                sleep = await self._until_next()
            except Exception as exc:  # the store is down: try again later, never spin
                log.warning("scheduler.failed", error=type(exc).__name__, detail=str(exc)[:200])
                sleep = POLL_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), sleep)

    async def _until_next(self) -> float:
        due = await self.store.next_scheduled()
        if due is None:
            return POLL_SECONDS
        return min(POLL_SECONDS, max(0.0, due - time.time()))

    async def move_due(self) -> bool:
        """Move one batch of due rows; whether the batch was full."""
        rows = await self.store.claim_due(self.owner, lease_seconds=LEASE_SECONDS, limit=BATCH)
        for group in _by_event(rows):
            await self._move(group)
        return len(rows) >= BATCH

    async def _move(self, group: list[Due]) -> None:
        ids = [due.row_id for due in group]
        now = datetime.now(UTC)
        try:
            await self._publish([counting_from(due, now) for due in group])
        except EventConflict:
            # The publisher reused the event id for other content meanwhile: that one stands.
            log.warning("scheduler.conflict", event_id=group[0].item.event_id)
        except Exception:
            await self.store.release_due(ids)
            raise
        left = await self.store.finish_due(ids)
        self.moved += len(left)
        if len(left) < len(ids):
            # Cancelled while this node was publishing it: the cancel found nothing delivered
            # yet, so the retraction is made now, for what this move delivered.
            item = group[0].item
            await self._retract(item.publisher_id, item.event_id)


def _by_event(rows: list[Due]) -> list[list[Due]]:
    """Rows of one publish (publisher, event id) together: a broadcast stays one transaction."""
    groups: dict[tuple[str, str], list[Due]] = {}
    for due in rows:
        groups.setdefault((due.item.publisher_id, due.item.event_id), []).append(due)
    return list(groups.values())
