"""The store's database engines: opening them, SQLite's pragmas, migrations, reachability."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mercurio.errors import ConfigError
from mercurio.urls import database_url, redact_url

MIGRATIONS = Path(__file__).parent.parent / "migrations"
MIGRATE_LOCK_KEY = 1
"""PostgreSQL advisory lock that nodes of a cluster take in turn to migrate."""


class EngineSource(Protocol):
    """What hands out the engines once the store is open (the Store itself)."""

    def write_engine(self) -> AsyncEngine: ...

    def read_engine(self) -> AsyncEngine: ...


@dataclass(frozen=True, slots=True)
class Engines:
    """A read and a write engine: two pools on SQLite, one shared pool on PostgreSQL."""

    read: AsyncEngine
    write: AsyncEngine

    @classmethod
    def open(cls, url: str) -> Engines:
        """Engines for a SQLAlchemy URL (see mercurio.urls.database_url)."""
        if make_url(url).get_backend_name() != "sqlite":
            engine = create_async_engine(url, pool_size=10, max_overflow=10)
            return cls(engine, engine)
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        reader = create_async_engine(url, pool_size=24, max_overflow=8)
        writer = create_async_engine(url, pool_size=4, max_overflow=4)
        _sqlite_pragmas(reader, immediate=False)
        _sqlite_pragmas(writer, immediate=True)
        return cls(reader, writer)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.read.dispose()
        if self.write is not self.read:
            await self.write.dispose()

    def pool_usage(self) -> dict[str, tuple[int, int]]:
        """Connections checked out and pool size, by pool ("read", "write"; "main" if shared)."""
        if self.read is self.write:
            engines = {"main": self.read}
        else:
            engines = {"read": self.read, "write": self.write}
        usage: dict[str, tuple[int, int]] = {}
        for name, engine in engines.items():
            pool = engine.pool
            if isinstance(pool, sa.QueuePool):
                usage[name] = (pool.checkedout(), pool.size())
        return usage


def _sqlite_pragmas(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to choose.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a publish answered 200 survives power loss, not only a process crash.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front: a deferred transaction that upgrades from
        # read to write fails at once with SQLITE_BUSY instead of waiting its turn.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


async def migrate(engine: AsyncEngine) -> None:
    """Run the Alembic migrations to head (nodes of a cluster serialise on a lock)."""
    async with engine.begin() as conn:
        if engine.dialect.name != "sqlite":
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATE_LOCK_KEY})
        await conn.run_sync(_upgrade)


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def upgrade_database(conn: str) -> None:
    """Bring the database's schema to the newest migration (`mercurio db upgrade`)."""
    engines = Engines.open(database_url(conn))
    try:
        await migrate(engines.write)
    finally:
        await engines.dispose()


async def check_reachable(conn: str, timeout: float = 10.0) -> None:
    """Connect once before serving, so an unreachable database is one line, not a traceback."""
    engine = create_async_engine(database_url(conn), poolclass=sa.NullPool)

    async def select_one() -> None:
        async with engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))

    try:
        await asyncio.wait_for(select_one(), timeout)
    except TimeoutError:
        raise ConfigError(f"MERCURIO_DB_CONN: no answer from {redact_url(conn)!r}") from None
    except Exception as exc:  # whatever the driver raises, the cause is this one setting
        raise ConfigError(
            f"MERCURIO_DB_CONN: cannot use {redact_url(conn)!r}: {_reason(exc)}"
        ) from None
    finally:
        await engine.dispose()


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    lines = str(cause).strip().splitlines()
    return lines[0][:200] if lines else type(cause).__name__
