"""Many nodes as one service, as real node processes over PostgreSQL and RabbitMQ or Redis:
exactly-once delivery on every node, a node killed mid-stream, a broker link cut and healed."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import PUBLISHER, ServerProcess, bearer, new_client_id
from tests.helpers import fence, until
from tests.streams import Received, Stream, open_stream
from tests.tcp_proxy import TcpProxy
from tests.test_brokers import reachable, via

pytestmark = pytest.mark.timeout(60)

# -- three node processes --------------------------------------------------------------------


@dataclass
class Watch:
    """Everything one open stream received."""

    client_id: str
    node: int
    ids: list[int] = field(default_factory=list)
    named: list[Received] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class Nodes:
    """Node processes sharing one database and one broker topic, and streams open on them."""

    def __init__(self, tmp_path: Path, db: str, broker: str) -> None:
        self.tmp_path = tmp_path
        self.db = db
        self.broker = broker
        self.topic = f"mercurio-test-{uuid.uuid4().hex[:8]}"
        self.procs: list[ServerProcess] = []
        self.stack = contextlib.AsyncExitStack()
        self.http = httpx.AsyncClient(timeout=10)

    async def start(self, count: int, *, via_broker: dict[int, str] | None = None) -> None:
        for index in range(count):
            conn = (via_broker or {}).get(index, self.broker)
            self.procs.append(
                ServerProcess(
                    {
                        "MERCURIO_DB_CONN": self.db,
                        "MERCURIO_MQ": "on",
                        "MERCURIO_MQ_CONN": conn,
                        "MERCURIO_MQ_TOPIC": self.topic,
                        "MERCURIO_NID": f"node{index}",
                        "MERCURIO_SSE_HEARTBEAT": "1",
                        "MERCURIO_LOG_FORMAT": "json",
                        "MERCURIO_TEST_LOG": str(self.tmp_path / f"node{index}.log"),
                    }
                )
            )
        await asyncio.gather(*(asyncio.to_thread(proc.start) for proc in self.procs))

    def url(self, index: int) -> str:
        return self.procs[index].url

    def logs(self) -> str:
        return "\n".join(f"--- node{i}\n{p.tail()}" for i, p in enumerate(self.procs))

    async def close(self) -> None:
        await self.stack.aclose()
        await self.http.aclose()
        for proc in self.procs:
            proc.stop(signal.SIGKILL)

    async def watch(self, node: int, client_id: str, last_event_id: int | None = None) -> Watch:
        headers = bearer(client_id)
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        stream = await self.stack.enter_async_context(
            open_stream(
                self.http,
                f"{self.url(node)}/api/clients/{client_id}/notifications/stream",
                headers=headers,
            )
        )
        assert stream.status == 200, self.logs()
        watch = Watch(client_id, node)
        task = asyncio.create_task(_pump(stream, watch))
        self.stack.push_async_callback(_cancel, task)
        return watch

    async def unicast(self, node: int, client_id: str, **extra: Any) -> int:
        body = {"sourceID": "test", "destinationID": client_id, "data": {"to": client_id}}
        answer = await self.http.post(
            f"{self.url(node)}/api/events/unicast", json={**body, **extra}, headers=PUBLISHER
        )
        assert answer.status_code == 200, answer.text
        return int(answer.json()["notificationID"])

    async def broadcast(self, node: int, clients: list[str]) -> list[int]:
        answer = await self.http.post(
            f"{self.url(node)}/api/events/broadcast",
            json={"sourceID": "test", "destinations": clients, "data": "many"},
            headers=PUBLISHER,
        )
        assert answer.status_code == 200, answer.text
        return [int(item["notificationID"]) for item in answer.json()]

    async def announce(self, node: int) -> int:
        answer = await self.http.post(
            f"{self.url(node)}/api/events/announce",
            json={"sourceID": "test", "data": "everyone"},
            headers=PUBLISHER,
        )
        assert answer.status_code == 200, answer.text
        return int(answer.json()["notificationID"])


async def _pump(stream: Stream, watch: Watch) -> None:
    try:
        while (item := await stream.queue.get()) is not None:
            if item.event == "message":
                # httpx-sse keeps the last id on data-less blocks (a heartbeat): skip those.
                if item.data is not None:
                    watch.ids.append(int(item.id))
            else:
                watch.named.append(item)
    finally:
        watch.ended.set()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def fence_streams(
    nodes: Nodes, clients: list[str], expected: dict[str, set[int]], complete: Callable[[], bool]
) -> None:
    """A sentinel to every client, waited for until complete() holds again: streams deliver
    in id order, so whatever extra or repeated notification was still coming has come."""

    async def sentinels() -> None:
        for client in clients:
            expected[client].add(await nodes.unicast(0, client))

    await fence(sentinels, complete, 20)


def check_exactly_once(
    watches: list[Watch], expected: dict[str, set[int]], logs: Callable[[], str]
) -> None:
    for watch in watches:
        want = expected[watch.client_id]
        got = watch.ids
        assert len(got) == len(set(got)), f"{watch.client_id} got duplicates: {got}"
        assert got == sorted(got), f"{watch.client_id} got ids out of order: {got}"
        missing, extra = want - set(got), set(got) - want
        assert not missing and not extra, (
            f"{watch.client_id} on node{watch.node}: missing {sorted(missing)}, "
            f"unexpected {sorted(extra)}\n{logs()}"
        )


@pytest.fixture(params=["amqp", "redis"])
async def nodes(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path
) -> AsyncIterator[Nodes]:
    made = Nodes(tmp_path, postgres_url, await reachable(str(request.param)))
    try:
        yield made
    finally:
        await made.close()


@pytest.mark.timeout(60)
async def test_every_stream_on_every_node_gets_unicast_broadcast_announce_exactly_once(
    nodes: Nodes,
) -> None:
    await nodes.start(3)
    clients = [new_client_id() for _ in range(9)]
    muting = clients[2]
    muted = await nodes.http.put(
        f"{nodes.url(1)}/api/clients/{muting}/preferences",
        json={"mutedCategories": ["promo"]},
        headers=bearer(muting),
    )
    assert muted.status_code == 200, muted.text
    # Every client on one node; the first two also on a second node (another device).
    watches = [await nodes.watch(i % 3, client) for i, client in enumerate(clients)]
    watches += [await nodes.watch((i + 1) % 3, clients[i]) for i in (0, 1)]

    expected: dict[str, set[int]] = {client: set() for client in clients}
    for node in range(3):
        for client in clients:
            expected[client].add(await nodes.unicast(node, client))
        for client, nid in zip(clients[:5], await nodes.broadcast(node, clients[:5]), strict=True):
            expected[client].add(nid)
        announced = await nodes.announce(node)
        for client in clients:
            expected[client].add(announced)
        # Muted on node 1, published on every node: never shown to the muting client.
        await nodes.unicast(node, muting, category="promo")

    def complete() -> bool:
        return all(expected[w.client_id] <= set(w.ids) for w in watches)

    await until(complete, 20, lambda: f"not everything arrived\n{nodes.logs()}")
    await fence_streams(nodes, clients, expected, complete)
    check_exactly_once(watches, expected, nodes.logs)

    # Read state follows the client to every node it streams from.
    first = sorted(expected[clients[0]])[0]
    read = await nodes.http.put(
        f"{nodes.url(2)}/api/clients/{clients[0]}/notifications/{first}/read",
        headers=bearer(clients[0]),
    )
    assert read.status_code == 200, read.text
    streams_of_first = [w for w in watches if w.client_id == clients[0]]
    assert {w.node for w in streams_of_first} == {0, 1}

    def told() -> bool:
        return all(
            any(e.event == "read-state" and e.data["notificationID"] == first for e in w.named)
            for w in streams_of_first
        )

    await until(told, 10, lambda: f"read-state did not cross nodes\n{nodes.logs()}")


@pytest.mark.timeout(90)
async def test_clients_of_a_node_killed_mid_stream_resume_elsewhere_losing_nothing(
    nodes: Nodes,
) -> None:
    await nodes.start(3)
    clients = [new_client_id() for _ in range(9)]
    on_victim, elsewhere = clients[:6], clients[6:]
    # Ids below this one belong to earlier tests (announcements reach every client).
    baseline = await nodes.unicast(0, new_client_id())
    watches = [await nodes.watch(2, c) for c in on_victim]
    watches += [await nodes.watch(0, c) for c in elsewhere]

    expected: dict[str, set[int]] = {client: set() for client in clients}
    published = asyncio.Event()
    killed = asyncio.Event()

    async def publish() -> None:
        for i in range(150):
            node = i % 2  # node 2 is the victim: publishers talk to the survivors
            if i % 30 == 29:
                nid = await nodes.announce(node)
                for client in clients:
                    expected[client].add(nid)
            else:
                client = clients[i % len(clients)]
                expected[client].add(await nodes.unicast(node, client))
            if i == 50:
                published.set()
            await asyncio.sleep(0.005 if killed.is_set() else 0.01)

    publisher = asyncio.create_task(publish())
    await published.wait()
    nodes.procs[2].stop(signal.SIGKILL)
    killed.set()
    for watch in watches[:6]:
        await asyncio.wait_for(watch.ended.wait(), 10)
    resumed = [
        await nodes.watch(i % 2, w.client_id, last_event_id=max([baseline, *w.ids]))
        for i, w in enumerate(watches[:6])
    ]
    await publisher

    def complete() -> bool:
        before = {w.client_id: w for w in watches[:6]}
        ok = all(expected[w.client_id] <= set(w.ids) for w in watches[6:])
        return ok and all(
            expected[w.client_id] <= set(before[w.client_id].ids) | set(w.ids) for w in resumed
        )

    await until(complete, 20, lambda: f"clients lost notifications\n{nodes.logs()}")
    await fence_streams(nodes, clients, expected, complete)
    joined = [
        Watch(w.client_id, w.node, ids=before.ids + w.ids)
        for before, w in zip(watches[:6], resumed, strict=True)
    ]
    check_exactly_once(joined + watches[6:], expected, nodes.logs)


@pytest.mark.timeout(90)
async def test_broker_link_cut_and_restored_while_publishing_delivers_everything_once(
    nodes: Nodes,
) -> None:
    upstream = urlsplit(nodes.broker)
    proxy = await TcpProxy(upstream.hostname or "127.0.0.1", upstream.port or 0).start()
    try:
        await nodes.start(3, via_broker={2: via(nodes.broker, proxy.port)})
        clients = [new_client_id() for _ in range(9)]
        watches = [await nodes.watch(i % 3, c) for i, c in enumerate(clients)]
        watches.append(await nodes.watch(2, clients[0]))  # client 0 on both sides of the cut

        expected: dict[str, set[int]] = {client: set() for client in clients}
        rng = random.Random(4)
        stop = asyncio.Event()

        async def publish() -> None:
            for i in itertools.count():
                if stop.is_set():
                    return
                node = i % 3
                if i % 25 == 24:
                    nid = await nodes.announce(node)
                    for client in clients:
                        expected[client].add(nid)
                elif i % 10 == 9:
                    chosen = rng.sample(clients, 3)
                    for client, nid in zip(
                        chosen, await nodes.broadcast(node, chosen), strict=True
                    ):
                        expected[client].add(nid)
                else:
                    client = rng.choice(clients)
                    expected[client].add(await nodes.unicast(node, client))
                await asyncio.sleep(0.01)

        async def ready(node: int) -> int:
            return (await nodes.http.get(f"{nodes.url(node)}/readyz")).status_code

        def complete() -> bool:
            return all(expected[w.client_id] <= set(w.ids) for w in watches)

        async def cut() -> None:
            await proxy.cut()
            deadline = asyncio.get_running_loop().time() + 10
            while await ready(2) != 503:
                assert asyncio.get_running_loop().time() < deadline, "readyz missed the cut"
                await asyncio.sleep(0.05)
            down = (await nodes.http.get(f"{nodes.url(2)}/readyz")).json()
            assert "broker" in down.get("down", {}), down

        async def restore() -> None:
            await proxy.restore()
            deadline = asyncio.get_running_loop().time() + 20
            while await ready(2) != 200:
                assert asyncio.get_running_loop().time() < deadline, "no reconnect"
                await asyncio.sleep(0.05)

        # A hole in the ids heals as soon as any later doorbell reveals it; what only the
        # reconnect can heal is the tail, so each cut ends with a publish nothing follows.
        # Cut 1, publishing going on everywhere; the last word is node 0's: node 2 must read
        # the store when it reconnects.
        publisher = asyncio.create_task(publish())
        await asyncio.sleep(0.5)
        await cut()
        await asyncio.sleep(1.0)
        stop.set()
        await publisher
        expected[clients[2]].add(await nodes.unicast(0, clients[2]))  # streams on node 2
        await restore()
        await until(complete, 20, lambda: f"node 2 did not catch up\n{nodes.logs()}")

        # Cut 2: the last word is node 2's: it must tell the others how far it got.
        await cut()
        expected[clients[3]].add(await nodes.unicast(2, clients[3]))  # streams on node 0
        await restore()
        await until(complete, 20, lambda: f"the others did not catch up\n{nodes.logs()}")

        # And the link carries doorbells again, both ways.
        stop.clear()
        publisher = asyncio.create_task(publish())
        await asyncio.sleep(0.5)
        stop.set()
        await publisher
        await until(complete, 20, lambda: f"not everything arrived\n{nodes.logs()}")
        await fence_streams(nodes, clients, expected, complete)
        check_exactly_once(watches, expected, nodes.logs)
    finally:
        await proxy.close()
