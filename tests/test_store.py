"""The store's guarantees, on SQLite and on PostgreSQL (the same assertions for both)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from mercurio.errors import ConfigError, EventConflict, StoreUnavailable
from mercurio.model import ANNOUNCEMENT, NewNotification
from mercurio.store import Engines, GroupCommitWriter, Store
from mercurio.store.engines import migrate
from mercurio.urls import database_url

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    store = Store(store_url)
    await store.start()
    await _wipe(store)
    yield store
    await store.close()


async def _wipe(store: Store) -> None:
    await _wipe_tables(store.write_engine())


async def _wipe_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in ("notifications", "announcement_states", "preferences", "stream_tickets"):
            await conn.execute(sa.text(f"DELETE FROM {table}"))


def item(
    client: str, event: str, *, category: str = "general", data: str = '"x"', check: bool = True
) -> NewNotification:
    return NewNotification(event, "src", client, category, data, check_duplicate=check)


def test_database_url_forms() -> None:
    assert database_url("mercurio.db") == "sqlite+aiosqlite:///mercurio.db"
    assert database_url("sqlite:///a/b.db") == "sqlite+aiosqlite:///a/b.db"
    assert database_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert database_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    with pytest.raises(ConfigError, match=r"MERCURIO_DB_CONN.*mysql.*u:\*\*\*@"):
        database_url("mysql://u:secret@h/db")


async def test_concurrent_publishes_share_transactions(store: Store) -> None:
    seen: list[int] = []
    store.on_commit = lambda fresh: seen.extend(n.id for n in fresh)
    results = await asyncio.gather(*(store.publish([item("a", f"e{i}")]) for i in range(200)))
    ids = [r[0].id for r in results]
    assert len(set(ids)) == 200
    assert store.batches_committed < 200  # grouped: fewer transactions than publishes
    assert seen == sorted(seen) and sorted(seen) == sorted(ids)


async def test_a_thousand_destination_publish_is_a_fixed_number_of_statements_on_postgres(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    if store.is_sqlite:
        pytest.skip("SQLite's writer runs its batch in one thread hop (store/sqlite_writes.py)")
    import asyncpg

    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    def counted(name: str) -> Any:
        method = getattr(asyncpg.Connection, name)

        async def call(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            statements.append(query)
            return await method(self, query, *args, **kwargs)

        return call

    # Both doors to the server: SQLAlchemy's cursor, and asyncpg's own connection.
    for name in ("execute", "executemany", "fetch", "fetchrow", "fetchval"):
        monkeypatch.setattr(asyncpg.Connection, name, counted(name))
    engine = store.write_engine().sync_engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        stored = await store.publish([item(f"c{i}", "e") for i in range(1000)])
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert len(stored) == 1000 and len({note.id for note in stored}) == 1000
    assert [note.client_id for note in stored] == [f"c{i}" for i in range(1000)]
    # BEGIN, the publish lock, the look-up of repeated events, the insert, COMMIT.
    assert len(statements) <= 5, statements
    assert any("INSERT INTO notifications" in statement for statement in statements)
    again = await store.publish([item(f"c{i}", "e") for i in range(1000)])
    assert [note.id for note in again] == [note.id for note in stored]


@pytest.fixture
async def engines(store_url: str) -> AsyncIterator[Engines]:
    engines = Engines.open(database_url(store_url))
    await migrate(engines.write)
    await _wipe_tables(engines.write)
    yield engines
    await engines.dispose()


async def _stored_ids(engines: Engines) -> list[int]:
    async with engines.read.connect() as conn:
        rows = await conn.execute(sa.text("SELECT id FROM notifications ORDER BY id"))
        return [row.id for row in rows]


async def test_the_writer_shares_transactions_and_hands_on_each_commit_before_answering(
    engines: Engines,
) -> None:
    handed_on: list[list[int]] = []
    writer = GroupCommitWriter(on_commit=lambda fresh: handed_on.append([n.id for n in fresh]))
    writer.start(engines.write)

    async def publish(i: int) -> list[int]:
        stored = [
            note.id for note in await writer.publish([item("a", f"e{i}"), item("b", f"e{i}")])
        ]
        # on_commit runs right after the commit, before the publisher hears back.
        assert set(stored) <= {note_id for batch in handed_on for note_id in batch}
        return stored

    try:
        answers = await asyncio.gather(*(publish(i) for i in range(100)))
    finally:
        await writer.close()
    ids = [note_id for answer in answers for note_id in answer]
    assert writer.batches_committed < 100
    assert writer.batches_committed == len(handed_on)
    assert writer.items_committed == 200 == len(set(ids))
    every_commit = [note_id for batch in handed_on for note_id in batch]
    assert every_commit == sorted(every_commit) and len(set(every_commit)) == 200
    assert await _stored_ids(engines) == every_commit


async def test_the_writer_hands_on_only_what_a_commit_added(engines: Engines) -> None:
    handed_on: list[list[int]] = []
    writer = GroupCommitWriter(on_commit=lambda fresh: handed_on.append([n.id for n in fresh]))
    writer.start(engines.write)
    try:
        (first,) = await writer.publish([item("a", "e")])
        (again,) = await writer.publish([item("a", "e")])
        with pytest.raises(EventConflict):
            await writer.publish([item("a", "e", data='"other"')])
    finally:
        await writer.close()
    assert again == first
    assert handed_on == [[first.id]]
    assert writer.items_committed == 1 and writer.batches_committed == 3


async def test_closing_the_writer_finishes_the_publishes_already_queued(
    engines: Engines,
) -> None:
    writer = GroupCommitWriter(queue_size=64)
    writer.start(engines.write)
    publishes = [asyncio.create_task(writer.publish([item("a", f"e{i}")])) for i in range(50)]
    await asyncio.sleep(0)  # one turn of the loop: each task runs up to its put, all queued
    await writer.close()
    assert all(task.done() and task.exception() is None for task in publishes)
    ids = [task.result()[0].id for task in publishes]
    assert sorted(ids) == await _stored_ids(engines) and len(ids) == 50
    with pytest.raises(StoreUnavailable, match="closed"):
        await writer.publish([item("a", "late")])


async def test_same_event_to_same_destination_is_stored_once(store: Store) -> None:
    first = await store.publish([item("a", "evt"), item("b", "evt")])
    again = await store.publish([item("a", "evt"), item("c", "evt")])
    assert again[0] == first[0]
    assert again[1].client_id == "c" and again[1].id > first[1].id
    both = await asyncio.gather(
        store.publish([item("d", "same")]), store.publish([item("d", "same")])
    )
    assert both[0][0].id == both[1][0].id
    page = await store.page("a")
    assert [n.data_json for n in page.notifications] == ['"x"']


async def test_a_publish_longer_than_one_insert_statement_stores_every_row_in_order(
    store: Store,
) -> None:
    # Longer than any one statement or IN-list chunk: every row stored, in order, read back.
    count = 1234
    items = [item(f"c{i}", "wide", data=f'{{"n": {i}}}') for i in range(count)]
    stored = await store.publish(items)
    ids = [note.id for note in stored]
    assert ids == list(range(ids[0], ids[0] + count))
    for i in (0, 499, 500, 999, 1000, 1233):
        page = await store.page(f"c{i}")
        assert [(n.id, n.data_json) for n in page.notifications] == [(ids[i], f'{{"n": {i}}}')]
    again = await store.publish(items)
    assert [note.id for note in again] == ids


async def test_page_orders_newest_first_and_filters(store: Store) -> None:
    stored = await store.publish(
        [item("a", f"e{i}", category="c" if i % 2 else "d") for i in range(7)]
    )
    ids = [n.id for n in stored]
    page = await store.page("a", limit=3)
    assert [n.id for n in page.notifications] == ids[::-1][:3]
    assert page.next_before == ids[4]
    rest = await store.page("a", limit=10, before=page.next_before)
    assert [n.id for n in rest.notifications] == ids[::-1][3:]
    assert rest.next_before is None
    only_c = await store.page("a", category="c")
    assert [n.id for n in only_c.notifications] == [ids[5], ids[3], ids[1]]
    await store.set_read("a", ids[0], True)
    read = await store.page("a", status="read")
    assert [n.id for n in read.notifications] == [ids[0]]
    assert read.unread_count == 6
    assert (await store.page("b")).notifications == []


async def test_read_unread_keeps_first_read_time_and_respects_owner(store: Store) -> None:
    (note,) = await store.publish([item("a", "e")])
    assert await store.set_read("b", note.id, True) is None
    first = await store.set_read("a", note.id, True)
    assert first is not None and first.read_at is not None
    second = await store.set_read("a", note.id, True)
    assert second is not None and second.read_at == first.read_at
    cleared = await store.set_read("a", note.id, False)
    assert cleared is not None and cleared.read_at is None
    assert await store.delete("b", note.id) is False
    assert await store.delete("a", note.id) is True
    assert await store.get("a", note.id) is None


async def test_announcements_have_per_client_state(store: Store) -> None:
    (ann,) = await store.publish([item(ANNOUNCEMENT, "news")])
    (own,) = await store.publish([item("a", "own")])
    assert [n.id for n in (await store.page("a")).notifications] == [own.id, ann.id]
    assert [n.id for n in (await store.page("zz")).notifications] == [ann.id]
    await store.set_read("a", ann.id, True)
    assert await store.unread_count("a") == 1
    assert await store.unread_count("b") == 1
    assert await store.mark_all_read("b") == 1
    assert await store.unread_count("b") == 0
    assert await store.delete("a", ann.id)
    assert await store.get("a", ann.id) is None
    assert await store.get("b", ann.id) is not None


async def test_since_replays_in_order_and_truncates_to_the_newest(store: Store) -> None:
    stored = await store.publish(
        [item("a", f"e{i}", category="k" if i < 3 else "m") for i in range(6)]
    )
    ids = [n.id for n in stored]
    replay = await store.since("a", ids[1], limit=10)
    assert [n.id for n in replay.notifications] == ids[2:] and not replay.truncated
    short = await store.since("a", 0, limit=4)
    assert [n.id for n in short.notifications] == ids[2:] and short.truncated
    filtered = await store.since("a", 0, limit=10, categories=frozenset({"k"}))
    assert [n.id for n in filtered.notifications] == ids[:3]
    muted = await store.since("a", 0, limit=10, muted=frozenset({"k"}))
    assert [n.id for n in muted.notifications] == ids[3:]


async def test_tickets_are_single_use(store: Store) -> None:
    assert await store.consume_ticket("t1", 9e9)
    assert not await store.consume_ticket("t1", 9e9)
    assert await store.consume_ticket("t2", 9e9)


async def test_preferences_round_trip(store: Store) -> None:
    assert await store.muted_categories("a") == frozenset()
    await store.set_muted_categories("a", ["x", "y"])
    await store.set_muted_categories("a", ["y"])
    assert await store.muted_categories("a") == frozenset({"y"})


async def test_resuming_never_skips_a_late_commit_under_concurrent_publishers(
    store_url: str,
) -> None:
    """DESIGN.md invariant 4: several nodes' writers publish at once while a reader resumes
    again and again from the last id it saw; it must end with every id exactly once."""
    nodes = [Store(store_url) for _ in range(4)]
    for node in nodes:
        await node.start()
    await _wipe(nodes[0])
    published: list[int] = []
    done = asyncio.Event()
    try:

        async def publisher(node: Store, n: int) -> None:
            for _ in range(60):
                batch = [
                    item("reader", uuid.uuid4().hex, check=False)
                    for k in range(random.randint(1, 3))
                ]
                published.extend(x.id for x in await node.publish(batch))
                await asyncio.sleep(random.random() / 500)

        async def reader() -> list[int]:
            seen: list[int] = []
            cursor = 0
            while True:
                finished = done.is_set()
                replay = await nodes[0].since("reader", cursor, limit=100_000)
                seen.extend(n.id for n in replay.notifications)
                if replay.notifications:
                    cursor = replay.notifications[-1].id
                if finished:
                    return seen
                await asyncio.sleep(0)

        reading = asyncio.create_task(reader())
        await asyncio.gather(
            *(publisher(node, n) for n, node in enumerate(nodes) for _ in range(2))
        )
        done.set()
        seen = await reading
    finally:
        for node in nodes:
            await node.close()
    assert len(seen) == len(set(seen)), "a notification was replayed twice"
    assert sorted(seen) == sorted(published), "a resume skipped a late commit"


async def test_one_bad_item_in_a_group_commit_does_not_fail_the_innocent_ones(
    store: Store,
) -> None:
    # A NOT NULL violation fails on every backend, as a NUL in text does on PostgreSQL.
    bad = NewNotification("bad", "src", "z", "general", '"x"', publisher_id=None)  # type: ignore[arg-type]
    calls = [[item(f"c{i}", f"e{i}")] for i in range(30)]
    calls.insert(15, [bad])
    answers = await asyncio.gather(*(store.publish(c) for c in calls), return_exceptions=True)
    failed = [a for a in answers if isinstance(a, Exception)]
    assert len(failed) == 1 and isinstance(failed[0], StoreUnavailable)
    assert answers[15] is failed[0]
    for i in range(30):
        page = await store.page(f"c{i}")
        assert [n.event_id for n in page.notifications] == [f"e{i}"]
    assert (await store.page("z")).notifications == []


async def test_a_nul_in_text_fails_only_its_own_publish_on_every_backend(store: Store) -> None:
    nul = NewNotification("nul", "s\x00rc", "y", "general", '"x"')
    answers = await asyncio.gather(
        store.publish([item("a", "e1")]),
        store.publish([nul]),
        store.publish([item("b", "e2")]),
        return_exceptions=True,
    )
    assert not isinstance(answers[0], Exception) and not isinstance(answers[2], Exception)
    if not store.is_sqlite:
        assert isinstance(answers[1], StoreUnavailable)
        assert (await store.page("y")).notifications == []


def by(publisher: str, client: str, event: str, data: str = '"x"') -> NewNotification:
    return NewNotification(event, "src", client, "general", data, publisher_id=publisher)


async def test_another_publishers_event_id_is_its_own_notification(store: Store) -> None:
    first = (await store.publish([by("A", "u", "evt", '"from A"')]))[0]
    other = (await store.publish([by("B", "u", "evt", '"from B"')]))[0]
    assert other.id != first.id
    texts = sorted(n.data_json for n in (await store.page("u")).notifications)
    assert texts == ['"from A"', '"from B"']
    again = (await store.publish([by("A", "u", "evt", '"from A"')]))[0]
    assert again.id == first.id


async def test_the_same_event_id_with_other_content_is_a_conflict_and_stores_nothing(
    store: Store,
) -> None:
    await store.publish([by("A", "u", "evt")])
    with pytest.raises(EventConflict):
        await store.publish([by("A", "v", "evt"), by("A", "u", "evt", '"changed"')])
    assert (await store.page("v")).notifications == []
    # Two different publishes with one id in the same group commit: one wins, one conflicts.
    answers = await asyncio.gather(
        store.publish([by("A", "w", "e2", '"one"')]),
        store.publish([by("A", "w", "e2", '"two"')]),
        return_exceptions=True,
    )
    assert sum(isinstance(a, EventConflict) for a in answers) == 1
    assert len((await store.page("w")).notifications) == 1


async def test_mark_all_read_over_thousands_of_announcements_is_one_statement(
    store: Store,
) -> None:
    notes = await store.publish(
        [item(ANNOUNCEMENT, f"a{i}", category="c" if i % 3 == 0 else "d") for i in range(3500)]
    )
    await store.set_read("me", notes[0].id, True)  # already read: not counted again
    assert await store.delete("me", notes[3].id)  # deleted: stays hidden and unread
    await store.publish([item("me", "own", category="c")])
    statements: list[str] = []

    def count(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        statements.append(sql)

    engine = store.write_engine().sync_engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        marked_c = await store.mark_all_read("me", category="c")
        marked_rest = await store.mark_all_read("me")
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    in_c = len([i for i in range(3500) if i % 3 == 0])
    assert marked_c == in_c - 2 + 1  # minus the read and the deleted one, plus "own"
    assert marked_rest == 3500 - in_c
    assert await store.unread_count("me") == 0
    assert await store.unread_count("other") == 3500
    assert (await store.get("me", notes[3].id)) is None
    # Two statements each (own rows, announcements), whatever the backlog.
    writes = [sql for sql in statements if not sql.lstrip().upper().startswith("BEGIN")]
    assert len(writes) <= 4, writes


async def test_a_database_from_before_publisher_ids_upgrades_with_its_rows(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path}/old.db"
    old = Engines.open(database_url(url))

    def to_0001(connection: sa.Connection) -> None:
        config = Config()
        migrations = Path(__file__).parent.parent / "mercurio" / "migrations"
        config.set_main_option("script_location", str(migrations))
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")

    async with old.write.begin() as conn:
        await conn.run_sync(to_0001)
        await conn.execute(
            sa.text(
                "INSERT INTO notifications (event_id, source_id, client_id, category, data,"
                " created_at) VALUES ('evt', 's', 'u', 'general', '\"old\"', CURRENT_TIMESTAMP)"
            )
        )
    await old.dispose()
    store = Store(url)
    await store.start()
    try:
        assert [n.data_json for n in (await store.page("u")).notifications] == ['"old"']
        new = await store.publish([by("A", "u", "evt", '"new"')])
        assert [n.id for n in (await store.page("u")).notifications] == [new[0].id, 1]
    finally:
        await store.close()
