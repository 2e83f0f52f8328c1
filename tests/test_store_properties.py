"""Property tests of the store's delivery guarantees, against a model, on SQLite and PostgreSQL.

Hypothesis draws sequences of rounds: concurrent publish calls (so group commit mixes them in
one transaction or not), duplicate event ids, announcements, reads, unreads and deletes, also
aimed at other clients' notifications. After each step the store must agree with a plain
Python model: ids only grow, a repeated (client, event id) gets its first id back, `since(x)`
returns exactly the visible ids above x in order, and the unread count matches.

Examples share one database: each uses fresh client ids, and announcements (visible to every
client) made by earlier examples sit below the example's starting id, which the checks account for.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from mercurio.model import ANNOUNCEMENT, NewNotification
from mercurio.store import Store

pytestmark = pytest.mark.timeout(300)

CLIENTS = ["a", "b", "c"]
EVENTS = ["e0", "e1", "e2", "e3"]
EVERYONE = "*"


def category_of(event: str) -> str:
    """A publisher's event id fixes its category, so concurrent duplicates agree on it."""
    return "alerts" if event in ("e1", "e3") else "general"


@dataclass(frozen=True)
class Item:
    client: str  # one of CLIENTS, or EVERYONE for an announcement
    event: str | None  # None: the service makes a fresh id (no duplicate check)
    category: str


@dataclass(frozen=True)
class Publish:
    calls: list[list[Item]]  # run concurrently


@dataclass(frozen=True)
class Mark:
    client: str
    pick: int
    read: bool
    foreign: bool  # aim at a notification of another client instead


@dataclass(frozen=True)
class Delete:
    client: str
    pick: int
    foreign: bool


Step = Publish | Mark | Delete

items = st.builds(
    lambda client, event, category: Item(
        client, event, category_of(event) if event is not None else category
    ),
    st.sampled_from([*CLIENTS, EVERYONE]),
    st.none() | st.sampled_from(EVENTS),
    st.sampled_from(["general", "alerts"]),
)
steps: st.SearchStrategy[Step] = st.one_of(
    st.builds(Publish, st.lists(st.lists(items, min_size=1, max_size=4), min_size=1, max_size=4)),
    st.builds(Mark, st.sampled_from(CLIENTS), st.integers(0, 50), st.booleans(), st.booleans()),
    st.builds(Delete, st.sampled_from(CLIENTS), st.integers(0, 50), st.booleans()),
)


@dataclass
class Model:
    """What the store should hold, for one example's clients."""

    base: int  # the highest id before the example began
    old_unread: int  # earlier examples' announcements: visible and unread for a new client
    owner: dict[int, str] = field(default_factory=dict)  # id -> client or ANNOUNCEMENT
    category: dict[int, str] = field(default_factory=dict)
    by_key: dict[tuple[str, str], int] = field(default_factory=dict)
    read: set[tuple[str, int]] = field(default_factory=set)
    deleted: set[tuple[str, int]] = field(default_factory=set)

    def visible(self, cid: str) -> list[int]:
        return sorted(
            nid
            for nid, owner in self.owner.items()
            if owner in (cid, ANNOUNCEMENT) and (cid, nid) not in self.deleted
        )

    def unread(self, cid: str) -> int:
        own = [nid for nid in self.visible(cid) if (cid, nid) not in self.read]
        return self.old_unread + len(own)


