"""When each client was first seen: announcements made before it are not inherited as unread.

A new user would otherwise find every announcement of the last MERCURIO_RETENTION_DAYS in
its inbox as unread. reads.read_at() counts the announcements created before the client was
first seen (its first authenticated request or stream, or the first notification stored for
it, whichever came first) as read at that moment; a client with no row (never seen) has them
all unread, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import sqlalchemy as sa

from mercurio.schema import client_first_seen
from mercurio.store.engines import EngineSource
from mercurio.store.state import insert_for

CACHE_SIZE = 100_000
"""Clients this process remembers as recorded; past it the memory starts over (a re-check
is one primary-key read)."""

f = client_first_seen


class FirstSeen:
    """Records each client's first moment once; a set lookup on every later request."""

    def __init__(self, engines: EngineSource) -> None:
        self._engines = engines
        self._known: set[str] = set()

    async def note(self, client_id: str) -> None:
        """Record client_id as seen now, unless it already was (by any node)."""
        if client_id in self._known:
            return
        if not await self._recorded(client_id):
            await self._record(client_id)
        if len(self._known) >= CACHE_SIZE:
            self._known.clear()
        self._known.add(client_id)

    async def note_sent(self, moments: Mapping[str, datetime]) -> None:
        """Clients a notification was just stored for: seen from that moment, unless already
        seen. A user who has been sent something is not new, even before its first request:
        an announcement made after its first notification stays unread for it."""
        fresh = {c: at for c, at in moments.items() if c not in self._known}
        if not fresh:
            return
        if len(self._known) + len(fresh) >= CACHE_SIZE:
            self._known.clear()
        # Claimed before the first await: a burst of publishes to one new client records it
        # once, not once per publish in flight (2,000 concurrent transactions swelled memory).
        self._known.update(fresh)
        try:
            await self._record_sent(fresh)
        except BaseException:
            self._known.difference_update(fresh)
            raise

    async def _record_sent(self, fresh: Mapping[str, datetime]) -> None:
        async with self._engines.read_engine().connect() as conn:
            query = sa.select(f.c.client_id).where(f.c.client_id.in_(sorted(fresh)))
            seen = set((await conn.execute(query)).scalars())
        rows = [{"client_id": c, "first_seen_at": at} for c, at in fresh.items() if c not in seen]
        if rows:
            async with self._engines.write_engine().begin() as conn:
                statement = insert_for(conn)(f).on_conflict_do_nothing(
                    index_elements=[f.c.client_id]
                )
                await conn.execute(statement, rows)

    async def _recorded(self, client_id: str) -> bool:
        # A read first: on SQLite a write would queue for the write lock on every restart.
        async with self._engines.read_engine().connect() as conn:
            query = sa.select(f.c.client_id).where(f.c.client_id == client_id)
            return (await conn.execute(query)).first() is not None

    async def _record(self, client_id: str) -> None:
        async with self._engines.write_engine().begin() as conn:
            statement = insert_for(conn)(f).values(
                client_id=client_id, first_seen_at=datetime.now(UTC)
            )
            # Another node (or request) may have been first: its moment stands.
            await conn.execute(statement.on_conflict_do_nothing(index_elements=[f.c.client_id]))
