"""Scheduled notifications (issue 13, item 3): kept apart from the ledger until they are due.

Why a table of their own: the ledger's ids are the streams' resume cursors, handed out in
commit order (DESIGN.md invariants 2 and 4). A notification given its id at publish time but
shown only later would sit behind every cursor that moved past that id meanwhile, and a resume
would skip it. Here it has no id; when it is due, one node leases its rows (as the channels'
outbox does), publishes them through the group-commit writer like any publish (a fresh id, in
commit order, fanned out live and across nodes, seen by the durable consumers) and deletes
them. A crash between the publish and the delete is harmless: the lease runs out, a node
publishes the rows again, and the writer's (client, publisher, event id) check answers with
the stored rows instead of inserting them twice.

Times are epoch seconds, compared the same way on both dialects (as the outbox's).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from mercurio.errors import EventConflict
from mercurio.model import NewNotification, utc
from mercurio.schema import notifications, scheduled_notifications

q = scheduled_notifications
n = notifications


@dataclass(frozen=True, slots=True)
class Pending:
    """What a scheduling publish answers for one destination."""

    client_id: str
    event_id: str
    deliver_at: float | None
    """When it is due (epoch seconds); None once it was delivered."""
    notification_id: int | None
    """Its ledger id once delivered; None while it waits."""


@dataclass(frozen=True, slots=True)
class Due:
    """One leased row, as the publish it becomes."""

    row_id: int
    item: NewNotification
    ttl: int | None


async def schedule(
    conn: AsyncConnection,
    items: list[NewNotification],
    deliver_at: float,
    ttl: int | None,
    now: datetime,
) -> list[Pending]:
    """Store items to deliver at deliver_at; a repeat of an event answers with what is stored.

    EventConflict when the publisher's event id is already used (waiting or delivered) with
    other content.
    """
    known = await _known(conn, items)
    rows: list[dict[str, Any]] = []
    answers: list[Pending] = []
    for item in items:
        earlier = known.get(item.client_id) if item.check_duplicate else None
        if earlier is not None:
            content, pending = earlier
            if not item.same_content(*content):
                raise EventConflict(item.event_id)
            answers.append(pending)
            continue
        rows.append(_row(item, deliver_at, ttl, now))
        answers.append(Pending(item.client_id, item.event_id, deliver_at, None))
    if rows:
        await conn.execute(q.insert(), rows)
    return answers


def _row(
    item: NewNotification, deliver_at: float, ttl: int | None, now: datetime
) -> dict[str, Any]:
    return {
        "event_id": item.event_id,
        "publisher_id": item.publisher_id,
        "source_id": item.source_id,
        "client_id": item.client_id,
        "category": item.category,
        "data": item.data_json,
        "collapse_key": item.collapse_key,
        "ttl": ttl,
        "expires_at": item.expires_at,
        "created_at": now,
        "deliver_at": deliver_at,
    }


async def _known(
    conn: AsyncConnection, items: list[NewNotification]
) -> dict[str, tuple[tuple[str, str, str], Pending]]:
    """The stored rows (waiting or delivered) of the items' event, by client."""
    checked = [item for item in items if item.check_duplicate]
    if not checked:
        return {}
    event_id, publisher = checked[0].event_id, checked[0].publisher_id
    found: dict[str, tuple[tuple[str, str, str], Pending]] = {}
    waiting = sa.select(q.c.client_id, q.c.source_id, q.c.category, q.c.data, q.c.deliver_at)
    for row in await conn.execute(
        waiting.where(q.c.publisher_id == publisher, q.c.event_id == event_id)
    ):
        pending = Pending(row.client_id, event_id, float(row.deliver_at), None)
        found[row.client_id] = ((row.source_id, row.category, row.data), pending)
    delivered = sa.select(n.c.client_id, n.c.source_id, n.c.category, n.c.data, n.c.id)
    for row in await conn.execute(
        delivered.where(n.c.publisher_id == publisher, n.c.event_id == event_id)
    ):
        pending = Pending(row.client_id, event_id, None, int(row.id))
        found[row.client_id] = ((row.source_id, row.category, row.data), pending)
    return found


