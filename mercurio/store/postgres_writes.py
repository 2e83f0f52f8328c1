"""PostgreSQL's publishing transactions: each step of a batch is one statement.

The look-up of repeated events and the insert each send all their rows as one parameter,
so a 1,000-destination broadcast or a batch of 64 unicasts costs the same five round trips:
BEGIN, the publish lock, the look-up, the insert, COMMIT.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mercurio.model import NewNotification, Notification
from mercurio.store.planning import Key, Planner, Written, key_of

# Every publishing transaction on PostgreSQL takes this transaction-scoped advisory lock before
# it draws ids, so ids are handed out in commit order across all nodes (DESIGN.md invariant 4):
# once id N is visible, every id below N is either visible too or will never exist.
PUBLISH_LOCK_KEY = 0x6D657263  # "merc"

_LOCK = sa.text("SELECT pg_advisory_xact_lock(:k)")
# Rows travel as one JSON text: asyncpg checks each element of an array parameter in Python
# (twelve isinstance calls per row for six columns), orjson encodes the lot in C.
_EXISTING = (
    "SELECT n.* FROM notifications AS n"
    " JOIN json_to_recordset($1::json) AS k(c text, p text, e text)"
    " ON n.client_id = k.c AND n.publisher_id = k.p AND n.event_id = k.e"
)
_INSERT = (
    "INSERT INTO notifications"
    " (event_id, source_id, client_id, category, data, created_at, publisher_id, expires_at,"
    " collapse_key)"
    " SELECT e, s, c, k, d, $2, p, x, g"
    " FROM ROWS FROM (json_to_recordset($1::json)"
    " AS (e text, s text, c text, k text, d text, p text, x timestamptz, g text))"
    " WITH ORDINALITY AS t(e, s, c, k, d, p, x, g, o) ORDER BY o"
    " RETURNING id, client_id, publisher_id, event_id"
)
# The older notifications new ones with a collapse key replace (issue 13, item 4), in the
# insert's transaction: the replacement and its insert commit together or not at all.
_COLLAPSE = (
    "UPDATE notifications AS n SET deleted_at = $2"
    " FROM json_to_recordset($1::json) AS k(c text, g text, i bigint)"
    " WHERE n.client_id = k.c AND n.collapse_key = k.g AND n.id < k.i AND n.deleted_at IS NULL"
    " RETURNING n.client_id, n.id"
)


class PostgresWrites:
    """Publishing transactions on the store's write engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def close(self) -> None:
        """Nothing to close: the store disposes of the engine."""

    async def write(self, lookups: list[NewNotification], plan: Planner, now: datetime) -> Written:
        """One transaction: the stored rows the lookups repeat, the rows `plan` inserted, and
        the (client, id) of the older rows their collapse keys replaced."""
        async with self._engine.begin() as conn:
            await conn.execute(_LOCK, {"k": PUBLISH_LOCK_KEY})
            driver = await _driver(conn)
            known = await _existing(driver, lookups)
            pending = plan(known)
            fresh = await _insert(driver, pending, now)
            replaced = await _collapse(driver, pending, fresh, now)
        return known, fresh, replaced


async def _collapse(
    driver: Any, items: list[NewNotification], fresh: list[Notification], now: datetime
) -> list[tuple[str, int]]:
    keys = [
        {"c": note.client_id, "g": item.collapse_key, "i": note.id}
        for item, note in zip(items, fresh, strict=True)
        if item.collapse_key is not None
    ]
    if not keys:
        return []
    rows = await driver.fetch(_COLLAPSE, orjson.dumps(keys).decode(), now)
    return [(row["client_id"], row["id"]) for row in rows]


async def _existing(driver: Any, items: list[NewNotification]) -> dict[Key, Notification]:
    if not items:
        return {}
    keys = [{"c": i.client_id, "p": i.publisher_id, "e": i.event_id} for i in items]
    found: dict[Key, Notification] = {}
    for row in await driver.fetch(_EXISTING, orjson.dumps(keys).decode()):
        found[(row["client_id"], row["publisher_id"], row["event_id"])] = Notification(
            row["id"],
            row["event_id"],
            row["source_id"],
            row["client_id"],
            row["category"],
            row["data"],
            row["created_at"],
            row["read_at"],
            row["expires_at"],
        )
    return found


async def _insert(driver: Any, items: list[NewNotification], now: datetime) -> list[Notification]:
    """Insert the items in one statement; the stored notifications in the items' order."""
    if not items:
        return []
    rows = orjson.dumps(
        [
            {
                "e": item.event_id,
                "s": item.source_id,
                "c": item.client_id,
                "k": item.category,
                "d": item.data_json,
                "p": item.publisher_id,
                "x": item.expires_at.isoformat() if item.expires_at is not None else None,
                "g": item.collapse_key,
            }
            for item in items
        ]
    ).decode()
    ids = {
        (row["client_id"], row["publisher_id"], row["event_id"]): row["id"]
        for row in await driver.fetch(_INSERT, rows, now)
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
            expires_at=item.expires_at,
        )
        for item in items
    ]


async def _driver(conn: AsyncConnection) -> Any:
    """asyncpg's own connection, inside the transaction SQLAlchemy began (the publish lock)."""
    raw = await conn.get_raw_connection()
    return raw.driver_connection
