"""Many nodes as one service: two Clusters in one process over the memory broker, then three
real node processes over PostgreSQL and RabbitMQ or Redis, with a node killed and a broker link
cut. The sequencer's own tests are in test_sequencer.py."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import structlog

from mercurio.cluster import Cluster
from mercurio.config import load_settings
from mercurio.errors import ConfigError
from mercurio.hub import Hub
from mercurio.model import Notification
from mercurio.stream import Subscription
from mercurio.wire import decode_notes, encode_notes
from tests.conftest import PUBLISHER, ServerProcess, bearer, new_client_id
from tests.helpers import fence, until
from tests.streams import Received, Stream, open_stream
from tests.tcp_proxy import TcpProxy
from tests.test_brokers import reachable, via

pytestmark = pytest.mark.timeout(60)

# -- two Clusters in one process, over the memory broker -------------------------------------


def note(nid: int, client: str = "c") -> Notification:
    return Notification(nid, f"e{nid}", "s", client, "general", "{}", datetime.now(UTC))


class FakeStore:
    """What a Cluster reads from the store: the ledger of notes, the last id, muted sets."""

    def __init__(self) -> None:
        self.notes: list[Notification] = []

    async def last_id(self) -> int:
        return self.notes[-1].id if self.notes else 0

    async def committed_after(self, after: int, *, limit: int) -> list[Notification]:
        return [n for n in self.notes if n.id > after][:limit]

    async def muted_categories(self, client_id: str) -> frozenset[str]:
        return frozenset()


@dataclass
class Pair:
    """Two Clusters on one memory:// broker: a sender, and a receiver with one stream open."""

    store: FakeStore
    sender: Cluster
    receiver: Cluster
    stream: Subscription
    sent: list[bytes] = field(default_factory=list)
    """Every body the sender handed to its broker."""

    def received(self) -> list[int]:
        return [nid for nid, _ in self.stream.buffer]

    def commit(self, *notes: Notification) -> None:
        """As the sender's store would: into the ledger, then to the sender's Cluster."""
        self.store.notes.extend(notes)
        self.sender.committed(list(notes))


@contextlib.asynccontextmanager
async def two_clusters(max_message_bytes: int | None = None) -> AsyncIterator[Pair]:
    env = {"MERCURIO_MQ": "on", "MERCURIO_MQ_CONN": f"memory://pair-{uuid.uuid4().hex}"}
    store, receiver_hub = FakeStore(), Hub()
    stream = Subscription("c", limit=100)
    receiver_hub.register(stream)
    sender = Cluster(load_settings({**env, "MERCURIO_NID": "a"}), Hub(), beacon=0.05)
    receiver = Cluster(load_settings({**env, "MERCURIO_NID": "b"}), receiver_hub, beacon=0.05)
    pair = Pair(store, sender, receiver, stream)
    for cluster in (sender, receiver):
        cluster.broker.max_message_bytes = max_message_bytes
    publish = sender.broker.publish

    async def recorded(body: bytes) -> None:
        pair.sent.append(body)
        await publish(body)

    sender.broker.publish = recorded  # type: ignore[method-assign]
    await sender.start(store)
    await receiver.start(store)
    try:
        # Once the receiver's start-up read of the store is over, only messages bring news.
        await until(lambda: receiver.sequencer.fetches >= 1, what="the start-up read")
        yield pair
    finally:
        await sender.close(flush=0)
        await receiver.close(flush=0)


async def test_a_doorbell_the_broker_lost_is_healed_by_the_beacon_in_a_quiet_period() -> None:
    async with two_clusters() as pair:
        recorded = pair.sender.broker.publish
        lost: list[bytes] = []

        async def lossy(body: bytes) -> None:
            if b'"k":"n"' in body and not lost:
                lost.append(body)  # the broker drops it, and the link stays up
                return
            await recorded(body)

        pair.sender.broker.publish = lossy  # type: ignore[method-assign]
        pair.commit(note(1))
        await until(lambda: bool(pair.stream.buffer), what="the beacon to heal the lost doorbell")
        assert lost, "the doorbell was never sent"
        assert pair.received() == [1]


