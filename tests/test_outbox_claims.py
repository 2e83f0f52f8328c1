"""Leases of a whole-client channel (e-mail digests) on SQLite and PostgreSQL, two nodes at once.

Each node is its own Store (own engines and pools) on one database, as two processes would be;
their claims race in one event loop, interleaving at every round trip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import sqlalchemy as sa

from mercurio.schema import deliveries
from mercurio.store import Store
from mercurio.store.outbox import Delivery, Outbox
from tests.conftest import postgres_database

pytestmark = pytest.mark.timeout(120)

CLIENTS = [f"user{i}" for i in range(6)]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/outbox.db"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
async def two_nodes(db_url: str) -> AsyncIterator[tuple[Store, Store]]:
    async with AsyncExitStack() as stack:
        stores = []
        for _ in range(2):
            store = Store(db_url)
            await store.start()
            stack.push_async_callback(store.close)
            stores.append(store)
        yield stores[0], stores[1]


async def owe_each_client(store: Store, rows_per_client: int) -> None:
    due = time.time() - 1
    rows = [
        {"channel": "email", "client_id": client, "notification_id": n, "due_at": due}
        for client in CLIENTS
        for n in range(rows_per_client)
    ]
    async with store.write_engine().begin() as conn:
        await conn.execute(deliveries.insert(), rows)


async def claim_until_dry(outbox: Outbox) -> list[Delivery]:
    """Claim two groups at a time, as a busy dispatcher would, until nothing free is left."""
    taken: list[Delivery] = []
    while claimed := await outbox.claim(2, whole_client=True):
        taken += claimed
    return taken


async def test_two_nodes_never_send_one_client_two_digests_at_once(
    two_nodes: tuple[Store, Store],
) -> None:
    """CI saw two PostgreSQL nodes each mail one user a digest: with SKIP LOCKED, both claimed
    at the same instant, each locked a different due row of the same client, and each took
    that client's remaining rows it could see as its own group."""
    a, b = (Outbox(store, "email", owner) for store, owner in zip(two_nodes, "ab", strict=True))
    for round_ in range(25):
        await owe_each_client(two_nodes[0], rows_per_client=3)
        got_a, got_b = await asyncio.gather(claim_until_dry(a), claim_until_dry(b))
        both = {x.client_id for x in got_a} & {x.client_id for x in got_b}
        assert not both, f"round {round_}: both nodes leased rows of {both}"
        assert len(got_a) + len(got_b) == 3 * len(CLIENTS)
        await a.finish(d.id for d in got_a)
        await b.finish(d.id for d in got_b)


async def test_a_clients_new_row_waits_while_its_digest_is_being_sent(
    two_nodes: tuple[Store, Store],
) -> None:
    """A row that falls due while another node is sending that client's digest is left for
    the next digest, not mailed alongside it."""
    a, b = (Outbox(store, "email", owner) for store, owner in zip(two_nodes, "ab", strict=True))
    await owe_each_client(two_nodes[0], rows_per_client=1)
    first = await claim_until_dry(a)
    assert {delivery.client_id for delivery in first} == set(CLIENTS)
    await owe_each_client(two_nodes[0], rows_per_client=1)
    assert await b.claim(10, whole_client=True) == []
    await a.finish(delivery.id for delivery in first)
    second = await claim_until_dry(b)
    assert {delivery.client_id for delivery in second} == set(CLIENTS)
    async with two_nodes[0].read_engine().connect() as conn:
        leased = sa.select(sa.func.count()).where(deliveries.c.lease_owner == "b")
        assert (await conn.execute(leased)).scalar_one() == len(CLIENTS)
