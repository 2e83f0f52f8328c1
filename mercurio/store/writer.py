"""The group-commit writer: every publish goes through it, many per transaction, in id order."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from mercurio.errors import EventConflict, StoreUnavailable
from mercurio.model import NewNotification, Notification
from mercurio.store.planning import Key, Planner, Written, key_of, plan
from mercurio.store.postgres_writes import PostgresWrites
from mercurio.store.sqlite_writes import SqliteWrites

OnCommit = Callable[[list[Notification]], None]
OnReplaced = Callable[[list[tuple[str, int]]], None]
"""Called after a commit with the (client, id) of the rows its collapse keys replaced."""

MAX_BATCH_ITEMS = 20_000

Answer = list[Notification] | EventConflict


class Transactions(Protocol):
    """One dialect's publishing transaction (sqlite_writes.py, postgres_writes.py)."""

    async def write(
        self, lookups: list[NewNotification], plan: Planner, now: datetime
    ) -> Written: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _PublishRequest:
    items: list[NewNotification]
    future: asyncio.Future[list[Notification]]


class GroupCommitWriter:
    """One task that writes queued publishes, as many as are waiting, in one transaction."""

    def __init__(self, *, on_commit: OnCommit | None = None, queue_size: int = 4096) -> None:
        self.on_commit = on_commit
        """Called right after each commit with what it stored, in id order."""
        self.on_replaced: OnReplaced | None = None
        self.batches_committed = 0
        self.items_committed = 0
        self._queue: asyncio.Queue[_PublishRequest] = asyncio.Queue(maxsize=queue_size)
        self._transactions: Transactions | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, engine: AsyncEngine) -> None:
        """Start writing to the engine's database (its schema at head).

        On SQLite the writer keeps a connection of its own in a thread of its own.
        """
        self._transactions = (
            SqliteWrites(engine.url.database or "")
            if engine.dialect.name == "sqlite"
            else PostgresWrites(engine)
        )
        self._task = asyncio.create_task(self._write_loop(), name="mercurio-store-writer")

    async def close(self) -> None:
        """Finish the publishes already queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        if self._transactions is not None:
            await self._transactions.close()

    async def publish(self, items: list[NewNotification]) -> list[Notification]:
        """Store items in one transaction (shared with concurrent publishes); return them.

        An item whose (client, publisher, event id) already exists is answered with the stored
        one; EventConflict when that stored one has different content.
        """
        if self._task is None or self._task.done():
            raise StoreUnavailable("store is closed")
        future: asyncio.Future[list[Notification]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_PublishRequest(items, future))
        return await future

    async def _write_loop(self) -> None:
        # Group commit: while one transaction is being written, publishes queue up; the next
        # transaction takes all of them, so one fsync serves many requests.
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].items)
            while size < MAX_BATCH_ITEMS and not self._queue.empty():
                request = self._queue.get_nowait()
                batch.append(request)
                size += len(request.items)
            try:
                await self._commit_batch(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit_batch(self, batch: list[_PublishRequest]) -> None:
        try:
            answers, fresh, replaced = await self._write_batch(batch)
        except asyncio.CancelledError:
            _fail(batch, StoreUnavailable("store is closing"))
            raise
        except Exception as exc:
            if len(batch) > 1 and _may_be_one_items_fault(exc):
                # One bad item must not fail the innocent publishes it shared a transaction
                # with: each request gets a transaction of its own, so only the bad one fails.
                await self._commit_one_by_one(batch)
                return
            _fail(batch, StoreUnavailable(f"publish failed: {type(exc).__name__}"))
            return
        self._committed(fresh, replaced)
        for request, answer in zip(batch, answers, strict=True):
            _settle(request, answer)

    async def _commit_one_by_one(self, batch: list[_PublishRequest]) -> None:
        for index, request in enumerate(batch):
            try:
                answers, fresh, replaced = await self._write_batch([request])
            except asyncio.CancelledError:
                _fail(batch[index:], StoreUnavailable("store is closing"))
                raise
            except Exception as exc:
                _fail([request], StoreUnavailable(f"publish failed: {type(exc).__name__}"))
                if not _may_be_one_items_fault(exc):
                    # The database itself is failing: do not try the rest one at a time.
                    _fail(batch[index + 1 :], StoreUnavailable("publish failed: store"))
                    return
                continue
            self._committed(fresh, replaced)
            _settle(request, answers[0])

    def _committed(self, fresh: list[Notification], replaced: list[tuple[str, int]]) -> None:
        self.batches_committed += 1
        self.items_committed += len(fresh)
        if fresh and self.on_commit is not None:
            self.on_commit(fresh)
        # After on_commit: a stream hears of the new notification before the old one goes.
        if replaced and self.on_replaced is not None:
            self.on_replaced(replaced)

    async def _write_batch(
        self, batch: list[_PublishRequest]
    ) -> tuple[list[Answer], list[Notification], list[tuple[str, int]]]:
        """One transaction for the batch: each request's answer, the rows it inserted, and
        the (client, id) of the older rows their collapse keys replaced."""
        assert self._transactions is not None, "writer not started"
        requests = [request.items for request in batch]
        conflicts: dict[int, EventConflict] = {}
        inserted: list[Key] = []

        def planned(known: dict[Key, Notification]) -> list[NewNotification]:
            pending, found = plan(requests, known)
            conflicts.update(found)
            inserted[:] = pending
            return list(pending.values())

        lookups = [item for items in requests for item in items if item.check_duplicate]
        known, fresh, replaced = await self._transactions.write(lookups, planned, datetime.now(UTC))
        # Both dialects hand the new rows back in the order they were planned.
        known.update(zip(inserted, fresh, strict=True))
        fresh.sort(key=lambda note: note.id)
        answers: list[Answer] = [
            conflicts[index] if index in conflicts else [known[key_of(item)] for item in items]
            for index, items in enumerate(requests)
        ]
        return answers, fresh, replaced


def _fail(batch: Iterable[_PublishRequest], error: Exception) -> None:
    for request in batch:
        if not request.future.done():
            request.future.set_exception(error)


def _settle(request: _PublishRequest, answer: Answer) -> None:
    if request.future.done():
        return
    if isinstance(answer, EventConflict):
        request.future.set_exception(answer)
    else:
        request.future.set_result(answer)


def _may_be_one_items_fault(exc: Exception) -> bool:
    """Whether a failed batch may be one item's fault (bad data), not the database's."""
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        # asyncpg's own error (PostgreSQL's publishing statements run on the raw driver):
        # data exceptions (class 22) and integrity violations (23) are the row's fault.
        return sqlstate[:2] in ("22", "23")
    if isinstance(exc, sqlite3.Error):
        # The stdlib driver's own errors (SQLite's publishing connection is not SQLAlchemy's).
        return not isinstance(exc, sqlite3.OperationalError)
    if isinstance(exc, DBAPIError):
        # asyncpg reports refused data (a NUL in text, say) as a plain DBAPIError.
        return not exc.connection_invalidated and not isinstance(
            exc, OperationalError | InterfaceError
        )
    return isinstance(exc, ValueError | TypeError | StatementError)
