"""Durable consumers: code that must see every committed notification once, across restarts.

Live fan-out may drop (DESIGN.md invariant 3); a Web Push or e-mail channel may not. Each
`Consumer` has a cursor row in `consumer_cursors` holding the id of the last notification it
handled. The runner reads the ledger after that id, in id order, then calls `handle` inside the
transaction that advances the cursor, once it has checked the cursor did not move meanwhile:
what `handle` writes and the cursor move commit together or not at all, so a crash re-handles
the batch and nothing is handled twice.

The cursor row is also the consumer's lock. On PostgreSQL a node claims it with
`SELECT ... FOR UPDATE SKIP LOCKED`: while one node holds it the others get no row and come
back later, so in a cluster each batch is handled by exactly one node. On SQLite the writer's
`BEGIN IMMEDIATE` already lets one transaction at a time in. Reading by id is safe because ids
are handed out in commit order (invariant 4): once id N is visible, no id below it can appear.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercurio.backoff import backoff_delay
from mercurio.model import Notification
from mercurio.schema import consumer_cursors, notifications
from mercurio.store.reads import row_to_notification
from mercurio.store.state import insert_for

log = structlog.get_logger("mercurio.consumers")

PAGE_SIZE = 500
c = consumer_cursors
n = notifications


class Consumer(ABC):
    """Something that handles every committed notification exactly once, in id order."""

    name: str
    """Stable across releases: the key of the consumer's cursor."""

    from_beginning: bool = False
    """Whether a consumer seen for the first time starts at id 0 instead of the ledger's end."""

    @abstractmethod
    async def handle(self, conn: AsyncConnection, notes: list[Notification]) -> None:
        """Take `notes` (ids ascending, every client and announcements, deleted ones too).

        `conn` is the transaction that advances the cursor: write through it, and the writes
        commit with the cursor move. Raise to have the same batch handed over again later.
        A side effect outside the database (an HTTP push) belongs in a job row written here,
        or must be idempotent: after a crash before the commit, the batch comes again.
        """

    async def wants(self, reader: AsyncConnection) -> bool:
        """Whether any notification could matter to this consumer now.

        False lets the runner move the cursor past everything without reading it (a push
        channel nobody subscribed to). `reader` is a read-only connection.
        """
        return True

    def committed(self, notes: list[Notification]) -> None:  # noqa: B027 (optional hook)
        """Called once the batch `handle` took has committed (to wake whoever sends it)."""


class Head(Protocol):
    """What the runner reads without taking a write lock: the newest committed id, and the
    ledger itself through the read engine."""

    async def last_id(self) -> int: ...

    def read_engine(self) -> AsyncEngine: ...


OnCommit = Callable[[list[Notification]], None]


def each_commit(*hooks: OnCommit) -> OnCommit:
    """One Store on_commit that calls every hook in turn (fan-out first, then the others)."""

    def committed(notes: list[Notification]) -> None:
        for hook in hooks:
            hook(notes)

    return committed


