"""SQLite's publishing transactions: a whole batch in one hop to the writer's own thread.

aiosqlite sends every statement to its worker thread and back; a 1,000-row broadcast was 1,001
round trips and ~300 µs of CPU per row. Here the batch's transaction (BEGIN IMMEDIATE, the
duplicate look-ups, one executemany INSERT, COMMIT) runs start to end on one stdlib sqlite3
connection in a dedicated thread, and the event loop waits once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from mercurio.model import NewNotification, Notification, utc
from mercurio.store.planning import IN_CHUNK, Key, Planner, Written, by_event, chunks

# The text SQLAlchemy's SQLite DATETIME writes, so rows written here read back like any other.
_as_stored = (
    sa.DateTime(timezone=True).dialect_impl(sqlite.dialect()).bind_processor(sqlite.dialect())
)

_COLUMNS = "id, event_id, source_id, client_id, category, data, created_at, expires_at"
_INSERT = (
    "INSERT INTO notifications"
    " (id, event_id, source_id, client_id, category, data, created_at, publisher_id, expires_at,"
    " collapse_key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# The older notifications a new one with a collapse key replaces (issue 13, item 4).
_COLLAPSE = (
    "UPDATE notifications SET deleted_at = ?"
    " WHERE client_id = ? AND collapse_key = ? AND id < ? AND deleted_at IS NULL"
    " RETURNING client_id, id"
)


class SqliteWrites:
    """The SQLite file's publishing connection, owned by one thread."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="mercurio-sqlite-writer")
        self._conn: sqlite3.Connection | None = None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._disconnect)
        self._thread.shutdown(wait=True)

    async def write(self, lookups: list[NewNotification], plan: Planner, now: datetime) -> Written:
        """One transaction: the stored rows the lookups repeat, the rows `plan` inserted, and
        the (client, id) of the older rows their collapse keys replaced."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._write, lookups, plan, now)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a publish answered 200 survives power loss, not only a process crash.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        self._conn = conn
        return conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _write(self, lookups: list[NewNotification], plan: Planner, now: datetime) -> Written:
        conn = self._conn or self._connect()
        # IMMEDIATE takes the write lock up front, so the ids drawn below stay ours to commit.
        conn.execute("BEGIN IMMEDIATE")
        try:
            known = _existing(conn, lookups)
            pending = plan(known)
            fresh = _insert(conn, pending, now)
            replaced = _collapse(conn, pending, fresh, now)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return known, fresh, replaced


def _collapse(
    conn: sqlite3.Connection,
    items: list[NewNotification],
    fresh: list[Notification],
    now: datetime,
) -> list[tuple[str, int]]:
    """Mark deleted what each new row's collapse key replaces, in the insert's transaction."""
    replaced: list[tuple[str, int]] = []
    stored_at = _stored(now)
    for item, note in zip(items, fresh, strict=True):
        if item.collapse_key is not None:
            rows = conn.execute(_COLLAPSE, (stored_at, note.client_id, item.collapse_key, note.id))
            replaced.extend((client, id_) for client, id_ in rows.fetchall())
    return replaced


def _existing(conn: sqlite3.Connection, items: list[NewNotification]) -> dict[Key, Notification]:
    found: dict[Key, Notification] = {}
    for (event_id, publisher_id), clients in by_event(items).items():
        for chunk in chunks(sorted(clients), IN_CHUNK):
            marks = ", ".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM notifications"
                f" WHERE event_id = ? AND publisher_id = ? AND client_id IN ({marks})",
                (event_id, publisher_id, *chunk),
            )
            for row in rows:
                id_, event, source, client, category, data, created, expires = row
                note = Notification(
                    id_,
                    event,
                    source,
                    client,
                    category,
                    data,
                    _moment(created),
                    expires_at=_moment(expires) if expires is not None else None,
                )
                found[(note.client_id, publisher_id, note.event_id)] = note
    return found


def _insert(
    conn: sqlite3.Connection, items: list[NewNotification], now: datetime
) -> list[Notification]:
    """Insert the items with ids drawn here, in the items' order; the stored notifications."""
    if not items:
        return []
    # The single writer holds the write lock, so the next ids are known without RETURNING
    # (which SQLite's executemany cannot give back). INTEGER PRIMARY KEY without AUTOINCREMENT
    # draws max(id) + 1 the same way.
    (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM notifications").fetchone()
    stored_at = _stored(now)
    first = top + 1
    conn.executemany(
        _INSERT,
        [
            (
                first + offset,
                item.event_id,
                item.source_id,
                item.client_id,
                item.category,
                item.data_json,
                stored_at,
                item.publisher_id,
                _stored(item.expires_at) if item.expires_at is not None else None,
                item.collapse_key,
            )
            for offset, item in enumerate(items)
        ],
    )
    return [
        Notification(
            first + offset,
            item.event_id,
            item.source_id,
            item.client_id,
            item.category,
            item.data_json,
            now,
            expires_at=item.expires_at,
        )
        for offset, item in enumerate(items)
    ]


def _stored(moment: datetime) -> object:
    return _as_stored(moment) if _as_stored is not None else moment


def _moment(text: str) -> datetime:
    return utc(datetime.fromisoformat(text))
