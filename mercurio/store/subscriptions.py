"""Browsers' Web Push subscriptions: one row per endpoint, owned by one client."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from mercurio.model import utc
from mercurio.schema import deliveries, push_subscriptions
from mercurio.store.engines import EngineSource
from mercurio.store.state import insert_for

p = push_subscriptions


@dataclass(frozen=True, slots=True)
class PushSubscription:
    id: int
    client_id: str
    endpoint: str
    p256dh: str
    auth: str
    created_at: datetime

    def info(self) -> dict[str, object]:
        """As pywebpush takes it (the shape of PushSubscription.toJSON())."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


def _row(row: sa.Row[object]) -> PushSubscription:
    return PushSubscription(
        row.id, row.client_id, row.endpoint, row.p256dh, row.auth, utc(row.created_at)
    )


class Subscriptions:
    def __init__(self, engines: EngineSource) -> None:
        self._engines = engines

    async def register(
        self, client_id: str, endpoint: str, p256dh: str, auth: str
    ) -> PushSubscription:
        """Keep the browser's subscription; the same endpoint again updates the one row.

        An endpoint is one browser profile: registered again by another client (a different
        person signed in there), it moves to that client, and pushes for the first stop.
        """
        values = {"client_id": client_id, "p256dh": p256dh, "auth": auth}
        async with self._engines.write_engine().begin() as conn:
            statement = insert_for(conn)(p).values(
                endpoint=endpoint, created_at=datetime.now(UTC), **values
            )
            await conn.execute(
                statement.on_conflict_do_update(index_elements=[p.c.endpoint], set_=values)
            )
            row = (await conn.execute(sa.select(p).where(p.c.endpoint == endpoint))).one()
        return _row(row)

    async def of_client(self, client_id: str) -> list[PushSubscription]:
        async with self._engines.read_engine().connect() as conn:
            query = sa.select(p).where(p.c.client_id == client_id).order_by(p.c.id)
            return [_row(row) for row in await conn.execute(query)]

    async def get(self, subscription_id: int) -> PushSubscription | None:
        async with self._engines.read_engine().connect() as conn:
            row = (await conn.execute(sa.select(p).where(p.c.id == subscription_id))).first()
        return _row(row) if row is not None else None

    async def remove(self, subscription_id: int, client_id: str | None = None) -> bool:
        """Forget a subscription and what was still owed to it; False when there was none
        (or, with client_id, none of that client's)."""
        async with self._engines.write_engine().begin() as conn:
            query = p.delete().where(p.c.id == subscription_id)
            if client_id is not None:
                query = query.where(p.c.client_id == client_id)
            removed = (await conn.execute(query)).rowcount
            if removed:
                owed = deliveries.delete().where(
                    deliveries.c.channel == "push",
                    deliveries.c.subscription_id == subscription_id,
                )
                await conn.execute(owed)
        return bool(removed)


async def targets(
    conn: AsyncConnection, client_ids: set[str], everyone: bool
) -> Sequence[sa.Row[Any, Any]]:
    """(id, client_id) of the subscriptions of these clients, or of every client."""
    query = sa.select(p.c.id, p.c.client_id)
    if not everyone:
        query = query.where(p.c.client_id.in_(sorted(client_ids)))
    return (await conn.execute(query.order_by(p.c.id))).all()


async def any_subscription(conn: AsyncConnection) -> bool:
    """Whether any browser at all subscribed (else there is no push to owe anyone)."""
    return (await conn.execute(sa.select(p.c.id).limit(1))).first() is not None
