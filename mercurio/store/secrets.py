"""Secrets every node of a cluster must share, made once and kept in the database."""

from __future__ import annotations

import secrets

import sqlalchemy as sa

from mercurio.schema import server_secrets
from mercurio.store.engines import EngineSource
from mercurio.store.state import insert_for


async def shared_secret(engines: EngineSource, name: str) -> str:
    """The secret called name; the first node to ask makes it, every other reads that one.

    Insert-if-absent, then read back: two nodes starting together both insert, one wins, and
    both go on with the winner's value.
    """
    async with engines.write_engine().begin() as conn:
        statement = insert_for(conn)(server_secrets).values(
            name=name, value=secrets.token_urlsafe(48)
        )
        await conn.execute(statement.on_conflict_do_nothing(index_elements=["name"]))
        query = sa.select(server_secrets.c.value).where(server_secrets.c.name == name)
        return str((await conn.execute(query)).scalar_one())
