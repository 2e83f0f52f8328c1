"""Queries over the ledger: what a client can see, pages, replays, heads and counts."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from mercurio.model import ANNOUNCEMENT, TOPIC_PREFIX, Notification, utc
from mercurio.schema import (
    announcement_states,
    client_first_seen,
    notifications,
    topic_subscriptions,
)

Status = Literal["all", "read", "unread"]

n = notifications
s = announcement_states
f = client_first_seen
ts = topic_subscriptions


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


@dataclass(slots=True)
class MissedPage:
    """One page of a replay, oldest first; more: others follow its last."""

    notifications: list[Notification]
    more: bool
    skipped: int | None = None
    """The newest missed id older than the newest keep_newest missed (None: not that many)."""


def row_to_notification(row: sa.Row[Any]) -> Notification:
    """A notification from a row of the notifications table (or of visible())."""
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
        expires_at=utc(row.expires_at) if row.expires_at is not None else None,
        collapse_key=row.collapse_key,
    )


def visible(
    client_id: str | sa.BindParameter[Any], now: datetime | sa.BindParameter[Any] | None = None
) -> sa.Select[Any]:
    """The client's notifications and announcements not expired at `now` (default: this
    moment), with the client's own read state (read_at())."""
    if now is None:
        now = datetime.now(UTC)
    joined = n.outerjoin(
        s, sa.and_(s.c.notification_id == n.c.id, s.c.client_id == client_id)
    ).outerjoin(f, f.c.client_id == client_id)
    return (
        sa.select(
            n.c.id,
            n.c.event_id,
            n.c.source_id,
            n.c.client_id,
            n.c.category,
            n.c.data,
            n.c.created_at,
            read_at().label("read_at"),
            n.c.expires_at,
            n.c.collapse_key,
        )
        .select_from(joined)
        .where(
            *_audience(client_id),
            n.c.deleted_at.is_(None),
            s.c.deleted_at.is_(None),
            sa.or_(n.c.expires_at.is_(None), n.c.expires_at > now),
        )
    )


def read_at() -> sa.ColumnElement[Any]:
    """When the client read a visible() row: its own row's read_at; for an announcement, the
    client's state, else, when it was made before the client was first seen, that moment: a
    new user does not inherit every past announcement as unread (first_seen.py)."""
    inherited = sa.and_(n.c.client_id == ANNOUNCEMENT, n.c.created_at < f.c.first_seen_at)
    announcement = sa.case(
        (s.c.client_id.isnot(None), s.c.read_at),  # marked read or unread by the client
        (inherited, f.c.first_seen_at),
        else_=None,
    )
    return sa.func.coalesce(n.c.read_at, announcement)


def _as_text(client_id: str | sa.BindParameter[Any]) -> sa.ColumnElement[Any]:
    if isinstance(client_id, str):
        return sa.literal(client_id, sa.String())
    return sa.cast(client_id, sa.String())


def _audience(client_id: str | sa.BindParameter[Any]) -> list[sa.ColumnElement[bool]]:
    """The rows a client may see: its own, announcements, and its topics' rows within one of
    its subscription intervals.

    One IN over the client id (its own, "*", "#<topic>" of each topic it ever followed) keeps
    the (client_id, id) index doing the work; the interval test then runs only on topic rows.
    """
    keys = sa.union_all(
        sa.select(_as_text(client_id)),
        sa.select(sa.literal(ANNOUNCEMENT, sa.String())),
        sa.select(sa.literal(TOPIC_PREFIX, sa.String()) + ts.c.topic)
        .where(ts.c.client_id == client_id)
        .distinct(),
    )
    within = (
        sa.select(sa.literal(1))
        .select_from(ts)
        .where(
            ts.c.client_id == client_id,
            # The topic from the row's key, not the key from the topic: the index holds topic.
            ts.c.topic == sa.func.substr(n.c.client_id, len(TOPIC_PREFIX) + 1),
            ts.c.since_id < n.c.id,
            sa.or_(ts.c.until_id.is_(None), ts.c.until_id >= n.c.id),
        )
        .exists()
    )
    return [
        n.c.client_id.in_(keys),
        sa.or_(n.c.client_id.in_([client_id, ANNOUNCEMENT]), within),
    ]


def unread(query: sa.Select[Any]) -> sa.Select[Any]:
    """A visible() query narrowed to what the client has not read."""
    return query.where(read_at().is_(None))


async def page(
    conn: AsyncConnection,
    client_id: str,
    *,
    status: Status,
    limit: int,
    before: int | None,
    category: str | None,
    hidden: frozenset[str] = frozenset(),
) -> Page:
    """A page of the client's notifications, newest first, and the unread count; hidden
    categories (the muted ones, unless asked for) are in neither."""
    query = _without(visible(client_id), hidden)
    if status == "unread":
        query = unread(query)
    elif status == "read":
        query = query.where(read_at().isnot(None))
    if before is not None:
        query = query.where(n.c.id < before)
    if category is not None:
        query = query.where(n.c.category == category)
    query = query.order_by(n.c.id.desc()).limit(limit + 1)
    rows = (await conn.execute(query)).all()
    unread_now = await unread_count(conn, client_id, hidden)
    items = [row_to_notification(row) for row in rows[:limit]]
    next_before = items[-1].id if len(rows) > limit else None
    return Page(items, unread_now, next_before)


