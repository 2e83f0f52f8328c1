"""Many nodes as one service, in one process: two Clusters over the memory broker, the wire
format and the cluster's settings. Real node processes are in test_cluster_nodes.py, the
sequencer's own tests in test_sequencer.py."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

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
from tests.helpers import until

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