async def claim(
    conn: AsyncConnection, owner: str, now: float, lease_seconds: float, limit: int
) -> list[Due]:
    """Lease up to `limit` due rows, earliest first (rows another node leases are its own)."""
    due = (
        sa.select(q.c.id)
        .where(q.c.deliver_at <= now, sa.or_(q.c.lease_until.is_(None), q.c.lease_until < now))
        .order_by(q.c.deliver_at, q.c.id)
        .limit(limit)
    )
    if conn.dialect.name != "sqlite":
        due = due.with_for_update(skip_locked=True)  # SQLite: BEGIN IMMEDIATE, one writer
    ids = list((await conn.execute(due)).scalars())
    if not ids:
        return []
    leased = (
        q.update()
        .where(q.c.id.in_(ids))
        .values(lease_owner=owner, lease_until=now + lease_seconds)
        .returning(*q.c)
    )
    rows = sorted((await conn.execute(leased)).all(), key=lambda row: (row.deliver_at, row.id))
    return [_due(row) for row in rows]


def _due(row: sa.Row[Any]) -> Due:
    item = NewNotification(
        row.event_id,
        row.source_id,
        row.client_id,
        row.category,
        row.data,
        check_duplicate=True,  # what makes a second move of the same row harmless
        publisher_id=row.publisher_id,
        expires_at=utc(row.expires_at) if row.expires_at is not None else None,
        collapse_key=row.collapse_key,
    )
    return Due(int(row.id), item, row.ttl)


def counting_from(due: Due, delivered: datetime) -> NewNotification:
    """The publish a due row becomes: a ttl counts from its delivery."""
    if due.ttl is None:
        return due.item
    return replace(due.item, expires_at=delivered + timedelta(seconds=due.ttl))


async def finish(conn: AsyncConnection, ids: list[int]) -> set[int]:
    """Delete delivered rows; the ids that were still there (the others were cancelled)."""
    if not ids:
        return set()
    deleted = await conn.execute(q.delete().where(q.c.id.in_(ids)).returning(q.c.id))
    return set(deleted.scalars())


async def release(conn: AsyncConnection, ids: list[int]) -> None:
    """Not moved this time (the store failed): free the rows for the next try."""
    if ids:
        await conn.execute(
            q.update().where(q.c.id.in_(ids)).values(lease_owner=None, lease_until=None)
        )


async def release_own(conn: AsyncConnection, owner: str) -> int:
    """At start-up: rows this node leased when it stopped (or died) are free again now."""
    result = await conn.execute(
        q.update().where(q.c.lease_owner == owner).values(lease_owner=None, lease_until=None)
    )
    return int(result.rowcount or 0)


async def next_due(conn: AsyncConnection) -> float | None:
    """The earliest moment some row may be claimed (None: nothing is scheduled)."""
    later = sa.case((q.c.lease_until > q.c.deliver_at, q.c.lease_until), else_=q.c.deliver_at)
    value = (await conn.execute(sa.select(sa.func.min(later)))).scalar()
    return float(value) if value is not None else None


async def cancel(conn: AsyncConnection, publisher: str, event_id: str) -> int:
    """Delete the publisher's waiting rows of an event; how many."""
    result = await conn.execute(
        q.delete().where(q.c.publisher_id == publisher, q.c.event_id == event_id)
    )
    return int(result.rowcount or 0)


async def retract(
    conn: AsyncConnection, publisher: str, event_id: str, now: datetime
) -> tuple[bool, list[tuple[str, int]]]:
    """Mark the publisher's delivered rows of an event deleted (for every recipient; an
    announcement's one row for everyone). Whether any was ever delivered, and the (client, id)
    of the rows deleted now."""
    mine = sa.and_(n.c.publisher_id == publisher, n.c.event_id == event_id)
    exists = (await conn.execute(sa.select(n.c.id).where(mine).limit(1))).first() is not None
    if not exists:
        return False, []
    deleted = await conn.execute(
        n.update()
        .where(mine, n.c.deleted_at.is_(None))
        .values(deleted_at=now)
        .returning(n.c.client_id, n.c.id)
    )
    return True, sorted(((row.client_id, int(row.id)) for row in deleted), key=lambda x: x[1])
