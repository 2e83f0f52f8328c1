"""Persistence: the ledger of notifications, with group-committed, commit-ordered publishes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from mercurio.errors import ConfigError, EventConflict, StoreUnavailable
from mercurio.model import ANNOUNCEMENT, NewNotification, Notification, utc
from mercurio.schema import announcement_states, notifications, preferences, stream_tickets
from mercurio.urls import database_url, redact_url

Status = Literal["all", "read", "unread"]
OnCommit = Callable[[list[Notification]], None]

# Every publishing transaction on PostgreSQL takes this transaction-scoped advisory lock before
# it draws ids, so ids are handed out in commit order across all nodes (DESIGN.md invariant 4):
# once id N is visible, every id below N is either visible too or will never exist.
PUBLISH_LOCK_KEY = 0x6D657263  # "merc"
MAX_BATCH_ITEMS = 20_000
IN_CHUNK = 500

n = notifications
s = announcement_states


@dataclass(slots=True)
class _PublishRequest:
    items: list[NewNotification]
    future: asyncio.Future[list[Notification]]


@dataclass(slots=True)
class Page:
    """One page of a client's notifications, newest first."""

    notifications: list[Notification]
    unread_count: int
    next_before: int | None


@dataclass(slots=True)
class Replay:
    """What a resuming stream missed, oldest first; truncated when it exceeded the limit."""

    notifications: list[Notification] = field(default_factory=list)
    truncated: bool = False


def _row_to_notification(row: sa.Row[Any]) -> Notification:
    read_at = row.read_at
    return Notification(
        id=row.id,
        event_id=row.event_id,
        source_id=row.source_id,
        client_id=row.client_id,
        category=row.category,
        data_json=row.data,
        created_at=utc(row.created_at),
        read_at=utc(read_at) if read_at is not None else None,
    )


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


Key = tuple[str, str, str]
"""(client, publisher, event id): a publish is idempotent per publisher."""


def _key(item: NewNotification) -> Key:
    return (item.client_id, item.publisher_id, item.event_id)


def _fail(batch: Iterable[_PublishRequest], error: Exception) -> None:
    for request in batch:
        if not request.future.done():
            request.future.set_exception(error)


def _settle(request: _PublishRequest, answer: list[Notification] | EventConflict) -> None:
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


