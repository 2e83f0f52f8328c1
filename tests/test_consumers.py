"""Durable consumers on SQLite and PostgreSQL: each committed notification handled exactly once.

The test consumer writes (consumer, notification id, node) into a table of its own through the
transaction it is handed, so the table shows exactly what was committed with the cursor.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from structlog.testing import capture_logs

from mercurio.consumers import Consumer, ConsumerRunner, each_commit
from mercurio.model import ANNOUNCEMENT, NewNotification, Notification
from mercurio.schema import Id
from mercurio.store import Store
from tests.conftest import postgres_database
from tests.helpers import until

pytestmark = pytest.mark.timeout(120)

handled_table = sa.Table(
    "test_handled",
    sa.MetaData(),
    sa.Column("seq", Id, primary_key=True, autoincrement=True),
    sa.Column("consumer", sa.String(128), nullable=False),
    sa.Column("note_id", sa.BigInteger(), nullable=False),
    sa.Column("node", sa.String(16), nullable=False),
)


class Recorder(Consumer):
    """Records every notification it is handed, in the cursor's transaction."""

    def __init__(self, name: str = "recorder", node: str = "a") -> None:
        self.name = name
        self.node = node

    async def handle(self, conn: AsyncConnection, notes: list[Notification]) -> None:
        rows = [{"consumer": self.name, "note_id": n.id, "node": self.node} for n in notes]
        await conn.execute(handled_table.insert(), rows)


class FromBeginning(Recorder):
    from_beginning = True


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/consumers.db"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@asynccontextmanager
async def node(
    url: str, *consumers: Consumer, page_size: int = 500, close_grace: float = 10.0
) -> AsyncIterator[tuple[Store, ConsumerRunner]]:
    """A store and a runner on it, wired as Node wires them (without the HTTP parts)."""
    runner = ConsumerRunner(consumers, interval=0.05, page_size=page_size, close_grace=close_grace)
    store = Store(url, on_commit=each_commit(runner.committed))
    await store.start()
    async with store.write_engine().begin() as conn:
        await conn.run_sync(handled_table.metadata.create_all)
    await runner.start(store, store.write_engine())
    try:
        yield store, runner
    finally:
        await runner.close()
        await store.close()


def item(client: str, event: str) -> NewNotification:
    return NewNotification(event, "src", client, "general", '"x"', check_duplicate=False)


async def publish_many(store: Store, count: int, prefix: str) -> list[int]:
    """Publish `count` notifications concurrently (some announcements); their ids."""
    clients = ["alice", "bob", ANNOUNCEMENT]
    answers = await asyncio.gather(
        *(store.publish([item(clients[i % 3], f"{prefix}{i}")]) for i in range(count))
    )
    return [answer[0].id for answer in answers]


def has_handled(runner: ConsumerRunner, count: int, consumer: str = "recorder") -> bool:
    return runner.handled[consumer] == count


async def handled(store: Store, consumer: str = "recorder") -> list[tuple[int, str]]:
    """(notification id, node) for each handling committed, in the order they were handled."""
    query = (
        sa.select(handled_table.c.note_id, handled_table.c.node)
        .where(handled_table.c.consumer == consumer)
        .order_by(handled_table.c.seq)
    )
    async with store._reader().connect() as conn:
        return [(row.note_id, row.node) for row in await conn.execute(query)]


async def test_every_notification_after_start_is_handled_once_in_id_order(db_url: str) -> None:
    async with node(db_url) as (store, _):  # no consumer yet: history nobody asked for
        history = await publish_many(store, 20, "old")
    recorder = Recorder()
    async with node(db_url, recorder, page_size=7) as (store, runner):
        assert await runner.position(recorder.name) == max(history)
        fresh = await publish_many(store, 300, "new")
        await until(lambda: runner.handled[recorder.name] == 300, what="300 handled")
        assert [note_id for note_id, _ in await handled(store)] == sorted(fresh)
        assert await runner.position(recorder.name) == max(fresh)


