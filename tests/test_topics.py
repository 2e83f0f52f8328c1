"""Topics (issue 13, item 1) against a real server, on SQLite and PostgreSQL: who gets a topic
notification (live, listed, counted), one stored row for any number of subscribers,
unsubscribe keeps history, a late subscriber sees nothing older, resume replays them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from mercurio.urls import database_url
from tests.conftest import PUBLISHER, ServerProcess, bearer, new_client_id, postgres_database
from tests.helpers import fence, until
from tests.streams import Stream, open_stream

pytestmark = pytest.mark.timeout(120)


class Backend:
    """A server and the database it stores in (read directly to count rows)."""

    def __init__(self, server: ServerProcess, db_conn: str) -> None:
        self.server = server
        self.db_conn = db_conn

    async def scalar(self, sql: str, **values: Any) -> Any:
        engine = create_async_engine(database_url(self.db_conn))
        try:
            async with engine.connect() as conn:
                return (await conn.execute(sa.text(sql), values)).scalar()
        finally:
            await engine.dispose()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    folder = tmp_path_factory.mktemp(f"topics-{request.param}")
    env = {"MERCURIO_SSE_HEARTBEAT": "1"}
    if request.param == "sqlite":
        server = ServerProcess.in_folder(folder, env).start()
        try:
            yield Backend(server, f"sqlite:///{folder}/mercurio.db")
        finally:
            server.stop()
        return
    with postgres_database() as url:
        server = ServerProcess.in_folder(folder, {**env, "MERCURIO_DB_CONN": url}).start()
        try:
            yield Backend(server, url)
        finally:
            server.stop()


@pytest.fixture
async def api(backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    # Idle connections expire before the server's 5 s keep-alive closes them under us.
    limits = httpx.Limits(max_connections=16, keepalive_expiry=2)
    async with httpx.AsyncClient(base_url=backend.server.url, timeout=30, limits=limits) as client:
        yield client


def new_topic() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


async def subscribe(
    api: httpx.AsyncClient, user: str, topic: str, headers: dict[str, str] | None = None
) -> None:
    answer = await api.put(f"/api/clients/{user}/topics/{topic}", headers=headers or bearer(user))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"clientID": user, "topic": topic, "status": "subscribed"}


async def unsubscribe(api: httpx.AsyncClient, user: str, topic: str) -> httpx.Response:
    return await api.delete(f"/api/clients/{user}/topics/{topic}", headers=bearer(user))


async def publish_topic(
    api: httpx.AsyncClient, topic: str, data: Any = "news", **extra: Any
) -> int:
    body = {"topic": topic, "sourceID": "tests", "data": data, **extra}
    answer = await api.post("/api/events/topic", json=body, headers=PUBLISHER)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"notificationID", "eventID"}
    return int(answer.json()["notificationID"])


async def unicast(api: httpx.AsyncClient, user: str, data: str = "own") -> int:
    body = {"destinationID": user, "sourceID": "tests", "data": data}
    answer = await api.post("/api/events/unicast", json=body, headers=PUBLISHER)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["notificationID"])


async def listed(api: httpx.AsyncClient, user: str) -> tuple[list[int], int]:
    """The ids in the user's list (newest first) and its unread count."""
    answer = await api.get(
        f"/api/clients/{user}/notifications", params={"limit": "500"}, headers=bearer(user)
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return [n["notificationID"] for n in body["notifications"]], body["unreadCount"]


def stream_url(user: str) -> str:
    return f"/api/clients/{user}/notifications/stream"


async def next_ids(stream: Stream, count: int) -> list[int]:
    return [int(m.data["notificationID"]) for m in await stream.messages(count)]


async def test_subscribers_get_it_live_and_listed_and_others_do_not(
    api: httpx.AsyncClient,
) -> None:
    topic = new_topic()
    live_fan, offline_fan, outsider = new_client_id(), new_client_id(), new_client_id()
    await subscribe(api, live_fan, topic)
    await subscribe(api, offline_fan, topic, headers=PUBLISHER)  # a publisher, on its behalf
    async with (
        open_stream(api, stream_url(live_fan), headers=bearer(live_fan)) as fan_stream,
        open_stream(api, stream_url(outsider), headers=bearer(outsider)) as outsider_stream,
    ):
        nid = await publish_topic(api, topic, {"title": "hello"})
        frame = (await fan_stream.messages(1))[0]
        assert frame.data["notificationID"] == nid
        assert frame.data["clientID"] == live_fan
        assert frame.data["topic"] == topic
        assert frame.data["data"] == {"title": "hello"}
        # The outsider's stream: its own unicast comes first, so the topic one never came.
        own = await unicast(api, outsider)
        assert await next_ids(outsider_stream, 1) == [own]

    for fan in (live_fan, offline_fan):
        assert await listed(api, fan) == ([nid], 1)
        one = await api.get(f"/api/clients/{fan}/notifications/{nid}", headers=bearer(fan))
        assert one.status_code == 200 and one.json()["topic"] == topic
    assert await listed(api, outsider) == ([own], 1)
    hidden = await api.get(f"/api/clients/{outsider}/notifications/{nid}", headers=bearer(outsider))
    assert hidden.status_code == 404
    count = await api.get(f"/api/topics/{topic}", headers=PUBLISHER)
    assert count.json() == {"topic": topic, "subscribers": 2}
    mine = await api.get(f"/api/clients/{live_fan}/topics", headers=bearer(live_fan))
    assert mine.json() == {"clientID": live_fan, "topics": [topic]}


async def test_a_thousand_subscribers_are_one_row_and_no_state_until_one_acts(
    api: httpx.AsyncClient, backend: Backend
) -> None:
    topic = new_topic()
    fans = [new_client_id() for _ in range(1000)]
    gate = asyncio.Semaphore(16)

    async def join(fan: str) -> None:
        async with gate:
            await subscribe(api, fan, topic, headers=PUBLISHER)

    await asyncio.gather(*(join(fan) for fan in fans))
    count = await api.get(f"/api/topics/{topic}", headers=PUBLISHER)
    assert count.json()["subscribers"] == 1000

    nid = await publish_topic(api, topic)
    rows = "SELECT count(*) FROM notifications WHERE client_id = :key"
    assert await backend.scalar(rows, key=f"#{topic}") == 1
    states = "SELECT count(*) FROM announcement_states WHERE notification_id = :nid"
    assert await backend.scalar(states, nid=nid) == 0
    for fan in (fans[0], fans[499], fans[-1]):
        assert await listed(api, fan) == ([nid], 1)

    # Per-user state appears only when a user acts, and is that user's alone.
    read = await api.put(
        f"/api/clients/{fans[0]}/notifications/{nid}/read", headers=bearer(fans[0])
    )
    assert read.status_code == 200, read.text
    gone = await api.delete(f"/api/clients/{fans[1]}/notifications/{nid}", headers=bearer(fans[1]))
    assert gone.status_code == 200, gone.text
    assert await backend.scalar(states, nid=nid) == 2
    assert await listed(api, fans[0]) == ([nid], 0)
    assert await listed(api, fans[1]) == ([], 0)
    assert await listed(api, fans[2]) == ([nid], 1)
    assert await backend.scalar(rows, key=f"#{topic}") == 1


async def test_unsubscribe_keeps_history_and_stops_what_comes_next(
    api: httpx.AsyncClient,
) -> None:
    topic, fan = new_topic(), new_client_id()
    await subscribe(api, fan, topic)
    kept = await publish_topic(api, topic, "before")
    async with open_stream(api, stream_url(fan), headers=bearer(fan)) as stream:
        answer = await unsubscribe(api, fan, topic)
        assert answer.json() == {"clientID": fan, "topic": topic, "status": "unsubscribed"}
        await publish_topic(api, topic, "after")
        sentinel = await unicast(api, fan)
        assert await next_ids(stream, 1) == [sentinel]
    assert await listed(api, fan) == ([sentinel, kept], 2)
    read = await api.put(f"/api/clients/{fan}/notifications/{kept}/read", headers=bearer(fan))
    assert read.status_code == 200
    again = await unsubscribe(api, fan, topic)
    assert again.status_code == 404 and again.json() == {"error": "not subscribed to this topic"}
    mine = await api.get(f"/api/clients/{fan}/topics", headers=bearer(fan))
    assert mine.json()["topics"] == []


async def test_a_late_subscriber_sees_nothing_older_and_a_comeback_only_its_intervals(
    api: httpx.AsyncClient,
) -> None:
    topic, early, late = new_topic(), new_client_id(), new_client_id()
    await subscribe(api, early, topic)
    first = await publish_topic(api, topic, 1)
    await subscribe(api, late, topic)
    second = await publish_topic(api, topic, 2)
    assert await listed(api, late) == ([second], 1)
    old = await api.get(f"/api/clients/{late}/notifications/{first}", headers=bearer(late))
    assert old.status_code == 404
    assert (await unsubscribe(api, early, topic)).status_code == 200
    missed = await publish_topic(api, topic, 3)
    await subscribe(api, early, topic)
    await subscribe(api, early, topic)  # twice is once
    fourth = await publish_topic(api, topic, 4)
    assert await listed(api, early) == ([fourth, second, first], 3)
    assert await listed(api, late) == ([fourth, missed, second], 3)
    resumed = {**bearer(late), "Last-Event-ID": "0"}
    async with open_stream(api, stream_url(late), headers=resumed) as stream:
        assert await next_ids(stream, 3) == [second, missed, fourth]


async def test_resume_with_last_event_id_replays_topic_notifications_in_order(
    api: httpx.AsyncClient,
) -> None:
    topic, fan = new_topic(), new_client_id()
    await subscribe(api, fan, topic)
    async with open_stream(api, stream_url(fan), headers=bearer(fan)) as stream:
        seen = await unicast(api, fan, "seen")
        assert await next_ids(stream, 1) == [seen]
    missed = [await publish_topic(api, topic, "a"), await unicast(api, fan, "b")]
    missed.append(await publish_topic(api, topic, "c"))
    resumed = {**bearer(fan), "Last-Event-ID": str(seen)}
    async with open_stream(api, stream_url(fan), headers=resumed) as stream:
        assert await next_ids(stream, 3) == missed
        live = await publish_topic(api, topic, "live")
        assert await next_ids(stream, 1) == [live]


async def test_mark_all_read_covers_topic_notifications_for_that_user_only(
    api: httpx.AsyncClient,
) -> None:
    topic, one, other = new_topic(), new_client_id(), new_client_id()
    await subscribe(api, one, topic)
    await subscribe(api, other, topic)
    nid = await publish_topic(api, topic)
    done = await api.put(f"/api/clients/{one}/notifications/read", headers=bearer(one))
    assert done.json() == {"status": "read", "updated": 1}
    assert await listed(api, one) == ([nid], 0)
    assert await listed(api, other) == ([nid], 1)


async def test_the_same_event_id_is_one_notification(api: httpx.AsyncClient) -> None:
    topic, fan = new_topic(), new_client_id()
    await subscribe(api, fan, topic)
    first = await publish_topic(api, topic, "x", id="evt-1")
    assert await publish_topic(api, topic, "x", id="evt-1") == first
    body = {"topic": topic, "sourceID": "tests", "data": "other", "id": "evt-1"}
    changed = await api.post("/api/events/topic", json=body, headers=PUBLISHER)
    assert changed.status_code == 409
    assert await listed(api, fan) == ([first], 1)


async def test_nobody_subscribed_still_stores_it_for_no_one(
    api: httpx.AsyncClient, backend: Backend
) -> None:
    topic = new_topic()
    await publish_topic(api, topic)
    count = await api.get(f"/api/topics/{topic}", headers=PUBLISHER)
    assert count.json() == {"topic": topic, "subscribers": 0}
    rows = "SELECT count(*) FROM notifications WHERE client_id = :key"
    assert await backend.scalar(rows, key=f"#{topic}") == 1


async def test_refusals_another_user_bad_slugs_and_who_may_count(
    api: httpx.AsyncClient,
) -> None:
    topic, user, other = new_topic(), new_client_id(), new_client_id()
    for method in ("PUT", "DELETE"):
        refused = await api.request(
            method, f"/api/clients/{user}/topics/{topic}", headers=bearer(other)
        )
        assert refused.status_code == 403, refused.text
        assert "error" in refused.json()
    listing = await api.get(f"/api/clients/{user}/topics", headers=bearer(other))
    assert listing.status_code == 403
    assert (await api.get(f"/api/clients/{user}/topics", headers=bearer(user))).json()[
        "topics"
    ] == []

    for bad in ("Upper", "-dash", "a" * 65, "sp%20ace", "d.ot"):
        answer = await api.put(f"/api/clients/{user}/topics/{bad}", headers=bearer(user))
        assert answer.status_code == 400, (bad, answer.text)
        assert answer.json()["error"].startswith("topic must be a slug")
        counted = await api.get(f"/api/topics/{bad}", headers=PUBLISHER)
        assert counted.status_code == 400, (bad, counted.text)
    assert (await api.get(f"/api/clients/{user}/topics", headers=bearer(user))).json()[
        "topics"
    ] == []

    for body in (
        {"topic": "Bad Slug", "sourceID": "t", "data": 1},
        {"sourceID": "t", "data": 1},
        {"topic": topic, "sourceID": "t", "data": 1, "destinationID": user},
    ):
        answer = await api.post("/api/events/topic", json=body, headers=PUBLISHER)
        assert answer.status_code == 422, (body, answer.text)
    not_publisher = await api.post(
        "/api/events/topic", json={"topic": topic, "sourceID": "t", "data": 1}, headers=bearer(user)
    )
    assert not_publisher.status_code == 403
    assert (await api.get(f"/api/topics/{topic}", headers=bearer(user))).status_code == 403
    rows = await api.get(f"/api/topics/{topic}", headers=PUBLISHER)
    assert rows.json()["subscribers"] == 0


async def test_a_stream_opened_before_the_subscribe_gets_it_live(
    api: httpx.AsyncClient,
) -> None:
    topic, fan = new_topic(), new_client_id()
    async with open_stream(api, stream_url(fan), headers=bearer(fan)) as stream:
        await fence(lambda: unicast(api, fan), lambda: not stream.queue.empty())
        stream.pending()
        await subscribe(api, fan, topic)
        nid = await publish_topic(api, topic)
        assert await next_ids(stream, 1) == [nid]


async def test_live_and_listed_agree_while_publishes_race_a_subscribe_and_unsubscribe(
    api: httpx.AsyncClient,
) -> None:
    # The interval ends are the last committed id at the change and ids commit in order: what
    # the stream got live is exactly what the list holds, a contiguous run of the topic's ids.
    topic, fan = new_topic(), new_client_id()
    published: list[int] = []
    stop = asyncio.Event()

    async def publisher() -> None:
        while not stop.is_set():
            published.append(await publish_topic(api, topic, len(published)))

    async with open_stream(api, stream_url(fan), headers=bearer(fan)) as stream:
        tasks = [asyncio.create_task(publisher()) for _ in range(4)]
        try:
            await until(lambda: len(published) >= 10, 30, "publishes before the subscribe")
            await subscribe(api, fan, topic)
            start = len(published)
            await until(lambda: len(published) >= start + 10, 30, "publishes while subscribed")
            assert (await unsubscribe(api, fan, topic)).status_code == 200
            end = len(published)
            await until(lambda: len(published) >= end + 10, 30, "publishes after")
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        sentinel = await unicast(api, fan)
        live: list[int] = []
        while not live or live[-1] != sentinel:
            live.extend(await next_ids(stream, 1))
    ids, _ = await listed(api, fan)
    listed_topic = sorted(set(ids) - {sentinel})
    assert live[:-1] == listed_topic
    ordered = sorted(published)
    assert listed_topic, "nothing published while subscribed"
    first, last = ordered.index(listed_topic[0]), ordered.index(listed_topic[-1])
    assert ordered[first : last + 1] == listed_topic
    assert first > 0 and last < len(ordered) - 1  # some before and some after were not its