async def test_a_message_the_broker_refuses_does_not_stop_the_cluster_from_publishing() -> None:
    # An engine's own refusal (PostgreSQL's NOTIFY limit raises ValueError) once ended the
    # sending task for good: that node rang nobody again until it restarted.
    async with two_clusters() as pair:
        recorded = pair.sender.broker.publish
        refused: list[bytes] = []

        async def refusing(body: bytes) -> None:
            if b'"k":"n"' in body and not refused:
                refused.append(body)
                raise ValueError("payload string too long")
            await recorded(body)

        pair.sender.broker.publish = refusing  # type: ignore[method-assign]
        with structlog.testing.capture_logs() as logs:
            pair.commit(note(1))
            await until(lambda: pair.received() == [1], what="note 1, healed from the store")
        assert refused, "the refused doorbell was never sent"
        assert any(entry["event"] == "cluster.publish_refused" for entry in logs)
        pair.commit(note(2))
        await until(lambda: pair.received() == [1, 2], what="note 2 after the refusal")
        assert any(b'"k":"n"' in body and b'"e2"' in body for body in pair.sent)


def big_note(nid: int, size: int) -> Notification:
    data = orjson.dumps({"text": "x" * size}).decode()
    return Notification(nid, f"e{nid}", "s", "c", "general", data, datetime.now(UTC))


async def test_messages_over_the_brokers_limit_are_split_or_sent_as_a_head() -> None:
    limit = 600
    async with two_clusters(max_message_bytes=limit) as pair:
        pair.commit(*(big_note(nid, 100) for nid in range(1, 9)))  # together over the limit
        pair.commit(big_note(9, 2 * limit))  # over the limit on its own
        pair.commit(note(10), note(11))
        await until(
            lambda: pair.received() == list(range(1, 12)),
            what=lambda: f"1..11 in order on the receiver, got {pair.received()}",
        )
        messages = [orjson.loads(body) for body in pair.sent]
        assert all(len(body) <= limit for body in pair.sent), [len(b) for b in pair.sent]
        carried = [row[0] for m in messages if m["k"] == "n" for row in m["b"]]
        assert carried == [1, 2, 3, 4, 5, 6, 7, 8, 10, 11]
        assert len([m for m in messages if m["k"] == "n" and m["b"][0][0] < 9]) >= 2
        assert {"n": "a", "k": "h", "i": 9} in messages
        assert pair.receiver.sequencer.fetched >= 1  # 9 came from the store
        assert pair.sender.publish_failures == 0


async def test_a_control_over_the_brokers_limit_is_logged_not_sent() -> None:
    async with two_clusters(max_message_bytes=600) as pair:
        with structlog.testing.capture_logs() as logs:
            pair.sender.read_state("c", b"event: read-state\ndata: " + b"x" * 700 + b"\n\n")
            pair.sender.muted("c", frozenset({"promo"}))
        refused = [entry for entry in logs if entry["event"] == "cluster.control_too_large"]
        assert refused == [
            {
                "event": "cluster.control_too_large",
                "log_level": "error",
                "kind": "read_state",
                "client_id": "c",
                "size": refused[0]["size"],
                "limit": 600,
            }
        ]
        assert refused[0]["size"] > 600
        await until(lambda: any(b'"k":"m"' in body for body in pair.sent), what="the mute sent")
        assert not any(b'"k":"r"' in body for body in pair.sent)


async def test_notifications_survive_the_wire_format() -> None:
    sent = [
        Notification(7, "ev", "src", "u1", "promo", '{"a":[1,"é"]}', datetime.now(UTC)),
        Notification(8, "ev", "src", "*", "general", '"text"', datetime(2001, 2, 3, tzinfo=UTC)),
    ]
    message = orjson.loads(encode_notes("n1", sent))
    assert message["n"] == "n1"
    assert decode_notes(message["b"]) == sent


# -- configuration ---------------------------------------------------------------------------


def test_sqlite_with_a_broker_is_refused_with_what_to_use_instead() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(
            {
                "MERCURIO_ENV": "test",
                "MERCURIO_MQ": "on",
                "MERCURIO_MQ_CONN": "amqp://guest:guest@127.0.0.1/",
                "MERCURIO_DB_CONN": "sqlite:///mercurio.db",
            }
        )
    assert str(error.value) == (
        "MERCURIO_DB_CONN: SQLite cannot be shared between nodes; "
        "use postgresql://… with MERCURIO_MQ=on"
    )


def test_unknown_broker_scheme_is_refused_naming_the_supported_ones() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(
            {
                "MERCURIO_ENV": "test",
                "MERCURIO_MQ": "on",
                "MERCURIO_MQ_CONN": "nats://user:hunter2@127.0.0.1/",
                "MERCURIO_DB_CONN": "postgresql://postgres@127.0.0.1/test",
            }
        )
    message = str(error.value)
    assert message.startswith("MERCURIO_MQ_CONN: unsupported scheme 'nats'")
    assert "amqp://" in message and "redis://" in message and "hunter2" not in message


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