async def test_a_consumer_told_to_start_at_the_beginning_handles_history(db_url: str) -> None:
    async with node(db_url) as (store, _):
        history = await publish_many(store, 30, "old")
    async with node(db_url, FromBeginning(), page_size=8) as (store, runner):
        await until(lambda: runner.handled["recorder"] == 30, what="history handled")
        assert [note_id for note_id, _ in await handled(store)] == sorted(history)


class Stalling(Recorder):
    """Records, then hangs inside its transaction from the `stall_at`-th batch on."""

    def __init__(self, stall_at: int, *, from_beginning: bool) -> None:
        super().__init__()
        self.from_beginning = from_beginning
        self.stall_at = stall_at
        self.batches = 0
        self.stalled = asyncio.Event()

    async def handle(self, conn: AsyncConnection, notes: list[Notification]) -> None:
        await super().handle(conn, notes)
        self.batches += 1
        if self.batches >= self.stall_at:
            self.stalled.set()
            await asyncio.Event().wait()  # the process "dies" here, before the commit


async def test_a_restart_mid_batch_loses_nothing_and_handles_nothing_twice(db_url: str) -> None:
    async with node(db_url) as (store, _):
        first = await publish_many(store, 100, "a")
    stalling = Stalling(stall_at=3, from_beginning=True)
    async with node(db_url, stalling, page_size=10, close_grace=0.1) as (store, runner):
        await asyncio.wait_for(stalling.stalled.wait(), 10)
        assert runner.handled[stalling.name] == 20  # two batches committed, the third hangs
    async with node(db_url) as (store, _):
        while_down = await publish_many(store, 25, "b")  # published with no consumer running
    recorder = Recorder()
    async with node(db_url, recorder, page_size=10) as (store, runner):
        after = await publish_many(store, 40, "c")
        await until(lambda: runner.handled[recorder.name] == 80 + 25 + 40, what="the rest")
        assert [note_id for note_id, _ in await handled(store)] == sorted(
            first + while_down + after
        )