class ConsumerRunner:
    """Runs each consumer in a task of its own: claim the cursor, read a page, handle, commit."""

    def __init__(
        self,
        consumers: Sequence[Consumer] = (),
        *,
        interval: float = 1.0,
        page_size: int = PAGE_SIZE,
        first_retry: float = 0.05,
        retry_cap: float = 5.0,
        close_grace: float = 10.0,
        linger: float = 0.02,
    ) -> None:
        names = [consumer.name for consumer in consumers]
        if len(set(names)) != len(names):
            raise ValueError(f"consumer names must be unique: {names}")
        self.consumers = list(consumers)
        self.interval = interval
        """Seconds between looks at the ledger when no local commit rang (other nodes' work)."""
        self.page_size = page_size
        self.first_retry = first_retry
        self.retry_cap = retry_cap
        self.close_grace = close_grace
        self.linger = linger
        self.handled: dict[str, int] = dict.fromkeys(names, 0)
        """Notifications each consumer handled on this node (committed batches only)."""
        self.failures: dict[str, int] = dict.fromkeys(names, 0)
        self.held_elsewhere: dict[str, int] = dict.fromkeys(names, 0)
        """Claims that found the cursor held by another node (which handles that batch)."""
        self._bells: dict[str, asyncio.Event] = {name: asyncio.Event() for name in names}
        self._closing = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._head: Head | None = None
        self._engine: AsyncEngine | None = None

    async def start(self, head: Head, engine: AsyncEngine) -> None:
        """Create the missing cursors, then start one task per consumer.

        `engine` must be the store's write engine: on SQLite there is one writer per database.
        A cursor made here starts at the ledger's end, so what is published after start()
        returns is handled.
        """
        self._head, self._engine = head, engine
        self._closing.clear()
        for consumer in self.consumers:
            await self._create_cursor(consumer)
        self._tasks = [
            asyncio.create_task(self._run(consumer), name=f"mercurio-consumer-{consumer.name}")
            for consumer in self.consumers
        ]

    def committed(self, notes: list[Notification]) -> None:
        """This node committed notes: look at the ledger now rather than at the next poll."""
        self.wake()

    def wake(self) -> None:
        """Have every consumer look at the ledger at once."""
        for bell in self._bells.values():
            bell.set()

    async def close(self) -> None:
        """Let each consumer finish the batch it is in (within close_grace), then stop."""
        self._closing.set()
        self.wake()
        if not self._tasks:
            return
        _, late = await asyncio.wait(self._tasks, timeout=self.close_grace)
        for task in late:
            task.cancel()  # its transaction rolls back: the batch is handled after a restart
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def position(self, name: str) -> int | None:
        """The id a consumer's cursor is at, or None when it has none yet."""
        async with self._head_().read_engine().connect() as conn:
            query = sa.select(c.c.position).where(c.c.name == name)
            value = (await conn.execute(query)).scalar()
        return int(value) if value is not None else None

    def _engine_(self) -> AsyncEngine:
        assert self._engine is not None, "consumer runner not started"
        return self._engine

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self, consumer: Consumer) -> None:
        bell = self._bells[consumer.name]
        known: int | None = None
        attempt = 0
        while not self._closing.is_set():
            bell.clear()  # a commit that rings from here on gets another look
            try:
                known, more = await self._step(consumer, known)
            except Exception as exc:
                self.failures[consumer.name] += 1
                log.warning(
                    "consumer.failed",
                    name=consumer.name,
                    error=type(exc).__name__,
                    attempt=attempt,
                )
                delay = backoff_delay(attempt, self.first_retry, self.retry_cap)
                await wait_event(self._closing, delay)
                attempt += 1
                continue
            attempt = 0
            if not more:
                await wait_event(bell, self.interval)
                # Let the commits of the next few milliseconds join this batch: one write
                # transaction for them all instead of one each, beside the publishes.
                await wait_event(self._closing, self.linger)

    async def _step(self, consumer: Consumer, known: int | None) -> tuple[int | None, bool]:
        """One batch; the cursor position now known, and whether to look again at once.

        The page is read before the write transaction, on the read engine: the write lock
        (SQLite's one writer, which publishes wait for) is held only to claim the cursor,
        write what `handle` writes and move the cursor. Reading first is safe: ids commit in
        order, and a cursor that moved meanwhile (another node) makes the batch start over.
        """
        head = await self._head_().last_id()
        if known is not None and head <= known:
            # Nothing past the cursor: no write transaction (on SQLite, no write lock) at all.
            return known, False
        if known is None:
            known = await self.position(consumer.name)
            if known is None:
                return None, False
        async with self._head_().read_engine().connect() as reader:
            wanted = await consumer.wants(reader)
            notes = await _page_after(reader, known, self.page_size) if wanted else []
        moved = notes[-1].id if notes else head
        async with self._engine_().begin() as conn:
            position = await _claim(conn, consumer.name)
            if position is None:
                self.held_elsewhere[consumer.name] += 1
                return None, False  # another node holds the cursor; look again after a while
            if position != known:
                return position, True  # another node moved it since: read from there
            if notes:
                await consumer.handle(conn, notes)
            await conn.execute(
                c.update()
                .where(c.c.name == consumer.name)
                .values(position=moved, updated_at=datetime.now(UTC))
            )
        if notes:
            consumer.committed(notes)
            self.handled[consumer.name] += len(notes)
        return moved, len(notes) == self.page_size

    def _head_(self) -> Head:
        assert self._head is not None, "consumer runner not started"
        return self._head

    async def _create_cursor(self, consumer: Consumer) -> None:
        """Insert the consumer's cursor unless a node (this one, earlier) already did."""
        async with self._engine_().begin() as conn:
            start = 0
            if not consumer.from_beginning:
                newest = sa.select(sa.func.coalesce(sa.func.max(n.c.id), 0))
                start = int((await conn.execute(newest)).scalar_one())
            row = {"name": consumer.name, "position": start, "updated_at": datetime.now(UTC)}
            statement = insert_for(conn)(c).values(**row)
            await conn.execute(statement.on_conflict_do_nothing(index_elements=[c.c.name]))


async def _claim(conn: AsyncConnection, name: str) -> int | None:
    """Lock the consumer's cursor for this transaction; None when another node holds it."""
    query = sa.select(c.c.position).where(c.c.name == name)
    if conn.dialect.name != "sqlite":
        query = query.with_for_update(skip_locked=True)
    value = (await conn.execute(query)).scalar()
    return int(value) if value is not None else None


async def _page_after(conn: AsyncConnection, position: int, limit: int) -> list[Notification]:
    query = sa.select(n).where(n.c.id > position).order_by(n.c.id).limit(limit)
    return [row_to_notification(row) for row in await conn.execute(query)]


async def wait_event(event: asyncio.Event, seconds: float) -> None:
    """Until the event is set or the seconds pass, whichever comes first."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        pass