async def unread_count(
    conn: AsyncConnection, client_id: str, hidden: frozenset[str] = frozenset()
) -> int:
    """How many of the client's notifications are unread, hidden categories left out."""
    query = unread(_without(visible(client_id), hidden))
    count = sa.select(sa.func.count()).select_from(query.subquery())
    return int((await conn.execute(count)).scalar_one())


def _without(query: sa.Select[Any], hidden: frozenset[str]) -> sa.Select[Any]:
    return query.where(n.c.category.not_in(sorted(hidden))) if hidden else query


async def get(conn: AsyncConnection, client_id: str, notification_id: int) -> Notification | None:
    """One of the client's notifications, or None (also when it is someone else's)."""
    row = (await conn.execute(visible(client_id).where(n.c.id == notification_id))).first()
    return row_to_notification(row) if row is not None else None


def _missed(
    client_id: str,
    after_id: int,
    categories: frozenset[str] | None,
    muted: frozenset[str],
) -> sa.Select[Any]:
    """What the client can see after after_id, in its categories, less the muted ones."""
    query = visible(client_id).where(n.c.id > after_id)
    if categories is not None:
        query = query.where(n.c.category.in_(sorted(categories)))
    if muted:
        query = query.where(n.c.category.not_in(sorted(muted)))
    return query


async def missed_page(
    conn: AsyncConnection,
    client_id: str,
    after_id: int,
    *,
    size: int,
    categories: frozenset[str] | None,
    muted: frozenset[str],
    keep_newest: int | None = None,
) -> MissedPage:
    """The oldest `size` notifications the client missed after after_id, oldest first.

    With keep_newest, the same statement also finds the newest missed id older than the
    newest keep_newest ones (a replay that long starts after it): no second round trip.
    """
    query = _missed_statement(categories is not None, bool(muted), keep_newest is not None)
    values: dict[str, Any] = {
        "client_id": client_id,
        "after_id": after_id,
        "size": size + 1,
        "now": datetime.now(UTC),
    }
    if categories is not None:
        values["categories"] = sorted(categories)
    if muted:
        values["muted"] = sorted(muted)
    if keep_newest is not None:
        values["keep_newest"] = keep_newest
    rows = (await conn.execute(query, values)).all()
    first_skipped = rows[0].skipped if rows and keep_newest is not None else None
    items = [row_to_notification(row) for row in rows[:size]]
    return MissedPage(items, more=len(rows) > size, skipped=first_skipped)


@functools.cache
def _missed_statement(by_category: bool, muting: bool, keep_newest: bool) -> sa.Select[Any]:
    """missed_page's statement for one shape, built once: building it costs more than
    running it, and a resume storm runs it for every page of every stream."""

    def missed() -> sa.Select[Any]:
        query = visible(sa.bindparam("client_id"), sa.bindparam("now")).where(
            n.c.id > sa.bindparam("after_id")
        )
        if by_category:
            query = query.where(n.c.category.in_(sa.bindparam("categories", expanding=True)))
        if muting:
            query = query.where(n.c.category.not_in(sa.bindparam("muted", expanding=True)))
        return query

    query = missed()
    if keep_newest:
        skipped = (
            missed()
            .with_only_columns(n.c.id)
            .order_by(n.c.id.desc())
            .offset(sa.bindparam("keep_newest", type_=sa.Integer))
            .limit(1)
            .correlate(None)  # its own scan of the table, not a row of the outer one
            .scalar_subquery()
        )
        query = query.add_columns(skipped.label("skipped"))
    return query.order_by(n.c.id).limit(sa.bindparam("size", type_=sa.Integer))


async def committed_after(
    conn: AsyncConnection, after_id: int, *, limit: int
) -> list[Notification]:
    """Every notification (all clients) committed with an id above after_id, in id order."""
    query = (
        sa.select(n)
        .where(n.c.id > after_id, n.c.deleted_at.is_(None))
        .order_by(n.c.id)
        .limit(limit)
    )
    rows = (await conn.execute(query)).all()
    return [row_to_notification(row) for row in rows]


async def last_id(conn: AsyncConnection) -> int:
    """The highest notification id committed so far (0 when none)."""
    value = (await conn.execute(sa.select(sa.func.max(n.c.id)))).scalar()
    return int(value or 0)


async def head(conn: AsyncConnection, client_id: str) -> int:
    """The highest notification id the client can see (its own, an announcement, a topic's)."""
    query = sa.select(sa.func.max(n.c.id)).where(*_audience(client_id))
    value = (await conn.execute(query)).scalar()
    return int(value or 0)
