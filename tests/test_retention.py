"""Retention (issue 13, item 5): `mercurio db prune [--dry-run]`, the node's own pruning loop,
MERCURIO_INBOX_MAX, and announcements a new user does not inherit; against real servers on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mercurio.schema import announcement_states, deliveries, notifications
from mercurio.urls import database_url
from tests.conftest import PUBLISHER, ROOT, ServerProcess, bearer, new_client_id, postgres_database
from tests.streams import open_stream

pytestmark = pytest.mark.timeout(120)

n = notifications
LONG_AGO = datetime.now(UTC) - timedelta(days=400)
# The loop runs at start and then not again during a test, unless a test asks.
QUIET = {"MERCURIO_PRUNE_INTERVAL": "3600", "MERCURIO_RETENTION_GRACE": "0"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_conn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/mercurio.db"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
def start(tmp_path: Path, db_conn: str) -> Iterator[Any]:
    """Start a server on db_conn with extra settings; stopped after the test."""
    started: list[ServerProcess] = []

    def _start(env: dict[str, str] | None = None) -> ServerProcess:
        proc = ServerProcess.in_folder(
            tmp_path, {**QUIET, **(env or {}), "MERCURIO_DB_CONN": db_conn}
        )
        started.append(proc)
        return proc.start()

    yield _start
    for proc in started:
        proc.stop()


@asynccontextmanager
async def database(conn: str) -> AsyncIterator[AsyncEngine]:
    """The test's own connection to the server's database, to look and to backdate."""
    engine = create_async_engine(database_url(conn))
    try:
        yield engine
    finally:
        await engine.dispose()


async def backdate(engine: AsyncEngine, ids: list[int]) -> None:
    async with engine.begin() as conn:
        await conn.execute(n.update().where(n.c.id.in_(ids)).values(created_at=LONG_AGO))


async def stored_ids(engine: AsyncEngine) -> set[int]:
    async with engine.connect() as conn:
        return {int(i) for i in (await conn.execute(sa.select(n.c.id))).scalars()}


async def count(engine: AsyncEngine, table: sa.Table) -> int:
    async with engine.connect() as conn:
        query = sa.select(sa.func.count()).select_from(table)
        return int((await conn.execute(query)).scalar_one())


async def unicast(api: httpx.AsyncClient, user: str, data: str, **extra: Any) -> int:
    body = {"sourceID": "tests", "destinationID": user, "data": data, **extra}
    answer = await api.post("/api/events/unicast", json=body, headers=PUBLISHER)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["notificationID"])


async def announce(api: httpx.AsyncClient, data: str) -> int:
    body = {"sourceID": "tests", "data": data}
    answer = await api.post("/api/events/announce", json=body, headers=PUBLISHER)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["notificationID"])


async def inbox(api: httpx.AsyncClient, user: str) -> tuple[list[int], int]:
    """The ids a user lists (newest first) and its unread count."""
    answer = await api.get(
        f"/api/clients/{user}/notifications", params={"limit": "200"}, headers=bearer(user)
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return [item["notificationID"] for item in body["notifications"]], body["unreadCount"]


def prune(conn: str, *args: str, **env: str) -> dict[str, int]:
    """`mercurio db prune`, as an operator runs it; its counts by line."""
    result = subprocess.run(
        [sys.executable, "-m", "mercurio", "db", "prune", *args],
        env={**os.environ, "MERCURIO_ENV": "test", **QUIET, **env, "MERCURIO_DB_CONN": conn},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ("would remove (dry run, nothing removed):" if args else "removed:")
    counts = {}
    for line in lines[1:]:
        match = re.fullmatch(r"  (.+?)(?: \(\d+\))?(?: \d+ days)?: (\d+)", line)
        assert match, line
        counts[match.group(1)] = int(match.group(2))
    return counts


def expected(old: int = 0, deleted: int = 0, expired: int = 0, over: int = 0, **rest: int) -> dict:
    return {
        "notifications older than": old,
        "notifications deleted": deleted,
        "notifications expired": expired,
        "notifications over the inbox max": over,
        "notifications in all": old + deleted + expired + over,
        "announcement states": rest.get("states", 0),
        "deliveries": rest.get("deliveries", 0),
    }


async def test_prune_removes_old_deleted_and_expired_with_their_states_and_deliveries(
    start: Any, db_conn: str
) -> None:
    server = start()
    user = new_client_id()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as api, database(db_conn) as db:
        await inbox(api, user)  # seen before the announcement, so it can read it
        old = [await unicast(api, user, "old-1"), await unicast(api, user, "old-2")]
        old.append(await announce(api, "old announcement"))
        read = await api.put(
            f"/api/clients/{user}/notifications/{old[2]}/read", headers=bearer(user)
        )
        assert read.status_code == 200, read.text
        gone = await unicast(api, user, "deleted")
        await unicast(api, user, "expiring", ttl=1)
        kept = [await unicast(api, user, "kept-1"), await unicast(api, user, "kept-2")]
        top = await unicast(api, user, "newest, deleted")
        for nid in (gone, top):
            answer = await api.delete(
                f"/api/clients/{user}/notifications/{nid}", headers=bearer(user)
            )
            assert answer.status_code == 200, answer.text
        await backdate(db, old)
        async with db.begin() as conn:  # a push still owed for an old one
            row = {"channel": "push", "client_id": user, "notification_id": old[0], "due_at": 4e9}
            await conn.execute(deliveries.insert().values(row))
        await asyncio.sleep(1.2)  # `expiring` expires

        before = await stored_ids(db)
        want = expected(old=3, deleted=1, expired=1, states=1, deliveries=1)
        assert prune(db_conn, "--dry-run") == want
        assert await stored_ids(db) == before
        assert (await count(db, announcement_states), await count(db, deliveries)) == (1, 1)

        assert prune(db_conn) == want
        # The newest survives though it is deleted: its id must never be handed out again.
        assert await stored_ids(db) == {*kept, top}
        assert (await count(db, announcement_states), await count(db, deliveries)) == (0, 0)
        assert (await inbox(api, user))[0] == kept[::-1]
        assert prune(db_conn) == expected()

        fresh = await unicast(api, user, "after the prune")
        assert fresh > max(before)


async def test_pruning_everything_prunable_keeps_ids_growing(start: Any, db_conn: str) -> None:
    server = start()
    user = new_client_id()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as api, database(db_conn) as db:
        handed_out = [await unicast(api, user, f"n{i}") for i in range(4)]
        handed_out.append(await announce(api, "all of it"))
        await backdate(db, handed_out)
        assert prune(db_conn)["notifications older than"] == 4
        assert await stored_ids(db) == {max(handed_out)}
        for _ in range(2):  # the newest is old too: pruning again leaves it still
            assert prune(db_conn)["notifications in all"] == 0
        again = await unicast(api, user, "next")
        assert again > max(handed_out)
        await backdate(db, [again])
        prune(db_conn)
        assert await unicast(api, user, "and next") > again


async def test_a_resume_from_pruned_history_gets_a_reset(start: Any, db_conn: str) -> None:
    server = start()
    user = new_client_id()
    url = f"/api/clients/{user}/notifications/stream"
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as api, database(db_conn) as db:
        first, second = await unicast(api, user, "a"), await unicast(api, user, "b")
        third = await unicast(api, user, "c")
        await backdate(db, [first, second])
        assert prune(db_conn)["notifications older than"] == 2

        headers = {**bearer(user), "Last-Event-ID": str(first)}
        async with open_stream(api, url, headers=headers) as stream:
            assert [m.id for m in await stream.messages(1)] == [str(third)]
            reset = await stream.next()
            assert (reset.event, reset.data) == (
                "reset",
                {"reason": "history-pruned", "lastEventId": third},
            )
        headers = {**bearer(user), "Last-Event-ID": str(second)}  # nothing after it went
        async with open_stream(api, url, headers=headers) as stream:
            assert [m.id for m in await stream.messages(1)] == [str(third)]
            later = await unicast(api, user, "d")
            assert (await stream.next()).id == str(later)  # no reset in between


async def test_inbox_max_trims_each_clients_oldest_first(start: Any, db_conn: str) -> None:
    server = start({"MERCURIO_INBOX_MAX": "3"})
    many, few = new_client_id(), new_client_id()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as api, database(db_conn) as db:
        await inbox(api, many)
        await inbox(api, few)
        mine = [await unicast(api, many, f"m{i}") for i in range(6)]
        theirs = [await unicast(api, few, f"f{i}") for i in range(2)]
        notice = await announce(api, "not in anyone's cap")
        await unicast(api, few, "f2")
        env = {"MERCURIO_INBOX_MAX": "3"}
        assert prune(db_conn, "--dry-run", **env) == expected(over=3)
        assert len(await stored_ids(db)) == 10
        assert prune(db_conn, **env) == expected(over=3)
        ids, unread = await inbox(api, many)
        assert ids == [notice, *mine[:2:-1]] and unread == 4
        assert (await inbox(api, few))[0][1:] == [notice, *theirs[::-1]]
        assert prune(db_conn, **env) == expected()


async def test_a_new_user_does_not_inherit_old_announcements_as_unread(
    start: Any, db_conn: str
) -> None:
    server = start()
    old_user, new_user = new_client_id(), new_client_id()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
        assert await inbox(api, old_user) == ([], 0)  # seen from now on
        before = await announce(api, "before the new user came")
        await asyncio.sleep(0.01)
        assert await inbox(api, new_user) == ([before], 0)  # listed, but as read
        assert await inbox(api, old_user) == ([before], 1)
        me = bearer(new_user)
        one = await api.get(f"/api/clients/{new_user}/notifications/{before}", headers=me)
        assert one.status_code == 200 and "readAt" in one.json()
        after = await announce(api, "after")
        assert await inbox(api, new_user) == ([after, before], 1)
        assert await inbox(api, old_user) == ([after, before], 2)
        marked = await api.put(f"/api/clients/{new_user}/notifications/read", headers=me)
        assert marked.json()["updated"] == 1
        back = await api.put(f"/api/clients/{new_user}/notifications/{before}/unread", headers=me)
        assert back.status_code == 200, back.text
        unread = await api.get(
            f"/api/clients/{new_user}/notifications", params={"status": "unread"}, headers=me
        )
        assert [item["notificationID"] for item in unread.json()["notifications"]] == [before]


async def test_a_user_sent_something_before_its_first_request_is_not_new(
    start: Any, db_conn: str
) -> None:
    """The README's example listed 2 unread of 3: user 123 had been sent two notifications,
    then an announcement, and its first request came after all three, so the announcement
    counted as inherited. Being sent a notification is being seen."""
    server = start()
    user = new_client_id()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
        first = await unicast(api, user, "sent before any request")
        await asyncio.sleep(0.01)
        later = await announce(api, "announced after that")
        assert await inbox(api, user) == ([later, first], 2)


async def test_the_node_prunes_on_its_own(start: Any, db_conn: str) -> None:
    server = start({"MERCURIO_PRUNE_INTERVAL": "0.3"})
    user = new_client_id()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as api, database(db_conn) as db:
        gone, kept = await unicast(api, user, "deleted"), await unicast(api, user, "kept")
        answer = await api.delete(f"/api/clients/{user}/notifications/{gone}", headers=bearer(user))
        assert answer.status_code == 200
        deadline = time.monotonic() + 20
        while gone in await stored_ids(db):
            assert time.monotonic() < deadline, "the loop never pruned"
            await asyncio.sleep(0.1)
        assert await stored_ids(db) == {kept}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MERCURIO_RETENTION_DAYS", "0"),
        ("MERCURIO_RETENTION_DAYS", "ninety"),
        ("MERCURIO_INBOX_MAX", "0"),
        ("MERCURIO_RETENTION_GRACE", "-1"),
        ("MERCURIO_PRUNE_INTERVAL", "0"),
    ],
)
def test_a_bad_retention_setting_stops_the_start_with_one_line(
    tmp_path: Path, name: str, value: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mercurio", "serve", "--port", "0"],
        env={
            **os.environ,
            "MERCURIO_ENV": "test",
            "MERCURIO_DB_CONN": f"sqlite:///{tmp_path}/m.db",
            name: value,
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output
    assert len(output.splitlines()) == 1 and name in output, output


def _migrate(connection: sa.Connection, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(ROOT / "mercurio/migrations"))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def stored_at_revision(db: AsyncEngine, revision: str, rows: list[tuple[str, str]]) -> None:
    """Migrate to an older revision and store (event id, client) rows the way it did."""
    async with db.begin() as conn:
        await conn.run_sync(_migrate, revision)
        row = {"source_id": "t", "category": "general", "data": '"x"', "publisher_id": "666"}
        now = datetime.now(UTC)
        await conn.execute(
            n.insert(),
            [{**row, "event_id": e, "client_id": c, "created_at": now} for e, c in rows],
        )


async def test_users_known_before_the_upgrade_keep_their_announcements(
    db_conn: str, start: Any
) -> None:
    known, preferring, newcomer = new_client_id(), new_client_id(), new_client_id()
    async with database(db_conn) as db:
        await stored_at_revision(db, "0006", [("a", "*"), ("u", known)])
        async with db.begin() as conn:
            await conn.execute(
                sa.text("INSERT INTO preferences (client_id, muted_categories) VALUES (:c, '[]')"),
                {"c": preferring},
            )
        announced = await stored_ids(db)
    server = start()  # migrates to the newest revision
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
        assert await inbox(api, known) == (sorted(announced, reverse=True), 2)
        assert await inbox(api, preferring) == ([min(announced)], 1)
        assert await inbox(api, newcomer) == ([min(announced)], 0)


async def test_the_unique_key_leads_with_the_event_after_the_upgrade_and_keeps_the_rows(
    db_conn: str, start: Any
) -> None:
    user, other = new_client_id(), new_client_id()
    async with database(db_conn) as db:
        await stored_at_revision(db, "0009", [("e1", user), ("e1", other)])
        (old_id, _) = sorted(await stored_ids(db))
    server = start()  # migrates to the newest revision
    async with database(db_conn) as db, db.connect() as conn:
        indexes, unique = await conn.run_sync(_keys_of_notifications)
    # One b-tree fewer per row: the unique key finds an event's rows (0010).
    assert unique == [["publisher_id", "event_id", "client_id"]], unique
    assert ["publisher_id", "event_id"] not in indexes, indexes
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
        assert await inbox(api, user) == ([old_id], 1)
        body = {"sourceID": "t", "destinationID": user, "id": "e1", "data": "x"}
        again = await api.post("/api/events/unicast", json=body, headers=PUBLISHER)
        assert again.status_code == 200 and again.json()["notificationID"] == old_id, again.text
        retracted = await api.delete("/api/events/e1", headers=PUBLISHER)
        assert retracted.status_code == 200 and retracted.json()["retracted"] == 2, retracted.text
        assert await inbox(api, user) == ([], 0)


def _keys_of_notifications(conn: sa.Connection) -> tuple[list[list[str]], list[list[str]]]:
    inspector = sa.inspect(conn)
    indexes = [list(i["column_names"]) for i in inspector.get_indexes("notifications")]
    unique = [list(u["column_names"]) for u in inspector.get_unique_constraints("notifications")]
    return indexes, unique


def run_prune(conn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mercurio", "db", "prune"],
        env={**os.environ, "MERCURIO_ENV": "test", "MERCURIO_DB_CONN": conn},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_prune_on_a_database_never_upgraded_says_so(tmp_path: Path) -> None:
    result = run_prune(f"sqlite:///{tmp_path}/empty.db")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "mercurio db upgrade" in result.stderr


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A database of its own (a sync fixture: postgres_database runs its own event loop)."""
    with postgres_database() as url:
        yield url


@pytest.mark.postgres
async def test_one_node_prunes_at_a_time_on_postgres(pg_url: str) -> None:
    upgrade = [sys.executable, "-m", "mercurio", "db", "upgrade"]
    env = {**os.environ, "MERCURIO_ENV": "test", "MERCURIO_DB_CONN": pg_url}
    await asyncio.to_thread(subprocess.run, upgrade, env=env, cwd=ROOT, check=True)
    async with database(pg_url) as db, db.connect() as holder:
        key = sa.func.hashtext("mercurio.retention")
        await holder.execute(sa.select(sa.func.pg_advisory_lock(key)))  # another node's run
        busy = await asyncio.to_thread(run_prune, pg_url)
        assert busy.returncode == 1, busy.stdout + busy.stderr
        assert "another node is pruning" in busy.stderr
        await holder.execute(sa.select(sa.func.pg_advisory_unlock(key)))
        free = await asyncio.to_thread(run_prune, pg_url)
        assert free.returncode == 0, free.stderr
        assert free.stdout.startswith("removed:")
