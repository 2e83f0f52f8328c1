"""A cluster that needs only PostgreSQL: the LISTEN/NOTIFY engine on its own, then two real
node processes whose database is also their broker (MERCURIO_MQ_CONN=postgresql://…)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mercurio.brokers import create_broker
from mercurio.brokers.postgres import CHANNEL_BYTES, PostgresBroker, channel_name
from mercurio.config import load_settings
from mercurio.errors import ConfigError
from tests.conftest import new_client_id
from tests.helpers import until
from tests.tcp_proxy import TcpProxy
from tests.test_brokers import Brokers, reachable, via
from tests.test_cluster_nodes import Nodes, Watch, check_exactly_once

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def brokers() -> AsyncIterator[Brokers]:
    made = Brokers(await reachable("postgres"))
    yield made
    for broker in made.started:
        await broker.close()


# -- the engine ------------------------------------------------------------------------------


def test_channel_names_stay_readable_short_and_apart() -> None:
    assert channel_name("mercurio", "notifications") == "mercurio.notifications"
    long_a, long_b = "t" * 80 + "a", "t" * 80 + "b"
    for topic in (long_a, long_b, 'a "quoted" Topic; DROP TABLE x', "é" * 40):
        name = channel_name(topic, "notifications")
        assert len(name.encode()) <= CHANNEL_BYTES
        assert name.isascii()
    assert channel_name(long_a, "k") != channel_name(long_b, "k")
    assert channel_name("a b", "k") != channel_name("a_b", "k")


async def test_a_topic_needing_quotes_and_past_the_identifier_limit_still_fans_out(
    brokers: Brokers,
) -> None:
    topic = 'Mercurio "Prod"; ' + "x" * 80
    a, inbox_a = await brokers.make("a", topic=topic)
    _, inbox_b = await brokers.make("b", topic=topic)
    await a.publish(b"hello")
    assert await inbox_a.take(1) == [b"hello"]
    assert await inbox_b.take(1) == [b"hello"]


async def test_routing_keys_do_not_mix(brokers: Brokers) -> None:
    a, inbox_a = await brokers.make("a")
    other = create_broker(brokers.url, topic=brokers.topic, routing_key="elsewhere", node_id="o")
    brokers.started.append(other)
    heard: list[bytes] = []
    await other.start(heard.append, wait=10)
    await a.publish(b"for notifications only")
    # Every listener reads one queue in commit order: a message committed later is a fence.
    await other.publish(b"own")
    await until(lambda: bool(heard), what="the other routing key's own message")
    assert heard == [b"own"]
    assert await inbox_a.take(1) == [b"for notifications only"]


async def test_payload_up_to_the_limit_passes_and_past_it_is_refused_clearly(
    brokers: Brokers,
) -> None:
    a, _ = await brokers.make("a")
    _, inbox_b = await brokers.make("b")
    assert isinstance(a, PostgresBroker) and a.max_message_bytes == 7999
    largest = b"[" + b"7" * 7997 + b"]"
    await a.publish(largest)
    with pytest.raises(ValueError, match="at most 7999 bytes"):
        await a.publish(largest + b" ")
    with pytest.raises(ValueError, match="carries text"):
        await a.publish(b"\xff\xfe")
    assert a.connected  # a refused message is not a broken link
    await a.publish(b"after")
    assert await inbox_b.take(2) == [largest, b"after"]


def test_a_cluster_on_postgresql_alone_is_accepted_and_sqlite_still_refused() -> None:
    for scheme in ("postgresql", "postgres"):
        settings = load_settings(
            {
                "MERCURIO_ENV": "test",
                "MERCURIO_MQ": "on",
                "MERCURIO_MQ_CONN": f"{scheme}://postgres@127.0.0.1/test",
                "MERCURIO_DB_CONN": "postgresql://postgres@127.0.0.1/test",
            }
        )
        assert settings.mq
    with pytest.raises(ConfigError, match="SQLite cannot be shared"):
        load_settings(
            {
                "MERCURIO_ENV": "test",
                "MERCURIO_MQ": "on",
                "MERCURIO_MQ_CONN": "postgresql://postgres@127.0.0.1/test",
                "MERCURIO_DB_CONN": "sqlite:///mercurio.db",
            }
        )


async def test_a_link_that_goes_silent_without_closing_is_noticed_and_replaced(
    brokers: Brokers,
) -> None:
    upstream = urlsplit(brokers.url)
    proxy = await TcpProxy(upstream.hostname or "127.0.0.1", upstream.port or 0).start()
    try:
        a = create_broker(
            via(brokers.url, proxy.port),
            topic=brokers.topic,
            keepalive=0.3,
            reconnect_first=0.05,
            reconnect_cap=0.2,
        )
        brokers.started.append(a)
        heard: list[bytes] = []
        await a.start(heard.append, wait=10)
        # No FIN, no RST: the proxy just stops moving bytes, like a dead NAT entry.
        for writer in list(proxy._writers):
            writer.transport.pause_reading()
        await until(lambda: not a.connected, what="the keepalive to notice the silence")
        await until(lambda: a.connected, what="a new connection")
        await a.publish(b"over the new link")
        await until(lambda: heard == [b"over the new link"], what="the message")
    finally:
        await proxy.close()


# -- two node processes ----------------------------------------------------------------------


@pytest.fixture
async def nodes(postgres_url: str, tmp_path: Path) -> AsyncIterator[Nodes]:
    # The database the nodes store in is their broker too.
    made = Nodes(tmp_path, postgres_url, postgres_url)
    try:
        yield made
    finally:
        await made.close()


def got_all(watches: list[Watch], expected: dict[str, set[int]]) -> bool:
    return all(expected[w.client_id] <= set(w.ids) for w in watches)


async def test_unicast_on_one_node_reaches_a_stream_on_the_other(nodes: Nodes) -> None:
    # Node 1 spells the scheme postgres://: both spellings meet on one channel.
    await nodes.start(2, via_broker={1: nodes.db.replace("postgresql://", "postgres://", 1)})
    client = new_client_id()
    watch = await nodes.watch(1, client)
    sent = [await nodes.unicast(0, client) for _ in range(5)]
    await until(lambda: watch.ids == sent, 20, lambda: f"got {watch.ids}\n{nodes.logs()}")


async def test_a_broadcast_too_big_for_one_notify_still_reaches_the_other_node(
    nodes: Nodes,
) -> None:
    await nodes.start(2)
    clients = [new_client_id() for _ in range(200)]
    watched = clients[::40]
    watches = [await nodes.watch(1, client) for client in watched]
    ids = dict(zip(clients, await nodes.broadcast(0, clients), strict=True))
    expected = {client: {ids[client]} for client in watched}
    await until(lambda: got_all(watches, expected), 20, lambda: f"lost\n{nodes.logs()}")
    # And the link still carries doorbells after the big one.
    after = await nodes.unicast(0, watched[0])
    expected[watched[0]].add(after)
    await until(lambda: got_all(watches, expected), 20, lambda: f"stalled\n{nodes.logs()}")
    check_exactly_once(watches, expected, nodes.logs)


@pytest.mark.timeout(90)
async def test_a_node_killed_mid_stream_loses_nothing_for_clients_resuming_on_the_other(
    nodes: Nodes,
) -> None:
    await nodes.start(2)
    clients = [new_client_id() for _ in range(6)]
    on_victim, on_survivor = clients[:4], clients[4:]
    baseline = await nodes.unicast(1, new_client_id())
    before = [await nodes.watch(0, client) for client in on_victim]
    staying = [await nodes.watch(1, client) for client in on_survivor]
    expected: dict[str, set[int]] = {client: set() for client in clients}
    halfway = asyncio.Event()

    async def publish() -> None:
        for i in range(120):
            client = clients[i % len(clients)]
            expected[client].add(await nodes.unicast(1, client))
            if i == 40:
                halfway.set()
            await asyncio.sleep(0.005)

    publisher = asyncio.create_task(publish())
    await halfway.wait()
    nodes.procs[0].stop(signal.SIGKILL)
    for watch in before:
        await asyncio.wait_for(watch.ended.wait(), 10)
    resumed = [
        await nodes.watch(1, w.client_id, last_event_id=max([baseline, *w.ids])) for w in before
    ]
    await publisher
    # Every stream is in id order, so one last unicast each is a fence for what came before.
    for watch in [*resumed, *staying]:
        expected[watch.client_id].add(await nodes.unicast(1, watch.client_id))
    await until(
        lambda: (
            got_all(resumed, {c: {max(expected[c])} for c in on_victim})
            and got_all(staying, expected)
        ),
        20,
        lambda: f"clients lost notifications\n{nodes.logs()}",
    )
    joined = [
        Watch(w.client_id, 1, ids=old.ids + w.ids) for old, w in zip(before, resumed, strict=True)
    ]
    check_exactly_once(joined + staying, expected, nodes.logs)
