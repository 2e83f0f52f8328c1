"""PostgreSQL's publishing transactions: each step of a batch is one statement.

The look-up of repeated events and the insert each send whole columns as arrays (`unnest`),
so a 1,000-destination broadcast or a batch of 64 unicasts costs the same five round trips:
BEGIN, the publish lock, the look-up, the insert, COMMIT.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercurio.model import NewNotification, Notification
from mercurio.store.planning import Key, Planner, key_of
from mercurio.store.reads import row_to_notification

# Every publishing transaction on PostgreSQL takes this transaction-scoped advisory lock before
# it draws ids, so ids are handed out in commit order across all nodes (DESIGN.md invariant 4):
# once id N is visible, every id below N is either visible too or will never exist.
PUBLISH_LOCK_KEY = 0x6D657263  # "merc"

_LOCK = sa.text("SELECT pg_advisory_xact_lock(:k)")
_EXISTING = sa.text(
    "SELECT n.* FROM notifications AS n"
    " JOIN unnest(CAST(:clients AS text[]), CAST(:publishers AS text[]),"
    " CAST(:events AS text[])) AS k(client_id, publisher_id, event_id)"
    " ON n.client_id = k.client_id AND n.publisher_id = k.publisher_id"
    " AND n.event_id = k.event_id"
)
_INSERT = sa.text(
    "INSERT INTO notifications"
    " (event_id, source_id, client_id, category, data, created_at, publisher_id)"
    " SELECT e, s, c, k, d, CAST(:now AS timestamptz), p"
    " FROM unnest(CAST(:e AS text[]), CAST(:s AS text[]), CAST(:c AS text[]),"
    " CAST(:k AS text[]), CAST(:d AS text[]), CAST(:p AS text[]))"
    " WITH ORDINALITY AS t(e, s, c, k, d, p, o) ORDER BY o"
    " RETURNING id, client_id, publisher_id, event_id"
)


class PostgresWrites:
    """Publishing transactions on the store's write engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def close(self) -> None:
        """Nothing to close: the store disposes of the engine."""

    async def write(
        self, lookups: list[NewNotification], plan: Planner, now: datetime
    ) -> tuple[dict[Key, Notification], list[Notification]]:
        """One transaction: the stored rows the lookups repeat, and the rows `plan` inserted."""
        async with self._engine.begin() as conn:
            await conn.execute(_LOCK, {"k": PUBLISH_LOCK_KEY})
            known = await _existing(conn, lookups)
            fresh = await _insert(conn, plan(known), now)
        return known, fresh


async def _existing(conn: AsyncConnection, items: list[NewNotification]) -> dict[Key, Notification]:
    if not items:
        return {}
    columns = {
        "clients": [item.client_id for item in items],
        "publishers": [item.publisher_id for item in items],
        "events": [item.event_id for item in items],
    }
    found: dict[Key, Notification] = {}
    for row in await conn.execute(_EXISTING, columns):
        found[(row.client_id, row.publisher_id, row.event_id)] = row_to_notification(row)
    return found


async def _insert(
    conn: AsyncConnection, items: list[NewNotification], now: datetime
) -> list[Notification]:
    """Insert the items in one statement; the stored notifications in the items' order."""
    if not items:
        return []
    columns = {
        "e": [item.event_id for item in items],
        "s": [item.source_id for item in items],
        "c": [item.client_id for item in items],
        "k": [item.category for item in items],
        "d": [item.data_json for item in items],
        "p": [item.publisher_id for item in items],
        "now": now,
    }
    ids = {
        (row.client_id, row.publisher_id, row.event_id): row.id
        for row in await conn.execute(_INSERT, columns)
    }
    return [
        Notification(
            ids[key_of(item)],
            item.event_id,
            item.source_id,
            item.client_id,
            item.category,
            item.data_json,
            now,
        )
        for item in items
    ]
