"""Hands committed notifications to the hub strictly in id order, whatever order they arrive in.

Why a sequencer. A stream skips every id at or below the last one it sent (that is how a
resumed stream avoids duplicates), so the hub must see ids in increasing order or a client
would silently lose the smaller one. Doorbells from different nodes race each other over the
broker, a broker drops messages while a link is down, and rolled-back transactions leave holes
in the ids, so arrival order proves nothing. What does: every publish transaction takes the
store's advisory lock before it draws ids (store.PUBLISH_LOCK_KEY), so once id N is visible,
every smaller id is visible too or will never exist. The sequencer keeps a watermark W (the
highest id handed to the hub), delivers an arrival at once when it starts at W+1, holds it
otherwise, and when a hole stays open for a few milliseconds reads the store, which is the
ledger, for everything above W. After a broker reconnect it reads the store the same way,
so an outage loses nothing (DESIGN.md invariant 5).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import structlog

from mercurio.model import Notification

log = structlog.get_logger("mercurio.sequencer")

Fetch = Callable[[int, int], Awaitable[list[Notification]]]
"""Read the store: up to `limit` committed notifications above `after`, in id order."""
Deliver = Callable[[list[Notification]], None]


class Sequencer:
    """Hands notifications to `deliver` strictly in id order, filling holes from the store."""

    def __init__(
        self,
        fetch: Fetch,
        deliver: Deliver,
        *,
        debounce: float = 0.005,
        page: int = 1000,
        max_pending: int = 50_000,
        retry: float = 0.5,
    ) -> None:
        self._fetch = fetch
        self._deliver = deliver
        self.debounce = debounce
        self.page = page
        self.max_pending = max_pending
        self.retry = retry
        self.watermark = 0
        """The highest id handed to deliver; everything at or below it is done with."""
        self.target = 0
        """The highest id known to be committed."""
        self._pending: dict[int, Notification] = {}
        self._resync = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.fetches = 0
        self.fetched = 0

    def start(self, watermark: int) -> None:
        """Begin after `watermark` (what the store held when the node started)."""
        self.watermark = max(self.watermark, watermark)
        self.target = max(self.target, self.watermark)
        self._task = asyncio.create_task(self._fill_loop(), name="mercurio-sequencer")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def pending(self) -> int:
        return len(self._pending)

    def offer(self, notes: Sequence[Notification]) -> None:
        """Committed notifications, in id order, from this node's writer or another node."""
        if not notes:
            return
        w = self.watermark
        if notes[-1].id > self.target:
            self.target = notes[-1].id
        ready: list[Notification] = []
        pending = self._pending
        for note in notes:
            nid = note.id
            if nid <= w:
                continue
            if nid == w + 1:
                ready.append(note)
                w = nid
            elif len(pending) < self.max_pending:
                pending[nid] = note
            # else: dropped; target still says it exists, so the store will supply it.
        if ready:
            self.watermark = w
            self._deliver(ready)
        self._advance()

    def observe(self, last_id: int) -> None:
        """Something up to last_id was committed (a head message): make sure we have it."""
        if last_id > self.target:
            self.target = last_id
            self._advance()

    def resync(self) -> None:
        """Deliver everything committed so far that we may have missed (after a reconnect)."""
        self._resync = True
        self._wake.set()

    def _advance(self) -> None:
        pending = self._pending
        if pending:
            w = self.watermark
            ready = []
            while (note := pending.pop(w + 1, None)) is not None:
                ready.append(note)
                w = note.id
            if ready:
                self.watermark = w
                self._deliver(ready)
        if self.target > self.watermark:
            self._wake.set()

    async def _fill_loop(self) -> None:
        while True:
            await self._wake.wait()
            # Let a burst settle: the doorbell that closes the hole is usually on its way,
            # and one read then serves every message of the burst.
            await asyncio.sleep(self.debounce)
            self._wake.clear()
            while self._resync or self.target > self.watermark:
                await self._fill_once()

    async def _fill_once(self) -> None:
        goal, complete = self.target, self._resync
        self._resync = False
        after = self.watermark
        try:
            notes = await self._fetch(after, self.page)
        except Exception as exc:
            log.warning("sequencer.fetch_failed", after=after, error=f"{type(exc).__name__}")
            self._resync = self._resync or complete
            await asyncio.sleep(self.retry)
            return
        self.fetches += 1
        w = self.watermark
        ready = [note for note in notes if note.id > w]
        if ready:
            self.fetched += len(ready)
            self.watermark = ready[-1].id
            self._deliver(ready)
        if len(notes) < self.page and goal > self.watermark:
            # The read saw everything committed before it began, and `goal` was committed
            # before that: ids up to it that did not come back were deleted or rolled back.
            self.watermark = goal
        if len(notes) >= self.page:
            self._resync = self._resync or complete
        w = self.watermark
        for nid in [nid for nid in self._pending if nid <= w]:
            del self._pending[nid]
        self._advance()