class Flaky(Recorder):
    """Fails (after writing its rows) on the first `failures` batches that hold "poison"."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def handle(self, conn: AsyncConnection, notes: list[Notification]) -> None:
        await super().handle(conn, notes)
        if self.failures and any(note.event_id == "poison" for note in notes):
            self.failures -= 1
            raise RuntimeError("channel down")


async def test_a_failing_batch_is_retried_and_never_skipped(db_url: str) -> None:
    flaky = Flaky(failures=3)
    with capture_logs() as logs:
        async with node(db_url, flaky, page_size=5) as (store, runner):
            before = await publish_many(store, 12, "a")
            await until(lambda: runner.handled[flaky.name] == 12, what="the first 12")
            poison = (await store.publish([item("alice", "poison")]))[0].id
            later = await publish_many(store, 12, "b")
            await until(lambda: runner.handled[flaky.name] == 25, what="all 25")
            assert runner.failures[flaky.name] == 3
            assert [note_id for note_id, _ in await handled(store)] == sorted(
                [*before, poison, *later]
            )
    failed = [entry for entry in logs if entry["event"] == "consumer.failed"]
    assert [(e["name"], e["error"]) for e in failed] == [("recorder", "RuntimeError")] * 3


class Slow(Recorder):
    async def handle(self, conn: AsyncConnection, notes: list[Notification]) -> None:
        await super().handle(conn, notes)
        await asyncio.sleep(0.002)  # hold the claim a while, so the other node must skip it


async def test_two_nodes_share_a_consumer_and_each_notification_is_handled_once(
    pg_url: str,
) -> None:
    async with (
        node(pg_url, Slow(node="a"), page_size=10) as (store_a, runner_a),
        node(pg_url, Slow(node="b"), page_size=10) as (store_b, runner_b),
    ):
        rounds = [
            asyncio.gather(publish_many(store_a, 20, f"a{r}-"), publish_many(store_b, 20, f"b{r}-"))
            for r in range(10)
        ]
        ids = [i for pair in await asyncio.gather(*rounds) for batch in pair for i in batch]

        def both() -> int:
            return runner_a.handled["recorder"] + runner_b.handled["recorder"]

        await until(lambda: both() >= len(ids), what="every notification handled")
        rows = await handled(store_a)
        assert [note_id for note_id, _ in rows] == sorted(ids)  # once each, in id order
        assert both() == len(ids)
        by_node = {name: sum(1 for _, n in rows if n == name) for name in ("a", "b")}
        assert by_node == {"a": runner_a.handled["recorder"], "b": runner_b.handled["recorder"]}


async def test_when_the_node_holding_a_consumer_leaves_another_takes_over(pg_url: str) -> None:
    async with node(pg_url) as (store, _):
        ids = await publish_many(store, 30, "x")
    stalling = Stalling(stall_at=1, from_beginning=True)
    async with AsyncExitStack() as node_b:
        async with node(pg_url, stalling, close_grace=0.1) as _:
            await asyncio.wait_for(stalling.stalled.wait(), 10)
            # Node a holds the cursor, inside its transaction: node b must keep off it.
            store_b, runner_b = await node_b.enter_async_context(node(pg_url, Recorder(node="b")))
            more = await publish_many(store_b, 5, "y")
            await until(lambda: runner_b.held_elsewhere["recorder"] >= 3, what="b refused")
            assert runner_b.handled["recorder"] == 0
        # Node a is gone (its batch rolled back): b takes over from a's cursor.
        await until(lambda: runner_b.handled["recorder"] == 35, what="node b taking over")
        assert await handled(store_b) == [(note_id, "b") for note_id in sorted(ids + more)]


async def test_a_database_at_0002_upgrades_to_cursors_with_its_rows(db_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    def migrate(connection: sa.Connection, revision: str, down: bool = False) -> None:
        config = Config()
        migrations = Path(__file__).parent.parent / "mercurio" / "migrations"
        config.set_main_option("script_location", str(migrations))
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    old = Store(db_url)
    await old.start(migrate=False)
    async with old.write_engine().begin() as conn:
        await conn.run_sync(migrate, "0002")
        await conn.execute(
            sa.text(
                "INSERT INTO notifications (event_id, source_id, client_id, category, data,"
                " created_at, publisher_id) VALUES"
                " ('evt', 's', 'u', 'general', '\"old\"', CURRENT_TIMESTAMP, 'p')"
            )
        )
    await old.close()
    async with node(db_url, FromBeginning("replayer"), Recorder("tail")) as (store, runner):
        await until(lambda: runner.handled["replayer"] == 1, what="the old row handled")
        old_rows = await handled(store, "replayer")
        assert [n.data_json for n in (await store.page("u")).notifications] == ['"old"']
        assert await runner.position("tail") == old_rows[0][0]  # new: starts at the end
        await runner.close()
        async with store.write_engine().begin() as conn:
            await conn.run_sync(migrate, "0002", True)
            tables = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
        assert "consumer_cursors" not in tables and "notifications" in tables


async def test_a_node_runs_its_consumers_and_rings_them_on_each_local_commit(
    tmp_path: Path,
) -> None:
    from mercurio.config import load_settings
    from mercurio.node import Node

    url = f"sqlite:///{tmp_path}/node.db"
    settings = load_settings({"MERCURIO_ENV": "test", "MERCURIO_DB_CONN": url})
    recorder = Recorder()
    mercurio_node = Node(settings, consumers=[recorder])
    # Polls an hour apart: only the ring of a local commit explains a prompt handling.
    mercurio_node.consumers.interval = 3600
    await mercurio_node.start()
    try:
        async with mercurio_node.store.write_engine().begin() as conn:
            await conn.run_sync(handled_table.metadata.create_all)
        notes: list[Notification] = []
        for event in ["e1", "e2", "e3"]:
            # After the first, the runner is parked on its bell: each one is handled on a ring.
            notes += await mercurio_node.publish([item(ANNOUNCEMENT, event)])
            await until(partial(has_handled, mercurio_node.consumers, len(notes)), what=event)
        assert [note_id for note_id, _ in await handled(mercurio_node.store)] == [
            note.id for note in notes
        ]
    finally:
        await mercurio_node.stop()
