"""The channels' owed deliveries: enqueued with the consumer's cursor, leased, then finished.

A row is what one channel still owes one recipient for one notification. A node leases rows
(and commits the lease) before it sends, so in a cluster each row is sent by one node at a
time; a node that dies mid-send leaves a lease that runs out, after which any node takes the
row again. A row is deleted only after the send succeeded or was given up: nothing owed is
forgotten by a crash. The one window left is between the remote's acceptance and our commit,
milliseconds wide; each channel makes a resend harmless (push Topic and tag, e-mail Message-ID).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from mercurio.model import utc
from mercurio.schema import deliveries, notifications
from mercurio.store.engines import EngineSource

d = deliveries


@dataclass(frozen=True, slots=True)
class Delivery:
    """One leased row: what to send, to whom, and how many times it was tried before."""

    id: int
    client_id: str
    notification_id: int
    subscription_id: int | None
    attempts: int
    """Leases taken so far, this one included (1 on the first try)."""


async def enqueue(conn: AsyncConnection, channel: str, rows: Sequence[dict[str, Any]]) -> None:
    """Add owed deliveries (client_id, notification_id, subscription_id?, due_at) in conn."""
    if rows:
        await conn.execute(d.insert(), [{"channel": channel, **row} for row in rows])


@dataclass(frozen=True, slots=True)
class Backlog:
    depth: int
    oldest_created: float | None
    """Epoch seconds: when the oldest owed notification was published (None: nothing owed)."""


class Outbox:
    """The deliveries of one channel, as one node sees them."""

    def __init__(
        self, engines: EngineSource, channel: str, owner: str, *, lease_seconds: float = 60.0
    ) -> None:
        self._engines = engines
        self.channel = channel
        self.owner = owner
        self.lease_seconds = lease_seconds

    def _free(self, now: float) -> sa.ColumnElement[bool]:
        return sa.and_(
            d.c.channel == self.channel,
            sa.or_(d.c.lease_until.is_(None), d.c.lease_until < now),
        )

    def _being_sent(self, now: float) -> sa.ColumnElement[bool]:
        """The row's client has a leased row: a digest for it is being sent right now."""
        busy = deliveries.alias("busy")
        return (
            sa.select(busy.c.id)
            .where(
                busy.c.channel == self.channel,
                busy.c.client_id == d.c.client_id,
                busy.c.lease_until >= now,
            )
            .exists()
        )

    async def claim(self, limit: int, *, whole_client: bool = False) -> list[Delivery]:
        """Lease up to `limit` due rows; with whole_client, also their clients' other free rows
        (an e-mail digest takes everything a client is owed)."""
        now = time.time()
        async with self._engines.write_engine().begin() as conn:
            due = (
                sa.select(d.c.id, d.c.client_id)
                .where(self._free(now), d.c.due_at <= now)
                .order_by(d.c.due_at, d.c.id)
                .limit(limit)
            )
            if whole_client:
                await _one_claim_at_a_time(conn, self.channel)
                due = due.where(~self._being_sent(now))
            rows = (await conn.execute(_skip_locked(conn, due))).all()
            ids = {row.id for row in rows}
            if whole_client and rows:
                clients = sorted({row.client_id for row in rows})
                more = sa.select(d.c.id).where(self._free(now), d.c.client_id.in_(clients))
                ids.update((await conn.execute(_skip_locked(conn, more))).scalars())
            if not ids:
                return []
            leased = (
                d.update()
                .where(d.c.id.in_(sorted(ids)))
                .values(
                    lease_owner=self.owner,
                    lease_until=now + self.lease_seconds,
                    attempts=d.c.attempts + 1,
                )
                .returning(
                    d.c.id, d.c.client_id, d.c.notification_id, d.c.subscription_id, d.c.attempts
                )
            )
            found = (await conn.execute(leased)).all()
        return sorted((Delivery(*row) for row in found), key=lambda x: x.id)

    async def finish(self, ids: Iterable[int]) -> None:
        """Sent or given up: the rows are owed no more."""
        chosen = sorted(ids)
        if chosen:
            async with self._engines.write_engine().begin() as conn:
                await conn.execute(d.delete().where(d.c.id.in_(chosen)))

    async def retry(self, ids: Iterable[int], at: float) -> None:
        """Not sent this time: free the rows again from `at` on."""
        chosen = sorted(ids)
        if chosen:
            async with self._engines.write_engine().begin() as conn:
                await conn.execute(
                    d.update()
                    .where(d.c.id.in_(chosen))
                    .values(due_at=at, lease_owner=None, lease_until=None)
                )

    async def next_due(self) -> float | None:
        """The earliest moment some row of this channel may be claimed (None: none owed)."""
        later = sa.case((d.c.lease_until > d.c.due_at, d.c.lease_until), else_=d.c.due_at)
        async with self._engines.read_engine().connect() as conn:
            query = sa.select(sa.func.min(later)).where(d.c.channel == self.channel)
            value = (await conn.execute(query)).scalar()
        return float(value) if value is not None else None

    async def release_own(self) -> int:
        """At start-up: leases this node held when it stopped (or died) are free again now."""
        async with self._engines.write_engine().begin() as conn:
            result = await conn.execute(
                d.update()
                .where(d.c.channel == self.channel, d.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_until=None)
            )
        return int(result.rowcount or 0)

    async def backlog(self) -> Backlog:
        """How many deliveries this channel owes (all nodes), and since when the oldest."""
        n = notifications
        query = (
            sa.select(sa.func.count(), sa.func.min(n.c.created_at))
            .select_from(d.outerjoin(n, n.c.id == d.c.notification_id))
            .where(d.c.channel == self.channel)
        )
        async with self._engines.read_engine().connect() as conn:
            depth, oldest = (await conn.execute(query)).one()
        return Backlog(int(depth), utc(oldest).timestamp() if oldest is not None else None)


async def _one_claim_at_a_time(conn: AsyncConnection, channel: str) -> None:
    """On PostgreSQL, whole-client claims of one channel queue behind each other until commit.

    SKIP LOCKED alone lets two nodes each lock a different row of one client in the same
    instant, and each would send that client a digest. Behind this lock, a claim sees the
    leases the one before it committed (READ COMMITTED takes a snapshot per statement).
    """
    if conn.dialect.name != "sqlite":
        key = sa.func.hashtext(f"mercurio.outbox.{channel}")
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


def _skip_locked(conn: AsyncConnection, query: sa.Select[Any]) -> sa.Select[Any]:
    """On PostgreSQL, rows another node is leasing right now are left to it."""
    if conn.dialect.name == "sqlite":
        return query  # BEGIN IMMEDIATE already lets one writer in
    return query.with_for_update(skip_locked=True)