class Store:
    """The database: publishes go through one group-committing writer, reads go straight."""

    def __init__(
        self, conn: str, *, on_commit: OnCommit | None = None, queue_size: int = 4096
    ) -> None:
        self.url = database_url(conn)
        self.dialect = make_url(self.url).get_backend_name()
        self.on_commit = on_commit
        """Called by the writer right after each commit with what it stored, in id order."""
        self._queue: asyncio.Queue[_PublishRequest] = asyncio.Queue(maxsize=queue_size)
        self._writer: asyncio.Task[None] | None = None
        self._read_engine: AsyncEngine | None = None
        self._write_engine: AsyncEngine | None = None
        self.batches_committed = 0
        self.items_committed = 0

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    # -- life cycle -------------------------------------------------------------------------

    async def start(self, *, migrate: bool = True) -> None:
        """Open the engines, bring the schema to head, start the writer."""
        self._read_engine, self._write_engine = self._engines()
        if migrate:
            await self.migrate()
        self._writer = asyncio.create_task(self._write_loop(), name="mercurio-store-writer")

    def _engines(self) -> tuple[AsyncEngine, AsyncEngine]:
        if not self.is_sqlite:
            engine = create_async_engine(self.url, pool_size=10, max_overflow=10)
            return engine, engine
        path = make_url(self.url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        reader = create_async_engine(self.url, pool_size=8, max_overflow=8)
        writer = create_async_engine(self.url, pool_size=4, max_overflow=4)
        _sqlite_pragmas(reader, immediate=False)
        _sqlite_pragmas(writer, immediate=True)
        return reader, writer

    async def migrate(self) -> None:
        """Run the Alembic migrations to head (nodes of a cluster serialise on a lock)."""
        assert self._write_engine is not None
        async with self._write_engine.begin() as conn:
            if not self.is_sqlite:
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": 1})
            await conn.run_sync(_upgrade)

    async def close(self) -> None:
        """Finish the publishes already queued, then close the engines."""
        if self._writer is not None:
            await self._queue.join()
            self._writer.cancel()
            try:
                await self._writer
            except asyncio.CancelledError:
                pass
            self._writer = None
        engines = {id(e): e for e in (self._read_engine, self._write_engine) if e is not None}
        for engine in engines.values():
            await engine.dispose()

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        try:
            async with self._reader().connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except Exception as exc:
            raise StoreUnavailable(str(exc)) from exc

    def pool_usage(self) -> dict[str, tuple[int, int]]:
        """Connections checked out and pool size, by pool ("read", "write"; "main" if shared)."""
        if self._read_engine is None or self._write_engine is None:
            return {}
        if self._read_engine is self._write_engine:
            engines = {"main": self._read_engine}
        else:
            engines = {"read": self._read_engine, "write": self._write_engine}
        usage: dict[str, tuple[int, int]] = {}
        for name, engine in engines.items():
            pool = engine.pool
            if isinstance(pool, sa.QueuePool):
                usage[name] = (pool.checkedout(), pool.size())
        return usage

    def _reader(self) -> AsyncEngine:
        assert self._read_engine is not None, "store not started"
        return self._read_engine

    def _writer_engine(self) -> AsyncEngine:
        assert self._write_engine is not None, "store not started"
        return self._write_engine

    # -- publishing -------------------------------------------------------------------------

    async def publish(self, items: list[NewNotification]) -> list[Notification]:
        """Store items in one transaction (shared with concurrent publishes); return them.

        An item whose (client, publisher, event id) already exists is answered with the stored
        one; EventConflict when that stored one has different content.
        """
        if self._writer is None or self._writer.done():
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
    ) -> tuple[list[list[Notification] | EventConflict], list[Notification]]:
        now = datetime.now(UTC)
        async with self._writer_engine().begin() as conn:
            if not self.is_sqlite:
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PUBLISH_LOCK_KEY}
                )
            all_items = [item for request in batch for item in request.items]
            known = await self._existing(conn, [i for i in all_items if i.check_duplicate])
            pending, conflicts = _plan(batch, known)
            fresh = await _insert(conn, list(pending.values()), now)
        for key, stored in zip(pending, fresh, strict=True):
            known[key] = stored
        fresh.sort(key=lambda note: note.id)
        answers: list[list[Notification] | EventConflict] = [
            conflicts[index]
            if index in conflicts
            else [known[_key(item)] for item in request.items]
            for index, request in enumerate(batch)
        ]
        return answers, fresh

    async def _existing(
        self, conn: AsyncConnection, items: list[NewNotification]
    ) -> dict[Key, Notification]:
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
                    note = _row_to_notification(row)
                    found[(note.client_id, publisher_id, note.event_id)] = note
        return found

    # -- reading ----------------------------------------------------------------------------

    @staticmethod
    def _visible(client_id: str) -> sa.Select[Any]:
        """The client's notifications and announcements, with the client's own read state."""
        joined = n.outerjoin(s, sa.and_(s.c.notification_id == n.c.id, s.c.client_id == client_id))
        return (
            sa.select(
                n.c.id,
                n.c.event_id,
                n.c.source_id,
                n.c.client_id,
                n.c.category,
                n.c.data,
                n.c.created_at,
                sa.func.coalesce(n.c.read_at, s.c.read_at).label("read_at"),
            )
            .select_from(joined)
            .where(
                n.c.client_id.in_([client_id, ANNOUNCEMENT]),
                n.c.deleted_at.is_(None),
                s.c.deleted_at.is_(None),
            )
        )

    @staticmethod
    def _unread(query: sa.Select[Any]) -> sa.Select[Any]:
        return query.where(n.c.read_at.is_(None), s.c.read_at.is_(None))

    async def page(
        self,
        client_id: str,
        *,
        status: Status = "all",
        limit: int = 50,
        before: int | None = None,
        category: str | None = None,
    ) -> Page:
        """A page of the client's notifications, newest first, and the unread count."""
        query = self._visible(client_id)
        if status == "unread":
            query = self._unread(query)
        elif status == "read":
            query = query.where(sa.or_(n.c.read_at.isnot(None), s.c.read_at.isnot(None)))
        if before is not None:
            query = query.where(n.c.id < before)
        if category is not None:
            query = query.where(n.c.category == category)
        query = query.order_by(n.c.id.desc()).limit(limit + 1)
        async with self._reader().connect() as conn:
            rows = (await conn.execute(query)).all()
            unread = await self._count_unread(conn, client_id)
        items = [_row_to_notification(row) for row in rows[:limit]]
        next_before = items[-1].id if len(rows) > limit else None
        return Page(items, unread, next_before)

    async def _count_unread(
        self, conn: AsyncConnection, client_id: str, category: str | None = None
    ) -> int:
        subquery = self._unread(self._visible(client_id))
        if category is not None:
            subquery = subquery.where(n.c.category == category)
        count = sa.select(sa.func.count()).select_from(subquery.subquery())
        return int((await conn.execute(count)).scalar_one())

    async def unread_count(self, client_id: str) -> int:
        """How many of the client's notifications are unread."""
        async with self._reader().connect() as conn:
            return await self._count_unread(conn, client_id)

    async def get(self, client_id: str, notification_id: int) -> Notification | None:
        """One of the client's notifications, or None (also when it is someone else's)."""
        query = self._visible(client_id).where(n.c.id == notification_id)
        async with self._reader().connect() as conn:
            row = (await conn.execute(query)).first()
        return _row_to_notification(row) if row is not None else None

    async def since(
        self,
        client_id: str,
        after_id: int,
        *,
        limit: int,
        categories: frozenset[str] | None = None,
        muted: frozenset[str] = frozenset(),
    ) -> Replay:
        """What the client missed after after_id, oldest first, at most the newest `limit`."""
        query = self._visible(client_id).where(n.c.id > after_id)
        if categories is not None:
            query = query.where(n.c.category.in_(sorted(categories)))
        if muted:
            query = query.where(n.c.category.not_in(sorted(muted)))
        query = query.order_by(n.c.id.desc()).limit(limit + 1)
        async with self._reader().connect() as conn:
            rows = (await conn.execute(query)).all()
        items = [_row_to_notification(row) for row in rows[:limit]]
        items.reverse()
        return Replay(items, truncated=len(rows) > limit)

    async def committed_after(self, after_id: int, *, limit: int) -> list[Notification]:
        """Every notification (all clients) committed with an id above after_id, in id order."""
        query = (
            sa.select(n)
            .where(n.c.id > after_id, n.c.deleted_at.is_(None))
            .order_by(n.c.id)
            .limit(limit)
        )
        async with self._reader().connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_row_to_notification(row) for row in rows]

    async def last_id(self) -> int:
        """The highest notification id committed so far (0 when none)."""
        async with self._reader().connect() as conn:
            value = (await conn.execute(sa.select(sa.func.max(n.c.id)))).scalar()
        return int(value or 0)

    async def head(self, client_id: str) -> int:
        """The highest notification id the client can see (its own or an announcement)."""
        query = sa.select(sa.func.max(n.c.id)).where(n.c.client_id.in_([client_id, ANNOUNCEMENT]))
        async with self._reader().connect() as conn:
            value = (await conn.execute(query)).scalar()
        return int(value or 0)

    # -- read state -------------------------------------------------------------------------

    async def set_read(
        self, client_id: str, notification_id: int, read: bool
    ) -> Notification | None:
        """Mark one notification read or unread; None when the client cannot see it."""
        now = datetime.now(UTC)
        async with self._writer_engine().begin() as conn:
            row = (
                await conn.execute(self._visible(client_id).where(n.c.id == notification_id))
            ).first()
            if row is None:
                return None
            note = _row_to_notification(row)
            read_at = (note.read_at or now) if read else None
            if note.is_announcement:
                await _upsert_state(conn, client_id, notification_id, read_at=read_at)
            else:
                await conn.execute(
                    n.update().where(n.c.id == notification_id).values(read_at=read_at)
                )
        return Notification(
            note.id,
            note.event_id,
            note.source_id,
            note.client_id,
            note.category,
            note.data_json,
            note.created_at,
            read_at,
        )

    async def mark_all_read(self, client_id: str, category: str | None = None) -> int:
        """Mark every unread notification of the client (of one category) read; how many."""
        now = datetime.now(UTC)
        async with self._writer_engine().begin() as conn:
            own = n.update().where(
                n.c.client_id == client_id, n.c.read_at.is_(None), n.c.deleted_at.is_(None)
            )
            if category is not None:
                own = own.where(n.c.category == category)
            updated = (await conn.execute(own.values(read_at=now))).rowcount or 0
            updated += await self._mark_announcements_read(conn, client_id, category, now)
        return int(updated)

    async def _mark_announcements_read(
        self, conn: AsyncConnection, client_id: str, category: str | None, now: datetime
    ) -> int:
        """One INSERT ... SELECT ... ON CONFLICT for all unread announcements, not one each.

        One statement per announcement held the write lock for seconds over a long backlog.
        """
        unread = (
            self._unread(self._visible(client_id))
            .where(n.c.client_id == ANNOUNCEMENT)
            .with_only_columns(
                sa.literal(client_id, sa.String()).label("client_id"),
                n.c.id.label("notification_id"),
                sa.literal(now, sa.DateTime(timezone=True)).label("read_at"),
            )
        )
        if category is not None:
            unread = unread.where(n.c.category == category)
        statement = _insert_for(conn)(s).from_select(
            ["client_id", "notification_id", "read_at"], unread
        )
        statement = statement.on_conflict_do_update(
            index_elements=[s.c.client_id, s.c.notification_id],
            set_={"read_at": statement.excluded.read_at},
        )
        return int((await conn.execute(statement)).rowcount or 0)

    async def delete(self, client_id: str, notification_id: int) -> bool:
        """Hide one notification from the client; False when the client cannot see it."""
        now = datetime.now(UTC)
        async with self._writer_engine().begin() as conn:
            row = (
                await conn.execute(self._visible(client_id).where(n.c.id == notification_id))
            ).first()
            if row is None:
                return False
            if row.client_id == ANNOUNCEMENT:
                read_at = utc(row.read_at) if row.read_at is not None else None
                await _upsert_state(
                    conn, client_id, notification_id, read_at=read_at, deleted_at=now
                )
            else:
                await conn.execute(
                    n.update().where(n.c.id == notification_id).values(deleted_at=now)
                )
        return True

    # -- preferences and tickets ------------------------------------------------------------

    async def muted_categories(self, client_id: str) -> frozenset[str]:
        """The categories this client muted."""
        query = sa.select(preferences.c.muted_categories).where(
            preferences.c.client_id == client_id
        )
        async with self._reader().connect() as conn:
            value = (await conn.execute(query)).scalar()
        return frozenset(orjson.loads(value)) if value else frozenset()

    async def set_muted_categories(self, client_id: str, muted: Iterable[str]) -> frozenset[str]:
        """Replace the categories this client muted."""
        chosen = frozenset(muted)
        async with self._writer_engine().begin() as conn:
            await _upsert(
                conn,
                preferences,
                {"client_id": client_id, "muted_categories": orjson.dumps(sorted(chosen)).decode()},
                keys=["client_id"],
            )
        return chosen

    async def consume_ticket(self, ticket_id: str, expires_at: float) -> bool:
        """Record a stream ticket as used; False when it already was (single use)."""
        now = time.time()
        try:
            async with self._writer_engine().begin() as conn:
                await conn.execute(
                    stream_tickets.delete().where(stream_tickets.c.expires_at < now - 60)
                )
                await conn.execute(
                    stream_tickets.insert().values(ticket_id=ticket_id, expires_at=expires_at)
                )
        except IntegrityError:
            return False
        return True


