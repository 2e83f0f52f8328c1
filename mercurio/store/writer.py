"""The group-commit writer: every publish goes through it, many per transaction, in id order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercurio.errors import EventConflict, StoreUnavailable
from mercurio.model import NewNotification, Notification
from mercurio.schema import notifications
from mercurio.store.reads import row_to_notification

OnCommit = Callable[[list[Notification]], None]

# Every publishing transaction on PostgreSQL takes this transaction-scoped advisory lock before
# it draws ids, so ids are handed out in commit order across all nodes (DESIGN.md invariant 4):
# once id N is visible, every id below N is either visible too or will never exist.
PUBLISH_LOCK_KEY = 0x6D657263  # "merc"
MAX_BATCH_ITEMS = 20_000
IN_CHUNK = 500

n = notifications

Key = tuple[str, str, str]
"""(client, publisher, event id): a publish is idempotent per publisher."""

Answer = list[Notification] | EventConflict


@dataclass(slots=True)
class _PublishRequest:
    items: list[NewNotification]
    future: asyncio.Future[list[Notification]]


class GroupCommitWriter:
    """One task that writes queued publishes, as many as are waiting, in one transaction."""

    def __init__(self, *, on_commit: OnCommit | None = None, queue_size: int = 4096) -> None:
        self.on_commit = on_commit
        """Called right after each commit with what it stored, in id order."""
        self.batches_committed = 0
        self.items_committed = 0
        self._queue: asyncio.Queue[_PublishRequest] = asyncio.Queue(maxsize=queue_size)
        self._engine: AsyncEngine | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, engine: AsyncEngine) -> None:
        """Start writing through the engine (its schema at head)."""
        self._engine = engine
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
            answers, fresh = await self._write_batch(batch)
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
        self._committed(fresh)
        for request, answer in zip(batch, answers, strict=True):
            _settle(request, answer)

    async def _commit_one_by_one(self, batch: list[_PublishRequest]) -> None:
        for index, request in enumerate(batch):
            try:
                answers, fresh = await self._write_batch([request])
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
            self._committed(fresh)
            _settle(request, answers[0])

    def _committed(self, fresh: list[Notification]) -> None:
        self.batches_committed += 1
        self.items_committed += len(fresh)
        if fresh and self.on_commit is not None:
            self.on_commit(fresh)

    async def _write_batch(
        self, batch: list[_PublishRequest]
    ) -> tuple[list[Answer], list[Notification]]:
        """One transaction for the batch: each request's answer, and the rows it inserted."""
        assert self._engine is not None, "writer not started"
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            if conn.dialect.name != "sqlite":
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PUBLISH_LOCK_KEY}
                )
            all_items = [item for request in batch for item in request.items]
            known = await _existing(conn, [i for i in all_items if i.check_duplicate])
            pending, conflicts = _plan(batch, known)
            fresh = await _insert(conn, list(pending.values()), now)
        for key, stored in zip(pending, fresh, strict=True):
            known[key] = stored
        fresh.sort(key=lambda note: note.id)
        answers: list[Answer] = [
            conflicts[index]
            if index in conflicts
            else [known[_key(item)] for item in request.items]
            for index, request in enumerate(batch)
        ]
        return answers, fresh


def _key(item: NewNotification) -> Key:
    return (item.client_id, item.publisher_id, item.event_id)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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
    if isinstance(exc, DBAPIError):
        # asyncpg reports refused data (a NUL in text, say) as a plain DBAPIError.
        return not exc.connection_invalidated and not isinstance(
            exc, OperationalError | InterfaceError
        )
    return isinstance(exc, ValueError | TypeError | StatementError)


def _plan(
    batch: list[_PublishRequest], known: dict[Key, Notification]
) -> tuple[dict[Key, NewNotification], dict[int, EventConflict]]:
    """The rows to insert, and the requests that reuse an event id for different content."""
    pending: dict[Key, NewNotification] = {}
    conflicts: dict[int, EventConflict] = {}
    for index, request in enumerate(batch):
        mine: dict[Key, NewNotification] = {}
        for item in request.items:
            key = _key(item)
            if not _agrees(item, known.get(key) or pending.get(key) or mine.get(key)):
                conflicts[index] = EventConflict(item.event_id)
                break
            if key not in known:
                mine.setdefault(key, item)
        else:
            for key, item in mine.items():
                pending.setdefault(key, item)
    return pending, conflicts


def _agrees(item: NewNotification, earlier: Notification | NewNotification | None) -> bool:
    if earlier is None:
        return True
    return item.same_content(earlier.source_id, earlier.category, earlier.data_json)


async def _existing(conn: AsyncConnection, items: list[NewNotification]) -> dict[Key, Notification]:
    """The stored notifications these items would repeat, by key."""
    by_event: dict[tuple[str, str], set[str]] = {}
    for item in items:
        by_event.setdefault((item.event_id, item.publisher_id), set()).add(item.client_id)
    found: dict[Key, Notification] = {}
    for (event_id, publisher_id), clients in by_event.items():
        for chunk in _chunks(sorted(clients), IN_CHUNK):
            query = sa.select(n).where(
                n.c.event_id == event_id,
                n.c.publisher_id == publisher_id,
                n.c.client_id.in_(chunk),
            )
            for row in await conn.execute(query):
                note = row_to_notification(row)
                found[(note.client_id, publisher_id, note.event_id)] = note
    return found


async def _insert(
    conn: AsyncConnection, items: list[NewNotification], now: datetime
) -> list[Notification]:
    """Insert the items; the stored notifications in the items' order."""
    if not items:
        return []
    rows = [
        {
            "event_id": item.event_id,
            "source_id": item.source_id,
            "client_id": item.client_id,
            "category": item.category,
            "data": item.data_json,
            "created_at": now,
            "publisher_id": item.publisher_id,
        }
        for item in items
    ]
    result = await conn.execute(n.insert().returning(n.c.id, sort_by_parameter_order=True), rows)
    return [
        Notification(
            row.id,
            item.event_id,
            item.source_id,
            item.client_id,
            item.category,
            item.data_json,
            now,
        )
        for item, row in zip(items, result.all(), strict=True)
    ]
