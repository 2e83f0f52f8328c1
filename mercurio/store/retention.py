"""Retention: which notifications are purged, with their states and owed deliveries, and how.

Four reasons, taken in this order (a row counts under the first that applies):

- `retention`: created more than MERCURIO_RETENTION_DAYS ago;
- `deleted`: deleted by its client more than the grace ago;
- `expired`: expired more than the grace ago;
- `inbox_max`: beyond the newest MERCURIO_INBOX_MAX of one client's own rows (announcements
  and topic notifications are shared, nobody's inbox, and are not counted).

Each batch (at most BATCH ids) is one short transaction, with a pause between batches, so a
publish waits for the write lock a batch at most. A dry run walks the same batches read-only
and counts what each would remove.

The newest notification is never purged: SQLite hands out max(id) + 1, so purging the top
row would hand its id out again, and a stream resuming from it would skip or repeat. Rows
published while a run goes are above the top it read at its start and are not looked at.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from mercurio.model import ANNOUNCEMENT, TOPIC_PREFIX, utc
from mercurio.schema import announcement_states, deliveries, notifications, prune_marks
from mercurio.store.engines import EngineSource
from mercurio.store.state import insert_for

BATCH = 500
"""Notifications purged in one transaction."""
PAUSE = 0.05
"""Seconds between two batches: publishes get the write lock in between."""
REASONS = ("retention", "deleted", "expired", "inbox_max")
EVERYONE = ANNOUNCEMENT
"""prune_marks' key for what age pruning removed: it concerns every client."""

n = notifications
s = announcement_states
d = deliveries
m = prune_marks


@dataclass(frozen=True, slots=True)
class Policy:
    """What a run purges: created before `old_before`; deleted or expired before
    `settled_before`; over `inbox_max` rows of one client."""

    old_before: datetime
    settled_before: datetime
    inbox_max: int
    batch: int = BATCH
    pause: float = PAUSE


@dataclass(slots=True)
class Report:
    """What a run removed (or, in a dry run, would remove)."""

    dry_run: bool
    notifications: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    states: int = 0
    deliveries: int = 0
    skipped: bool = False
    """Another node was pruning: this run did nothing."""

    @property
    def total(self) -> int:
        return sum(self.notifications.values())


async def prune(engines: EngineSource, policy: Policy, *, dry_run: bool = False) -> Report:
    """Purge (or count, dry_run) what the policy says, one node at a time."""
    report = Report(dry_run)
    async with _one_node_at_a_time(engines) as held:
        if not held:
            report.skipped = True
            return report
        run = _Run(engines, policy, report)
        await run.go()
    return report


@asynccontextmanager
async def _one_node_at_a_time(engines: EngineSource) -> AsyncIterator[bool]:
    """On PostgreSQL, a session advisory lock held for the run: another node's run skips.

    The lock's connection commits at once, so it idles outside a transaction and holds back
    no vacuum. SQLite has one node (config refuses sharing it) and one writer at a time.
    """
    engine = engines.write_engine()
    if engine.dialect.name == "sqlite":
        yield True
        return
    key = sa.func.hashtext("mercurio.retention")
    async with engine.connect() as conn:
        held = bool((await conn.execute(sa.select(sa.func.pg_try_advisory_lock(key)))).scalar())
        await conn.commit()
        try:
            yield held
        finally:
            if held:
                await conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                await conn.commit()