class Example:
    """One drawn example run against the store, checked against the model at every step."""

    def __init__(self, store: Store, base: int, old_unread: int) -> None:
        self.store = store
        self.prefix = uuid.uuid4().hex[:10]
        self.model = Model(base, old_unread)

    def cid(self, client: str) -> str:
        return ANNOUNCEMENT if client == EVERYONE else f"{self.prefix}-{client}"

    def new(self, item: Item) -> NewNotification:
        # Announcements are everyone's: their event ids must be this example's own as well.
        event = f"{self.prefix}-{item.event}" if item.event is not None else uuid.uuid4().hex
        return NewNotification(
            event, "src", self.cid(item.client), item.category, "{}", item.event is not None
        )

    async def publish(self, step: Publish) -> None:
        model = self.model
        before = max([model.base, *model.owner])
        calls = [[self.new(item) for item in call] for call in step.calls]
        answers = await asyncio.gather(*(self.store.publish(call) for call in calls))
        fresh: dict[tuple[str, str], int] = {}
        for call, answer in zip(calls, answers, strict=True):
            assert len(answer) == len(call)
            for sent, got in zip(call, answer, strict=True):
                key = (sent.client_id, sent.event_id)
                assert (got.client_id, got.event_id) == key
                if key in model.by_key:
                    assert got.id == model.by_key[key], "a repeated event id got a new id"
                    continue
                assert got.id > before, f"id {got.id} is not above the last one {before}"
                assert fresh.setdefault(key, got.id) == got.id, "one key, two ids in a round"
                assert got.category == sent.category
        assert len(set(fresh.values())) == len(fresh), "two keys share an id"
        for (client_id, _), nid in fresh.items():
            model.owner[nid] = client_id
        for call in calls:
            for sent in call:
                key = (sent.client_id, sent.event_id)
                if key in fresh:
                    model.category[fresh[key]] = sent.category
        model.by_key.update(fresh)

    def _target(self, client: str, pick: int, foreign: bool) -> int | None:
        model = self.model
        cid = self.cid(client)
        if foreign:
            others = [nid for nid, owner in model.owner.items() if owner not in (cid, ANNOUNCEMENT)]
            return sorted(others)[pick % len(others)] if others else None
        mine = model.visible(cid)
        return mine[pick % len(mine)] if mine else None

    async def mark(self, step: Mark) -> None:
        nid = self._target(step.client, step.pick, step.foreign)
        if nid is None:
            return
        got = await self.store.set_read(self.cid(step.client), nid, step.read)
        if step.foreign:
            assert got is None, "another client's notification was marked"
            return
        assert got is not None and got.id == nid
        assert (got.read_at is not None) == step.read
        if step.read:
            self.model.read.add((self.cid(step.client), nid))
        else:
            self.model.read.discard((self.cid(step.client), nid))

    async def delete(self, step: Delete) -> None:
        nid = self._target(step.client, step.pick, step.foreign)
        if nid is None:
            return
        done = await self.store.delete(self.cid(step.client), nid)
        if step.foreign:
            assert not done, "another client's notification was deleted"
            return
        assert done
        self.model.deleted.add((self.cid(step.client), nid))

    async def check(self, thorough: bool) -> None:
        model = self.model
        for client in CLIENTS:
            cid = self.cid(client)
            visible = model.visible(cid)
            cursors = [model.base, *visible] if thorough else [model.base]
            for after in cursors:
                replay = await self.store.since(cid, after, limit=10_000)
                assert [n.id for n in replay.notifications] == [v for v in visible if v > after]
                assert not replay.truncated
            assert await self.store.unread_count(cid) == model.unread(cid)
            if thorough:
                await self._check_filters(cid, visible)

    async def _check_filters(self, cid: str, visible: list[int]) -> None:
        model = self.model
        alerts = frozenset({"alerts"})
        by_category = await self.store.since(cid, model.base, limit=10_000, categories=alerts)
        expected = [v for v in visible if model.category[v] == "alerts"]
        assert [n.id for n in by_category.notifications] == expected
        muted = await self.store.since(cid, model.base, limit=10_000, muted=alerts)
        assert [n.id for n in muted.notifications] == [v for v in visible if v not in expected]
        if len(visible) > 2:
            newest = await self.store.since(cid, model.base, limit=2)
            assert [n.id for n in newest.notifications] == visible[-2:]
            assert newest.truncated
        page = await self.store.page(cid, limit=500)
        assert [n.id for n in page.notifications if n.id > model.base] == visible[::-1]
        unread = await self.store.page(cid, status="unread", limit=500)
        assert [n.id for n in unread.notifications if n.id > model.base] == [
            v for v in reversed(visible) if (cid, v) not in model.read
        ]
        for stored in page.notifications:
            if stored.id > model.base:
                assert stored.client_id in (cid, ANNOUNCEMENT)


async def run_example(store: Store, drawn: list[Step]) -> None:
    base = await store.last_id()
    old_unread = await store.unread_count(f"fresh-{uuid.uuid4().hex}")
    example = Example(store, base, old_unread)
    for step in drawn:
        if isinstance(step, Publish):
            await example.publish(step)
        elif isinstance(step, Mark):
            await example.mark(step)
        else:
            await example.delete(step)
        await example.check(thorough=False)
    await example.check(thorough=True)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def running_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[asyncio.Runner, Store, int]]:
    """A started store, the runner of its event loop, and how many examples to draw."""
    if request.param == "sqlite":
        folder: Path = tmp_path_factory.mktemp("properties")
        url, examples = f"sqlite:///{folder}/store.db", 60
    else:
        url, examples = request.getfixturevalue("postgres_url"), 25
    runner = asyncio.Runner()
    store = Store(url)
    runner.run(store.start())
    try:
        yield runner, store, examples
    finally:
        runner.run(store.close())
        runner.close()


def test_store_matches_the_model_under_any_interleaving(
    running_store: tuple[asyncio.Runner, Store, int],
) -> None:
    runner, store, examples = running_store

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(drawn=st.lists(steps, min_size=1, max_size=10))
    def check(drawn: list[Step]) -> None:
        note(repr(drawn))
        runner.run(run_example(store, drawn))

    check()
