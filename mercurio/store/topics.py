"""Topic subscriptions: intervals of the ledger during which a client follows a topic.

A client sees a topic notification n when one of its intervals holds n.id (since_id < n.id and,
once it unsubscribed, n.id <= until_id). Both ends are the last committed notification id at the
moment of the change; ids commit in order (DESIGN.md invariant 2), so a notification committed
after a subscribe has a higher id, and one committed after an unsubscribe too: the split is
exact, a resume's replay and the live stream agree, and history survives an unsubscribe.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from mercurio.schema import topic_subscriptions
from mercurio.store.reads import last_id
from mercurio.store.state import insert_for

ts = topic_subscriptions


async def subscribe(conn: AsyncConnection, client_id: str, topic: str) -> int:
    """Open an interval for the client on the topic (no-op when open); its since_id."""
    open_since = await _open_since(conn, client_id, topic)
    if open_since is not None:
        return open_since
    position = await last_id(conn)
    # Nothing committed since the last unsubscribe: reopen that interval rather than start an
    # empty one at the same id (the key would repeat).
    reopened = await conn.execute(
        ts.update()
        .where(ts.c.client_id == client_id, ts.c.topic == topic, ts.c.until_id >= position)
        .values(until_id=None)
        .returning(ts.c.since_id)
    )
    since = reopened.scalar()
    if since is not None:
        return int(since)
    row = {
        "client_id": client_id,
        "topic": topic,
        "since_id": position,
        "until_id": None,
        "created_at": datetime.now(UTC),
    }
    # Two subscribes at once (two tabs, two nodes) open the same interval: one row.
    await conn.execute(insert_for(conn)(ts).values(**row).on_conflict_do_nothing())
    return position


async def unsubscribe(conn: AsyncConnection, client_id: str, topic: str) -> int | None:
    """Close the client's open interval on the topic: its until_id, or None when it was not
    subscribed."""
    position = await last_id(conn)
    closed = await conn.execute(
        ts.update()
        .where(ts.c.client_id == client_id, ts.c.topic == topic, ts.c.until_id.is_(None))
        .values(until_id=position)
    )
    return position if closed.rowcount else None


async def _open_since(conn: AsyncConnection, client_id: str, topic: str) -> int | None:
    query = sa.select(sa.func.min(ts.c.since_id)).where(
        ts.c.client_id == client_id, ts.c.topic == topic, ts.c.until_id.is_(None)
    )
    value = (await conn.execute(query)).scalar()
    return int(value) if value is not None else None


async def subscribed(conn: AsyncConnection, client_id: str) -> dict[str, int]:
    """The topics the client follows now, each with the id its interval starts after."""
    query = (
        sa.select(ts.c.topic, sa.func.min(ts.c.since_id))
        .where(ts.c.client_id == client_id, ts.c.until_id.is_(None))
        .group_by(ts.c.topic)
        .order_by(ts.c.topic)
    )
    return {str(topic): int(since) for topic, since in (await conn.execute(query)).all()}


async def subscriber_count(conn: AsyncConnection, topic: str) -> int:
    """How many clients follow the topic now."""
    query = sa.select(sa.func.count(sa.distinct(ts.c.client_id))).where(
        ts.c.topic == topic, ts.c.until_id.is_(None)
    )
    return int((await conn.execute(query)).scalar_one())