class _Run:
    """One pass over the four reasons."""

    def __init__(self, engines: EngineSource, policy: Policy, report: Report) -> None:
        self.engines = engines
        self.policy = policy
        self.report = report
        self.top = 0
        self.old_through = 0
        """Every id up to this one is old (age pruning takes a prefix of the ids)."""

    async def go(self) -> None:
        async with self.engines.read_engine().connect() as conn:
            self.top = int((await conn.execute(sa.select(sa.func.max(n.c.id)))).scalar() or 0)
        await self._old()
        await self._settled("deleted", self._deleted())
        await self._settled("expired", sa.and_(self._expired(), sa.not_(self._deleted())))
        await self._over_inbox_max()

    # -- the reasons ------------------------------------------------------------------------

    async def _old(self) -> None:
        """Walk ids up from the oldest while they are old: created_at grows with the id (ids
        are drawn at commit), so the old ones are a prefix and no index on created_at is
        needed. A row a clock step made out of order waits for a later run."""
        after = 0
        while True:
            query = (
                sa.select(n.c.id, n.c.created_at)
                .where(n.c.id > after, n.c.id < self.top)
                .order_by(n.c.id)
                .limit(self.policy.batch)
            )
            rows = await self._read(query)
            old = []
            for row in rows:
                if utc(row.created_at) >= self.policy.old_before:
                    break
                old.append(int(row.id))
            if old:
                self.old_through = old[-1]
                await self._remove(old, "retention", mark=EVERYONE)
            if len(old) < len(rows) or len(rows) < self.policy.batch:
                return
            after = old[-1]

    async def _settled(self, reason: str, condition: sa.ColumnElement[bool]) -> None:
        after = self.old_through
        while True:
            query = (
                sa.select(n.c.id)
                .where(n.c.id > after, n.c.id < self.top, condition)
                .order_by(n.c.id)
                .limit(self.policy.batch)
            )
            ids = [int(row.id) for row in await self._read(query)]
            if ids:
                await self._remove(ids, reason)
            if len(ids) < self.policy.batch:
                return
            after = ids[-1]

    async def _over_inbox_max(self) -> None:
        """Each client over the cap loses its oldest rows beyond the newest inbox_max."""
        cap = self.policy.inbox_max
        query = (
            sa.select(n.c.client_id)
            .where(
                n.c.client_id != ANNOUNCEMENT,
                # A topic's rows are shared like an announcement, not one client's inbox.
                n.c.client_id.not_like(f"{TOPIC_PREFIX}%"),
                n.c.id <= self.top,
                self._surviving(),
            )
            .group_by(n.c.client_id)
            .having(sa.func.count() > cap)
            .order_by(n.c.client_id)
        )
        for client_id in [str(row.client_id) for row in await self._read(query)]:
            own = sa.and_(n.c.client_id == client_id, n.c.id <= self.top, self._surviving())
            newest_over = sa.select(n.c.id).where(own).order_by(n.c.id.desc()).offset(cap).limit(1)
            cut = [int(row.id) for row in await self._read(newest_over)]
            if cut:
                await self._trim_client(client_id, sa.and_(own, n.c.id <= cut[0]))

    async def _trim_client(self, client_id: str, condition: sa.ColumnElement[bool]) -> None:
        after = 0
        while True:
            query = (
                sa.select(n.c.id)
                .where(n.c.id > after, condition)
                .order_by(n.c.id)
                .limit(self.policy.batch)
            )
            ids = [int(row.id) for row in await self._read(query)]
            if ids:
                await self._remove(ids, "inbox_max", mark=client_id)
            if len(ids) < self.policy.batch:
                return
            after = ids[-1]

    # -- conditions -------------------------------------------------------------------------

    def _deleted(self) -> sa.ColumnElement[bool]:
        return sa.and_(n.c.deleted_at.isnot(None), n.c.deleted_at < self.policy.settled_before)

    def _expired(self) -> sa.ColumnElement[bool]:
        return sa.and_(n.c.expires_at.isnot(None), n.c.expires_at < self.policy.settled_before)

    def _surviving(self) -> sa.ColumnElement[bool]:
        """Rows the first three reasons leave. After a real run's first passes that is every
        row, but a dry run removed nothing and must not count a row twice."""
        if not self.report.dry_run:
            return sa.true()
        return sa.and_(
            n.c.id > self.old_through, sa.not_(self._deleted()), sa.not_(self._expired())
        )

    # -- reading and removing ---------------------------------------------------------------

    async def _read(self, query: sa.Select[Any]) -> Sequence[sa.Row[Any]]:
        async with self.engines.read_engine().connect() as conn:
            rows: Sequence[sa.Row[Any]] = (await conn.execute(query)).all()
        return rows

    async def _remove(self, ids: list[int], reason: str, *, mark: str | None = None) -> None:
        """Remove one batch (dry run: count it), then let publishes in."""
        if self.report.dry_run:
            async with self.engines.read_engine().connect() as conn:
                self.report.states += await _count(conn, s, s.c.notification_id.in_(ids))
                self.report.deliveries += await _count(conn, d, d.c.notification_id.in_(ids))
            self.report.notifications[reason] += len(ids)
            return
        async with self.engines.write_engine().begin() as conn:
            self.report.deliveries += await _delete(conn, d, d.c.notification_id.in_(ids))
            self.report.states += await _delete(conn, s, s.c.notification_id.in_(ids))
            self.report.notifications[reason] += await _delete(conn, n, n.c.id.in_(ids))
            if mark is not None:
                await _raise_mark(conn, mark, max(ids))
        await asyncio.sleep(self.policy.pause)


async def _count(conn: AsyncConnection, table: sa.Table, where: sa.ColumnElement[bool]) -> int:
    query = sa.select(sa.func.count()).select_from(table).where(where)
    return int((await conn.execute(query)).scalar_one())


async def _delete(conn: AsyncConnection, table: sa.Table, where: sa.ColumnElement[bool]) -> int:
    return int((await conn.execute(table.delete().where(where))).rowcount or 0)


async def _raise_mark(conn: AsyncConnection, client_id: str, pruned_id: int) -> None:
    """prune_marks[client_id] becomes at least pruned_id."""
    statement = insert_for(conn)(m).values(client_id=client_id, pruned_through=pruned_id)
    excluded = statement.excluded.pruned_through
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[m.c.client_id],
            set_={
                "pruned_through": sa.case(
                    (excluded > m.c.pruned_through, excluded), else_=m.c.pruned_through
                )
            },
        )
    )


async def pruned_through(conn: AsyncConnection, client_id: str) -> int:
    """The highest id pruned that this client's stream could have replayed (0: none)."""
    query = sa.select(sa.func.max(m.c.pruned_through)).where(
        m.c.client_id.in_([client_id, EVERYONE])
    )
    return int((await conn.execute(query)).scalar() or 0)
