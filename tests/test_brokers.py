"""One contract for every broker engine, run against the real servers (and the memory one)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import pytest
import structlog

from mercurio.brokers import Broker, create_broker
from mercurio.brokers.memory import memory_server
from mercurio.config import load_settings
from mercurio.errors import BrokerUnavailable, ConfigError
from tests.conftest import PG_ADMIN_URL, skip_or_fail
from tests.helpers import until
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(30)

AMQP_URL = os.environ.get("MERCURIO_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("MERCURIO_TEST_REDIS", "redis://127.0.0.1:6379/0")
URLS = {"amqp": AMQP_URL, "redis": REDIS_URL, "postgres": PG_ADMIN_URL}
ENGINES = ["memory", *URLS]


async def reachable(engine: str) -> str:
    """The engine's URL, or skip (fail on CI) when its server does not answer."""
    if engine == "memory":
        return f"memory://{uuid.uuid4().hex[:8]}"
    url = URLS[engine]
    parts = urlsplit(url)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), 3)
        writer.close()
        await writer.wait_closed()
    except (OSError, TimeoutError) as exc:
        skip_or_fail(f"{engine} server is not reachable at {parts.hostname}:{parts.port}: {exc}")
    return url


def via(url: str, port: int) -> str:
    """url with its port replaced (to go through a proxy)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Inbox:
    """What one broker received, awaited with a timeout."""

    queue: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)

    def __call__(self, body: bytes) -> None:
        self.queue.put_nowait(body)

    async def take(self, count: int, timeout: float = 10) -> list[bytes]:
        return [await asyncio.wait_for(self.queue.get(), timeout) for _ in range(count)]

    async def quiet(self, seconds: float = 0.3) -> list[bytes]:
        """Whatever else arrives within `seconds`."""
        await asyncio.sleep(seconds)
        out = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out


class Brokers:
    """Starts brokers of one engine on one fresh topic; all are closed after the test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.topic = f"mercurio-test-{uuid.uuid4().hex[:8]}"
        self.started: list[Broker] = []

    async def make(
        self, node_id: str, *, conn: str | None = None, topic: str | None = None
    ) -> tuple[Broker, Inbox]:
        broker = create_broker(
            conn or self.url,
            topic=topic or self.topic,
            routing_key="notifications",
            node_id=node_id,
            reconnect_first=0.05,
            reconnect_cap=0.5,
        )
        self.started.append(broker)
        inbox = Inbox()
        await broker.start(inbox, wait=10)
        assert broker.connected
        return broker, inbox


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def brokers(engine: str) -> AsyncIterator[Brokers]:
    made = Brokers(await reachable(engine))
    yield made
    for broker in made.started:
        await broker.close()


async def test_publish_reaches_every_node_in_order_the_sender_included(brokers: Brokers) -> None:
    a, inbox_a = await brokers.make("a")
    _, inbox_b = await brokers.make("b")
    sent = [b"message %d" % i for i in range(200)]
    for body in sent:
        await a.publish(body)
    assert await inbox_a.take(200) == sent
    assert await inbox_b.take(200) == sent
    assert await inbox_b.quiet() == []


async def test_topics_do_not_mix(brokers: Brokers) -> None:
    a, _ = await brokers.make("a")
    _, elsewhere = await brokers.make("b", topic=f"mercurio-test-{uuid.uuid4().hex[:8]}")
    await a.publish(b"only for a's topic")
    assert await elsewhere.quiet(0.5) == []


async def test_close_is_idempotent_and_publish_after_close_is_refused(brokers: Brokers) -> None:
    a, _ = await brokers.make("a")
    await a.close()
    await a.close()
    assert not a.connected
    with pytest.raises(BrokerUnavailable):
        await a.publish(b"too late")


async def test_cut_link_is_noticed_refused_and_healed_with_on_reconnect(
    brokers: Brokers, engine: str
) -> None:
    """The broker goes away under one node: it says so, refuses to publish, comes back."""
    proxy: TcpProxy | None = None
    conn: str | None = None
    if engine == "memory":
        conn = f"memory://{uuid.uuid4().hex[:8]}"
    else:
        upstream = urlsplit(brokers.url)
        proxy = await TcpProxy(upstream.hostname or "127.0.0.1", upstream.port or 0).start()
        conn = via(brokers.url, proxy.port)
    try:
        a, inbox_a = await brokers.make("a", conn=conn)
        b, inbox_b = await brokers.make("b", conn=conn if engine == "memory" else None)
        reconnects: list[bool] = []
        a.on_reconnect = lambda: reconnects.append(True)

        if proxy is not None:
            await proxy.cut()
        else:
            memory_server(conn).down()
        await until(lambda: not a.connected, what="a to notice the cut")
        with pytest.raises(BrokerUnavailable):
            await a.publish(b"lost")
        if proxy is not None:
            await proxy.restore()
        else:
            memory_server(conn).up()
        await until(lambda: a.connected, what="a to reconnect")
        assert reconnects == [True]
        if engine == "memory":
            await until(lambda: b.connected)

        await b.publish(b"after")
        assert await inbox_a.take(1) == [b"after"]
        await a.publish(b"back")
        got = await inbox_b.take(2)
        assert got == [b"after", b"back"]
    finally:
        if proxy is not None:
            await proxy.close()


async def test_unknown_scheme_is_refused_naming_the_supported_ones() -> None:
    with pytest.raises(ConfigError) as error:
        create_broker("kafka://user:hunter2@127.0.0.1/", topic="t")
    message = str(error.value)
    assert message.startswith("MERCURIO_MQ_CONN:")
    assert "amqp://" in message and "redis://" in message and "postgresql://" in message
    assert "hunter2" not in message
    # Start-up asks the same registry, so the setting is refused with the very same words.
    with pytest.raises(ConfigError) as at_start:
        load_settings(
            {
                "MERCURIO_MQ": "on",
                "MERCURIO_MQ_CONN": "kafka://user:hunter2@127.0.0.1/",
                "MERCURIO_DB_CONN": "postgresql://postgres@127.0.0.1/test",
            }
        )
    assert message in str(at_start.value)


@pytest.mark.parametrize(
    "url",
    [
        "amqp://guest:hunter2@127.0.0.1:1/",
        "redis://:hunter2@127.0.0.1:1/0",
        "postgresql://postgres:hunter2@127.0.0.1:1/test",
    ],
)
async def test_connection_url_is_logged_redacted(url: str) -> None:
    broker = create_broker(url, topic="t", reconnect_first=0.05, reconnect_cap=0.1)
    with structlog.testing.capture_logs() as logs:
        await broker.start(lambda body: None, wait=0.3)
        await broker.close()
    failures = [entry for entry in logs if entry["event"] == "broker.connect_failed"]
    assert failures
    assert all("hunter2" not in str(entry) for entry in logs)
    assert "***" in failures[0]["url"]