def _insert_for(conn: AsyncConnection) -> Any:
    """The dialect's INSERT construct, which knows ON CONFLICT."""
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    return insert


async def _upsert(
    conn: AsyncConnection, table: sa.Table, values: dict[str, Any], *, keys: list[str]
) -> None:
    statement = _insert_for(conn)(table).values(**values)
    updates = {k: v for k, v in values.items() if k not in keys}
    await conn.execute(statement.on_conflict_do_update(index_elements=keys, set_=updates))


async def _upsert_state(
    conn: AsyncConnection,
    client_id: str,
    notification_id: int,
    *,
    read_at: datetime | None,
    deleted_at: datetime | None = None,
) -> None:
    values = {
        "client_id": client_id,
        "notification_id": notification_id,
        "read_at": read_at,
        "deleted_at": deleted_at,
    }
    await _upsert(conn, announcement_states, values, keys=["client_id", "notification_id"])


def _sqlite_pragmas(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to choose.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a publish answered 200 survives power loss, not only a process crash.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front: a deferred transaction that upgrades from
        # read to write fails at once with SQLITE_BUSY instead of waiting its turn.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent.parent / "migrations"))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def upgrade_database(conn: str) -> None:
    """Bring the database's schema to the newest migration (`mercurio db upgrade`)."""
    store = Store(conn)
    store._read_engine, store._write_engine = store._engines()
    try:
        await store.migrate()
    finally:
        await store.close()


async def check_reachable(conn: str, timeout: float = 10.0) -> None:
    """Connect once before serving, so an unreachable database is one line, not a traceback."""
    engine = create_async_engine(database_url(conn), poolclass=sa.NullPool)

    async def select_one() -> None:
        async with engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))

    try:
        await asyncio.wait_for(select_one(), timeout)
    except TimeoutError:
        raise ConfigError(f"MERCURIO_DB_CONN: no answer from {redact_url(conn)!r}") from None
    except Exception as exc:  # whatever the driver raises, the cause is this one setting
        raise ConfigError(
            f"MERCURIO_DB_CONN: cannot use {redact_url(conn)!r}: {_reason(exc)}"
        ) from None
    finally:
        await engine.dispose()


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    lines = str(cause).strip().splitlines()
    return lines[0][:200] if lines else type(cause).__name__
