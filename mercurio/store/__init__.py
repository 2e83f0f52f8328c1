"""Persistence: the ledger of notifications, with group-committed, commit-ordered publishes.

`Store` is the one door: publishes go through its GroupCommitWriter (writer.py), reads run
straight on the read engine (reads.py), each client's own marks on the write engine (state.py);
engines.py opens the engines and migrates them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from mercurio.errors import StoreUnavailable
from mercurio.model import NewNotification, Notification
from mercurio.store import contacts, reads, retention, scheduled, state, topics
from mercurio.store.engines import Engines, check_reachable, migrate, upgrade_database
from mercurio.store.postgres_writes import PUBLISH_LOCK_KEY
from mercurio.store.reads import Page, Replay, Status
from mercurio.store.scheduled import Due, Pending
from mercurio.store.state import PreferenceChanges, Preferences
from mercurio.store.writer import MAX_BATCH_ITEMS, GroupCommitWriter, OnCommit, OnReplaced
from mercurio.urls import database_url

REPLAY_PAGE = 100
"""Notifications a resuming stream reads and writes at a time (its replay's memory)."""

__all__ = [
    "MAX_BATCH_ITEMS",
    "PUBLISH_LOCK_KEY",
    "Due",
    "Engines",
    "GroupCommitWriter",
    "OnCommit",
    "Page",
    "Pending",
    "PreferenceChanges",
    "Preferences",
    "Replay",
    "Retraction",
    "Status",
    "Store",
    "check_reachable",
    "upgrade_database",
]


@dataclasses.dataclass(frozen=True, slots=True)
class Retraction:
    """What DELETE /api/events/{eventID} did: scheduled rows cancelled, delivered rows deleted."""

    found: bool
    """Whether the publisher has this event at all (waiting or delivered)."""
    cancelled: int
    retracted: list[tuple[str, int]]
    """The (client, id) of the delivered rows deleted now."""


class Store:
    """The database: publishes go through one group-committing writer, reads go straight."""

    def __init__(
        self, conn: str, *, on_commit: OnCommit | None = None, queue_size: int = 4096
    ) -> None:
        self.url = database_url(conn)
        self.dialect = make_url(self.url).get_backend_name()
        self._writer = GroupCommitWriter(on_commit=on_commit, queue_size=queue_size)
        self._engines: Engines | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def on_commit(self) -> OnCommit | None:
        """Called by the writer right after each commit with what it stored, in id order."""
        return self._writer.on_commit

    @on_commit.setter
    def on_commit(self, on_commit: OnCommit | None) -> None:
        self._writer.on_commit = on_commit

    @property
    def on_replaced(self) -> OnReplaced | None:
        """Called by the writer after a commit with the (client, id) of the rows that commit's
        collapse keys replaced."""
        return self._writer.on_replaced

    @on_replaced.setter
    def on_replaced(self, on_replaced: OnReplaced | None) -> None:
        self._writer.on_replaced = on_replaced

    @property
    def batches_committed(self) -> int:
        return self._writer.batches_committed

    @property
    def items_committed(self) -> int:
        return self._writer.items_committed

    # -- life cycle -------------------------------------------------------------------------

    async def start(self, *, migrate: bool = True) -> None:
        """Open the engines, bring the schema to head, start the writer."""
        self._engines = Engines.open(self.url)
        if migrate:
            await self.migrate()
        self._writer.start(self._engines.write)

    async def migrate(self) -> None:
        """Run the Alembic migrations to head (nodes of a cluster serialise on a lock)."""
        await migrate(self.write_engine())

    async def close(self) -> None:
        """Finish the publishes already queued, then close the engines."""
        await self._writer.close()
        if self._engines is not None:
            await self._engines.dispose()

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        try:
            async with self._reader().connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except Exception as exc:
            raise StoreUnavailable(str(exc)) from exc

    def pool_usage(self) -> dict[str, tuple[int, int]]:
        """Connections checked out and pool size, by pool ("read", "write"; "main" if shared)."""
        return self._engines.pool_usage() if self._engines is not None else {}

    def _reader(self) -> AsyncEngine:
        assert self._engines is not None, "store not started"
        return self._engines.read

    def read_engine(self) -> AsyncEngine:
        """The engine reads go through (a pool of its own on SQLite)."""
        return self._reader()

    def write_engine(self) -> AsyncEngine:
        """The engine writes go through (durable consumers write in their own transactions)."""
        assert self._engines is not None, "store not started"
        return self._engines.write

    # -- publishing -------------------------------------------------------------------------

    async def publish(self, items: list[NewNotification]) -> list[Notification]:
        """Store items in one transaction (shared with concurrent publishes); return them.

        An item whose (client, publisher, event id) already exists is answered with the stored
        one; EventConflict when that stored one has different content.
        """
        return await self._writer.publish(items)

    # -- scheduled notifications (store/scheduled.py) ---------------------------------------

    async def schedule(
        self, items: list[NewNotification], deliver_at: float, ttl: int | None
    ) -> list[Pending]:
        """Keep items out of the ledger until deliver_at (epoch seconds); a ttl counts from
        delivery. A repeat of the publisher's event answers with what is stored."""
        try:
            async with self.write_engine().begin() as conn:
                return await scheduled.schedule(conn, items, deliver_at, ttl, datetime.now(UTC))
        except IntegrityError:
            # The same event scheduled at the same moment by another request: it is stored
            # now, and a second look answers with it (or with its conflict).
            async with self.write_engine().begin() as conn:
                return await scheduled.schedule(conn, items, deliver_at, ttl, datetime.now(UTC))

    async def claim_due(self, owner: str, *, lease_seconds: float, limit: int) -> list[Due]:
        """Lease the scheduled rows due now (none another node leases)."""
        async with self.write_engine().begin() as conn:
            return await scheduled.claim(conn, owner, time.time(), lease_seconds, limit)

    async def finish_due(self, ids: list[int]) -> set[int]:
        """Delete moved rows; the ids still there (the missing ones were cancelled meanwhile)."""
        async with self.write_engine().begin() as conn:
            return await scheduled.finish(conn, ids)

    async def release_due(self, ids: list[int]) -> None:
        """Free leased rows that could not be moved this time."""
        async with self.write_engine().begin() as conn:
            await scheduled.release(conn, ids)

    async def release_own_scheduled(self, owner: str) -> int:
        """Free the leases this node held when it stopped."""
        async with self.write_engine().begin() as conn:
            return await scheduled.release_own(conn, owner)

    async def next_scheduled(self) -> float | None:
        """When the next scheduled row may be moved (epoch seconds; None: none waits)."""
        async with self._reader().connect() as conn:
            return await scheduled.next_due(conn)

    async def retract(self, publisher: str, event_id: str) -> Retraction:
        """Cancel the publisher's waiting rows of an event and delete its delivered ones for
        every recipient, in one transaction."""
        async with self.write_engine().begin() as conn:
            cancelled = await scheduled.cancel(conn, publisher, event_id)
            found, retracted = await scheduled.retract(conn, publisher, event_id, datetime.now(UTC))
        return Retraction(found or cancelled > 0, cancelled, retracted)

    # -- reading ----------------------------------------------------------------------------

    async def page(
        self,
        client_id: str,
        *,
        status: Status = "all",
        limit: int = 50,
        before: int | None = None,
        category: str | None = None,
        with_muted: bool = False,
    ) -> Page:
        """A page of the client's notifications, newest first, and the unread count; the
        client's muted categories are in neither unless with_muted."""
        async with self._reader().connect() as conn:
            hidden = frozenset() if with_muted else await state.muted_categories(conn, client_id)
            return await reads.page(
                conn,
                client_id,
                status=status,
                limit=limit,
                before=before,
                category=category,
                hidden=hidden,
            )

    async def unread_count(self, client_id: str, *, with_muted: bool = False) -> int:
        """How many of the client's notifications are unread (muted ones unless with_muted)."""
        async with self._reader().connect() as conn:
            hidden = frozenset() if with_muted else await state.muted_categories(conn, client_id)
            return await reads.unread_count(conn, client_id, hidden)

    async def get(self, client_id: str, notification_id: int) -> Notification | None:
        """One of the client's notifications, or None (also when it is someone else's)."""
        async with self._reader().connect() as conn:
            return await reads.get(conn, client_id, notification_id)

    async def since(
        self,
        client_id: str,
        after_id: int,
        *,
        limit: int,
        categories: frozenset[str] | None = None,
        muted: frozenset[str] = frozenset(),
    ) -> Replay:
        """What the client missed after after_id, oldest first, at most the newest `limit`:
        replay()'s pages in one."""
        whole = Replay()
        pages = self.replay(client_id, after_id, limit=limit, categories=categories, muted=muted)
        async with aclosing(pages):
            async for page in pages:
                whole.notifications += page.notifications
                whole.truncated = whole.truncated or page.truncated
        return whole

    async def replay(
        self,
        client_id: str,
        after_id: int,
        *,
        limit: int,
        page: int = REPLAY_PAGE,
        categories: frozenset[str] | None = None,
        muted: frozenset[str] = frozenset(),
    ) -> AsyncGenerator[Replay, None]:
        """What the client missed, in pages of at most `page`, oldest first: a resume's memory
        is one page.

        The first page says truncated when more than `limit` were missed and only the newest
        `limit` follow. Each page is read on a connection of its own, none is held while the
        caller writes one. Ids are committed in order, so the last page is the end: what
        commits later is the live stream's.
        """
        size = min(page, limit)
        first = await self._missed_page(client_id, after_id, size, categories, muted, limit)
        truncated = first.skipped is not None
        if first.skipped is not None:
            first = await self._missed_page(client_id, first.skipped, size, categories, muted)
        current = first
        while current.notifications:
            yield Replay(current.notifications, truncated)
            if not current.more:
                return
            truncated = False
            after = current.notifications[-1].id
            current = await self._missed_page(client_id, after, size, categories, muted)

    async def _missed_page(
        self,
        client_id: str,
        after_id: int,
        size: int,
        categories: frozenset[str] | None,
        muted: frozenset[str],
        keep_newest: int | None = None,
    ) -> reads.MissedPage:
        async with self._reader().connect() as conn:
            return await reads.missed_page(
                conn,
                client_id,
                after_id,
                size=size,
                categories=categories,
                muted=muted,
                keep_newest=keep_newest,
            )

    async def committed_after(self, after_id: int, *, limit: int) -> list[Notification]:
        """Every notification (all clients) committed with an id above after_id, in id order."""
        async with self._reader().connect() as conn:
            return await reads.committed_after(conn, after_id, limit=limit)

    async def last_id(self) -> int:
        """The highest notification id committed so far (0 when none)."""
        async with self._reader().connect() as conn:
            return await reads.last_id(conn)

    async def pruned_through(self, client_id: str) -> int:
        """The highest id retention pruned that the client could have been replayed (0: none)."""
        async with self._reader().connect() as conn:
            return await retention.pruned_through(conn, client_id)

    async def head(self, client_id: str) -> int:
        """The highest notification id the client can see (its own or an announcement)."""
        async with self._reader().connect() as conn:
            return await reads.head(conn, client_id)

    # -- each client's own state ------------------------------------------------------------

    async def set_read(
        self, client_id: str, notification_id: int, read: bool
    ) -> Notification | None:
        """Mark one notification read or unread; None when the client cannot see it."""
        async with self.write_engine().begin() as conn:
            return await state.set_read(conn, client_id, notification_id, read)

    async def mark_all_read(self, client_id: str, category: str | None = None) -> int:
        """Mark every unread notification of the client (of one category) read; how many."""
        async with self.write_engine().begin() as conn:
            return await state.mark_all_read(conn, client_id, category)

    async def delete(self, client_id: str, notification_id: int) -> bool:
        """Hide one notification from the client; False when the client cannot see it."""
        async with self.write_engine().begin() as conn:
            return await state.delete(conn, client_id, notification_id)

    async def muted_categories(self, client_id: str) -> frozenset[str]:
        """The categories this client muted."""
        async with self._reader().connect() as conn:
            return await state.muted_categories(conn, client_id)

    async def set_muted_categories(self, client_id: str, muted: Iterable[str]) -> frozenset[str]:
        """Replace the categories this client muted."""
        async with self.write_engine().begin() as conn:
            return await state.set_muted_categories(conn, client_id, muted)

    async def preferences(self, client_id: str) -> Preferences:
        """Everything the client chose: muted categories, per channel too, push and e-mail."""
        async with self._reader().connect() as conn:
            chosen = await state.read_preferences(conn, client_id)
            on = await contacts.email_enabled(conn, client_id)
        return dataclasses.replace(chosen, email_off=not on)

    async def update_preferences(self, client_id: str, change: PreferenceChanges) -> Preferences:
        """Apply change in one transaction; what is stored now.

        E-mail on/off is the contacts row's email_off, the same switch the one-click
        unsubscribe turns off.
        """
        async with self.write_engine().begin() as conn:
            if change.email_off is not None:
                await contacts.set_email_enabled(conn, client_id, not change.email_off)
            chosen = await state.update_preferences(conn, client_id, change)
            on = await contacts.email_enabled(conn, client_id)
        return dataclasses.replace(chosen, email_off=not on)

    async def consume_ticket(self, ticket_id: str, expires_at: float) -> bool:
        """Record a stream ticket as used; False when it already was (single use)."""
        try:
            async with self.write_engine().begin() as conn:
                await state.record_ticket(conn, ticket_id, expires_at)
        except IntegrityError:
            return False
        return True

    # -- topics -----------------------------------------------------------------------------

    async def subscribe(self, client_id: str, topic: str) -> int:
        """Subscribe the client to the topic from now on; the id its interval starts after."""
        async with self.write_engine().begin() as conn:
            return await topics.subscribe(conn, client_id, topic)

    async def unsubscribe(self, client_id: str, topic: str) -> int | None:
        """End the client's subscription: the id it ends at, None when it had none. What it
        received stays."""
        async with self.write_engine().begin() as conn:
            return await topics.unsubscribe(conn, client_id, topic)

    async def topics_of(self, client_id: str) -> dict[str, int]:
        """The client's topics now, each with the id its subscription starts after."""
        async with self._reader().connect() as conn:
            return await topics.subscribed(conn, client_id)

    async def subscriber_count(self, topic: str) -> int:
        """How many clients follow the topic now."""
        async with self._reader().connect() as conn:
            return await topics.subscriber_count(conn, topic)
