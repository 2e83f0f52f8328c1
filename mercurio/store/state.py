"""Each client's own state: read and deleted marks, preferences, used stream tickets.

Every function here runs inside a transaction the caller opened on the write engine (reads of
preferences excepted); these are the small writes outside the group commit.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from mercurio.model import NO_CATEGORIES, Notification, utc
from mercurio.schema import announcement_states, notifications, preferences, stream_tickets
from mercurio.store.reads import row_to_notification, unread, visible

n = notifications
s = announcement_states
TICKET_GRACE = 60
"""Seconds a used ticket is kept past its expiry before it is swept."""


async def set_read(
    conn: AsyncConnection, client_id: str, notification_id: int, read: bool
) -> Notification | None:
    """Mark one notification read or unread; None when the client cannot see it."""
    now = datetime.now(UTC)
    row = (await conn.execute(visible(client_id).where(n.c.id == notification_id))).first()
    if row is None:
        return None
    note = row_to_notification(row)
    read_at = (note.read_at or now) if read else None
    if note.is_shared:
        await _upsert_state(conn, client_id, notification_id, read_at=read_at)
    else:
        await conn.execute(n.update().where(n.c.id == notification_id).values(read_at=read_at))
    return dataclasses.replace(note, read_at=read_at)


async def mark_all_read(conn: AsyncConnection, client_id: str, category: str | None) -> int:
    """Mark every unread notification of the client (of one category) read; how many."""
    now = datetime.now(UTC)
    own = n.update().where(
        n.c.client_id == client_id, n.c.read_at.is_(None), n.c.deleted_at.is_(None)
    )
    if category is not None:
        own = own.where(n.c.category == category)
    updated = (await conn.execute(own.values(read_at=now))).rowcount or 0
    updated += await _mark_announcements_read(conn, client_id, category, now)
    return int(updated)


async def _mark_announcements_read(
    conn: AsyncConnection, client_id: str, category: str | None, now: datetime
) -> int:
    """One INSERT ... SELECT ... ON CONFLICT for all unread shared rows (announcements and
    topic notifications), not one each.

    One statement per announcement held the write lock for seconds over a long backlog.
    """
    unread_announcements = (
        unread(visible(client_id))
        .where(n.c.client_id != client_id)  # announcements and topic notifications
        .with_only_columns(
            sa.literal(client_id, sa.String()).label("client_id"),
            n.c.id.label("notification_id"),
            sa.literal(now, sa.DateTime(timezone=True)).label("read_at"),
        )
    )
    if category is not None:
        unread_announcements = unread_announcements.where(n.c.category == category)
    statement = insert_for(conn)(s).from_select(
        ["client_id", "notification_id", "read_at"], unread_announcements
    )
    statement = statement.on_conflict_do_update(
        index_elements=[s.c.client_id, s.c.notification_id],
        set_={"read_at": statement.excluded.read_at},
    )
    return int((await conn.execute(statement)).rowcount or 0)


async def delete(conn: AsyncConnection, client_id: str, notification_id: int) -> bool:
    """Hide one notification from the client; False when the client cannot see it."""
    now = datetime.now(UTC)
    row = (await conn.execute(visible(client_id).where(n.c.id == notification_id))).first()
    if row is None:
        return False
    if row_to_notification(row).is_shared:
        read_at = utc(row.read_at) if row.read_at is not None else None
        await _upsert_state(conn, client_id, notification_id, read_at=read_at, deleted_at=now)
    else:
        await conn.execute(n.update().where(n.c.id == notification_id).values(deleted_at=now))
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class Preferences:
    """A client's stored preferences; a client without a row has these defaults."""

    muted: frozenset[str] = frozenset()
    """Muted on every channel (the stream, push and e-mail)."""
    push_off: bool = False
    push_muted: frozenset[str] = frozenset()
    email_off: bool = False
    """Kept in the contacts table (Store.preferences fills it in)."""
    email_muted: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True, slots=True)
class PreferenceChanges:
    """What a client changes in its preferences: None keeps the stored value."""

    muted: Iterable[str] | None = None
    push_off: bool | None = None
    push_muted: Iterable[str] | None = None
    email_off: bool | None = None
    email_muted: Iterable[str] | None = None


DEFAULT_ROW: dict[str, Any] = {
    "muted_categories": "[]",
    "push_off": False,
    "push_muted": "[]",
    "email_muted": "[]",
}


def _categories(value: str | None) -> frozenset[str]:
    categories = orjson.loads(value) if value else None
    return frozenset(categories) if categories else NO_CATEGORIES


def _encoded(categories: Iterable[str]) -> str:
    return orjson.dumps(sorted(set(categories))).decode()


async def muted_categories(conn: AsyncConnection, client_id: str) -> frozenset[str]:
    """The categories this client muted."""
    query = sa.select(preferences.c.muted_categories).where(preferences.c.client_id == client_id)
    return _categories((await conn.execute(query)).scalar())


async def read_preferences(conn: AsyncConnection, client_id: str) -> Preferences:
    """Everything this client chose, or the defaults."""
    p = preferences.c
    query = sa.select(p.muted_categories, p.push_off, p.push_muted, p.email_muted)
    row = (await conn.execute(query.where(p.client_id == client_id))).first()
    if row is None:
        return Preferences()
    return Preferences(
        _categories(row.muted_categories),
        bool(row.push_off),
        _categories(row.push_muted),
        email_muted=_categories(row.email_muted),
    )


async def set_muted_categories(
    conn: AsyncConnection, client_id: str, muted: Iterable[str]
) -> frozenset[str]:
    """Replace the categories this client muted."""
    return (await update_preferences(conn, client_id, PreferenceChanges(muted=muted))).muted


async def update_preferences(
    conn: AsyncConnection, client_id: str, change: PreferenceChanges
) -> Preferences:
    """Replace the preferences of this table given in change (email_off lives in contacts)."""
    values: dict[str, Any] = {}
    if change.muted is not None:
        values["muted_categories"] = _encoded(change.muted)
    if change.push_off is not None:
        values["push_off"] = change.push_off
    if change.push_muted is not None:
        values["push_muted"] = _encoded(change.push_muted)
    if change.email_muted is not None:
        values["email_muted"] = _encoded(change.email_muted)
    if values:
        # A new row starts from the defaults; an existing one changes only what was given.
        first = {**DEFAULT_ROW, **values}
        statement = insert_for(conn)(preferences).values(client_id=client_id, **first)
        await conn.execute(
            statement.on_conflict_do_update(index_elements=["client_id"], set_=values)
        )
    return await read_preferences(conn, client_id)


async def record_ticket(conn: AsyncConnection, ticket_id: str, expires_at: float) -> None:
    """Record a stream ticket as used (IntegrityError when it already was); sweep old ones."""
    swept_before = time.time() - TICKET_GRACE
    await conn.execute(stream_tickets.delete().where(stream_tickets.c.expires_at < swept_before))
    await conn.execute(stream_tickets.insert().values(ticket_id=ticket_id, expires_at=expires_at))


def insert_for(conn: AsyncConnection) -> Any:
    """The dialect's INSERT construct, which knows ON CONFLICT."""
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    return insert


async def _upsert(
    conn: AsyncConnection, table: sa.Table, values: dict[str, Any], *, keys: list[str]
) -> None:
    statement = insert_for(conn)(table).values(**values)
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
