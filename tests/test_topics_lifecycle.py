"""Topics meet the rest of the inbox life cycle (issue 13): a scheduled topic publish, a
retracted topic notification on a subscriber's open stream, and the inbox cap, which is one
client's and must leave a topic's shared rows alone. SQLite and PostgreSQL, real servers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PUBLISHER, ServerProcess, bearer, new_client_id, postgres_database
from tests.streams import open_stream
from tests.test_retention import prune

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_conn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/mercurio.db"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
def server(db_conn: str, tmp_path: Path) -> Iterator[ServerProcess]:
    env = {"MERCURIO_DB_CONN": db_conn, "MERCURIO_SSE_HEARTBEAT": "1", "MERCURIO_INBOX_MAX": "2"}
    proc = ServerProcess.in_folder(tmp_path, env).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


async def follower(api: httpx.AsyncClient) -> tuple[str, str]:
    topic, fan = f"t-{uuid.uuid4().hex[:10]}", new_client_id()
    answer = await api.put(f"/api/clients/{fan}/topics/{topic}", headers=bearer(fan))
    assert answer.status_code == 200, answer.text
    return topic, fan


async def publish_topic(api: httpx.AsyncClient, topic: str, **extra: Any) -> httpx.Response:
    body = {"topic": topic, "sourceID": "tests", "data": "news", **extra}
    return await api.post("/api/events/topic", json=body, headers=PUBLISHER)


async def listed(api: httpx.AsyncClient, user: str) -> list[int]:
    answer = await api.get(f"/api/clients/{user}/notifications", headers=bearer(user))
    assert answer.status_code == 200, answer.text
    return [n["notificationID"] for n in answer.json()["notifications"]]


async def test_a_scheduled_topic_notification_reaches_its_followers_when_due(
    api: httpx.AsyncClient,
) -> None:
    topic, fan = await follower(api)
    async with open_stream(
        api, f"/api/clients/{fan}/notifications/stream", headers=bearer(fan)
    ) as stream:
        answer = await publish_topic(api, topic, delay=1)
        assert answer.status_code == 202, answer.text
        assert answer.json()["notificationID"] is None
        assert await listed(api, fan) == []
        frame = await stream.next_message(timeout=15)
        assert frame.data["topic"] == topic
    assert await listed(api, fan) == [frame.data["notificationID"]]


async def test_a_retracted_topic_notification_is_deleted_on_a_followers_open_stream(
    api: httpx.AsyncClient,
) -> None:
    """The read-state went to the hub under the topic's row key "#<topic>", where no stream
    is: the follower's open stream kept showing what its list no longer had."""
    topic, fan = await follower(api)
    async with open_stream(
        api, f"/api/clients/{fan}/notifications/stream", headers=bearer(fan)
    ) as stream:
        answer = await publish_topic(api, topic, id="topic-retract-1")
        assert answer.status_code == 200, answer.text
        nid = answer.json()["notificationID"]
        assert (await stream.next_message()).data["notificationID"] == nid
        gone = await api.delete("/api/events/topic-retract-1", headers=PUBLISHER)
        assert gone.status_code == 200, gone.text
        event = await stream.next()
        while event.event != "read-state":
            event = await stream.next()
        assert event.data["notificationID"] == nid and event.data["status"] == "deleted"
    assert await listed(api, fan) == []


async def test_the_inbox_cap_leaves_a_topics_shared_rows_alone(
    api: httpx.AsyncClient, db_conn: str
) -> None:
    """MERCURIO_INBOX_MAX is one client's inbox; a topic's rows are stored under "#<topic>",
    and were trimmed as if that were a client, out of every follower's list."""
    topic, fan = await follower(api)
    sent = []
    for _ in range(4):
        answer = await publish_topic(api, topic)
        assert answer.status_code == 200, answer.text
        sent.append(answer.json()["notificationID"])
    counts = prune(db_conn, MERCURIO_INBOX_MAX="2")
    assert counts["notifications over the inbox max"] == 0, counts
    assert await listed(api, fan) == sent[::-1]
