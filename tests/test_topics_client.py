"""The topic calls of the Python client (sync and async) and `mercurio send --topic`, against
a real server."""

from __future__ import annotations

import uuid

import pytest

from mercurio.client import AsyncMercurio, Mercurio, MercurioError
from tests.conftest import ServerProcess, make_token, new_client_id
from tests.test_cli_client import run_cli

pytestmark = pytest.mark.timeout(60)


def new_topic() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def test_sync_client_subscribes_lists_publishes_and_unsubscribes(server: ServerProcess) -> None:
    topic, fan = new_topic(), new_client_id()
    with (
        Mercurio(server.url, make_token(fan)) as me,
        Mercurio(server.url, make_token("666", publisher=True)) as publisher,
    ):
        me.subscribe_topic(topic)
        assert me.topics() == [topic]
        assert publisher.topic_subscribers(topic) == 1
        sent = publisher.publish_topic(topic, {"title": "hi"}, category="news", source_id="t")
        page = me.list_notifications()
        assert [n.notification_id for n in page.notifications] == [sent.notification_id]
        assert page.notifications[0].topic == topic
        assert page.notifications[0].category == "news"
        me.unsubscribe_topic(topic)
        assert me.topics() == []
        with pytest.raises(MercurioError) as refused:
            me.unsubscribe_topic(topic)
        assert refused.value.status == 404
        # A publisher subscribes on a client's behalf.
        publisher.subscribe_topic(topic, client_id=fan)
        assert me.topics() == [topic]


async def test_async_client_topic_calls(server: ServerProcess) -> None:
    topic, fan = new_topic(), new_client_id()
    async with (
        AsyncMercurio(server.url, make_token(fan)) as me,
        AsyncMercurio(server.url, make_token("666", publisher=True)) as publisher,
    ):
        await me.subscribe_topic(topic)
        assert await me.topics() == [topic]
        sent = await publisher.publish_topic(topic, "hello", event_id="same", source_id="t")
        again = await publisher.publish_topic(topic, "hello", event_id="same", source_id="t")
        assert again.notification_id == sent.notification_id
        assert await publisher.topic_subscribers(topic) == 1
        page = await me.list_notifications()
        assert [n.topic for n in page.notifications] == [topic]
        await me.unsubscribe_topic(topic)
        assert await publisher.topic_subscribers(topic) == 0


def test_send_topic_from_the_terminal(server: ServerProcess) -> None:
    topic, fan = new_topic(), new_client_id()
    with Mercurio(server.url, make_token(fan)) as me:
        me.subscribe_topic(topic)
        done = run_cli("send", "--topic", topic, "--url", server.url, "from the terminal")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("sent #") and f"to topic {topic}" in done.stdout
        notes = me.list_notifications().notifications
        assert [(n.data, n.topic) for n in notes] == [("from the terminal", topic)]

    both = run_cli("send", "--topic", topic, "--all", "--url", server.url, "x")
    assert both.returncode == 2 and "one of them" in both.stderr
    bad = run_cli("send", "--topic", "Not A Slug", "--url", server.url, "x")
    assert bad.returncode != 0 and "topic" in bad.stderr
