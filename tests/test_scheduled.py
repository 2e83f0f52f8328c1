"""Scheduled delivery and retraction (issue 13, item 3) against real servers, SQLite and
PostgreSQL: `delay` / `deliverAt` keep a notification invisible until due, then it is listed
and live with an id in commit order; it survives a restart, two nodes deliver it once;
DELETE /api/events/{eventID} cancels a waiting one or retracts a delivered one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    PUBLISHER,
    ServerProcess,
    bearer,
    new_client_id,
    postgres_database,
    server_files,
)
from tests.streams import Stream, open_stream

pytestmark = pytest.mark.timeout(90)

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server per back end for this module (announcements are kept off it)."""
    folder = tmp_path_factory.mktemp(f"scheduled-{request.param}")
    if request.param == "sqlite":
        proc = ServerProcess.in_folder(folder, {"MERCURIO_SSE_HEARTBEAT": "1"}).start()
        yield proc
        proc.stop()
        return
    with postgres_database() as url:
        env = {**server_files(folder), "MERCURIO_DB_CONN": url, "MERCURIO_SSE_HEARTBEAT": "1"}
        proc = ServerProcess(env).start()
        yield proc
        proc.stop()


@pytest.fixture
async def api(backend: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=backend.url, timeout=10) as client:
        yield client


async def publish(
    api: httpx.AsyncClient, route: str, body: dict[str, Any], headers: dict[str, str] = PUBLISHER
) -> httpx.Response:
    return await api.post(
        f"/api/events/{route}", json={"sourceID": "tests", **body}, headers=headers
    )


async def unicast(api: httpx.AsyncClient, user: str, data: Any, **extra: Any) -> dict[str, Any]:
    answer = await publish(api, "unicast", {"destinationID": user, "data": data, **extra})
    assert answer.status_code in (200, 202), answer.text
    return dict(answer.json())


async def listing(api: httpx.AsyncClient, user: str) -> tuple[list[dict[str, Any]], int]:
    answer = await api.get(f"/api/clients/{user}/notifications", headers=bearer(user))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return body["notifications"], body["unreadCount"]


async def listed_ids(api: httpx.AsyncClient, user: str) -> list[int]:
    return [note["notificationID"] for note in (await listing(api, user))[0]]


async def until_listed(api: httpx.AsyncClient, user: str, count: int, limit: float = 20) -> list:
    deadline = asyncio.get_running_loop().time() + limit
    while len(notes := (await listing(api, user))[0]) < count:
        assert asyncio.get_running_loop().time() < deadline, f"{user} has {notes}"
        await asyncio.sleep(0.1)
    return notes


def stream_url(user: str) -> str:
    return f"/api/clients/{user}/notifications/stream"


async def next_named(stream: Stream, event: str) -> Any:
    while True:
        item = await stream.next()
        if item.event == event:
            return item.data


def event_id() -> str:
    return f"evt-{uuid.uuid4().hex[:12]}"


def moment(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


async def test_a_delayed_notification_is_invisible_until_due_then_live_listed_and_after_the_cursor(
    api: httpx.AsyncClient,
) -> None:
    user = new_client_id()
    async with open_stream(api, stream_url(user), headers=bearer(user)) as live:
        answer = await publish(api, "unicast", {"destinationID": user, "data": "later", "delay": 2})
        assert answer.status_code == 202, answer.text
        waiting = answer.json()
        assert waiting["notificationID"] is None and waiting["deliverAt"].endswith("Z")
        assert await listing(api, user) == ([], 0)
        # Published (and committed) before the scheduled one is due: its id comes first.
        now = (await unicast(api, user, "now"))["notificationID"]
        assert (await live.next_message()).data["notificationID"] == now
        frame = await live.next_message()
    assert frame.data["eventID"] == waiting["eventID"] and frame.data["data"] == "later"
    scheduled = frame.data["notificationID"]
    assert scheduled > now, "a due notification gets a fresh id, after those committed before"
    assert await listed_ids(api, user) == [scheduled, now]
    assert (await listing(api, user))[1] == 2
    # A stream whose cursor passed every id committed before the due time still gets it.
    resumed = {**bearer(user), "Last-Event-ID": str(now)}
    async with open_stream(api, stream_url(user), headers=resumed) as stream:
        assert [int(m.id) for m in await stream.messages(1)] == [scheduled]
        await asyncio.sleep(0.3)
        assert stream.pending() == []


async def test_deliver_at_on_broadcast_and_a_resend_schedules_once(api: httpx.AsyncClient) -> None:
    users = [new_client_id(), new_client_id()]
    body = {"destinations": users, "data": {"n": 1}, "id": event_id(), "deliverAt": moment(1.5)}
    first = await publish(api, "broadcast", body)
    again = await publish(api, "broadcast", body)
    assert first.status_code == again.status_code == 202, first.text
    assert first.json() == again.json()
    assert [one["notificationID"] for one in first.json()] == [None, None]
    for user in users:
        notes = await until_listed(api, user, 1)
        await asyncio.sleep(0.5)
        assert len((await listing(api, user))[0]) == 1, "scheduled twice"
        assert notes[0]["eventID"] == body["id"]
    # Once delivered, the same publish is answered like any repeated publish: its ids. (Its
    # deliverAt is past now, which is refused: a retry with a delay is the same event.)
    retry = {key: value for key, value in body.items() if key != "deliverAt"}
    after = await publish(api, "broadcast", {**retry, "delay": 60})
    assert after.status_code == 200
    delivered = [(await listed_ids(api, user))[0] for user in users]
    assert sorted(one["notificationID"] for one in after.json()) == sorted(delivered)
    changed = await publish(api, "broadcast", {**retry, "delay": 60, "data": {"n": 2}})
    assert changed.status_code == 409


async def test_a_ttl_counts_from_delivery_and_expires_at_must_follow_it(
    api: httpx.AsyncClient,
) -> None:
    user = new_client_id()
    waiting = await unicast(api, user, "ttl", delay=1, ttl=3600)
    (note,) = await until_listed(api, user, 1)
    expires = datetime.fromisoformat(note["expiresAt"])
    delivered_at = datetime.fromisoformat(waiting["deliverAt"])
    assert expires >= delivered_at + timedelta(seconds=3600)
    too_soon = await publish(
        api,
        "unicast",
        {"destinationID": user, "data": "x", "deliverAt": moment(60), "expiresAt": moment(30)},
    )
    assert too_soon.status_code == 422
    assert "after the delivery" in too_soon.text


@pytest.mark.parametrize(
    "extra",
    [
        {"delay": 0},
        {"delay": -5},
        {"delay": "5"},
        {"delay": 1.5},
        {"delay": 11 * 366 * 24 * 3600},
        {"delay": 5, "deliverAt": moment(60)},
        {"deliverAt": "2020-01-01T00:00:00Z"},
        {"deliverAt": "2030-01-01T00:00:00"},
        {"deliverAt": "tomorrow"},
        {"deliverAt": 1893456000},
        {"delay": 5, "expiresAt": moment(2)},
    ],
)
async def test_bad_schedules_are_refused_and_nothing_is_stored(
    api: httpx.AsyncClient, extra: dict[str, Any]
) -> None:
    user = new_client_id()
    eid = event_id()
    body = {"destinationID": user, "data": "x", "id": eid, **extra}
    answer = await publish(api, "unicast", body)
    assert answer.status_code == 422, answer.text
    assert "error" in answer.json()
    # Nothing waits and nothing was delivered: the publisher has no such event.
    assert (await api.delete(f"/api/events/{eid}", headers=PUBLISHER)).status_code == 404
    assert await listing(api, user) == ([], 0)


async def test_delete_cancels_a_scheduled_notification_before_it_is_delivered(
    api: httpx.AsyncClient,
) -> None:
    user = new_client_id()
    eid = event_id()
    async with open_stream(api, stream_url(user), headers=bearer(user)) as live:
        await unicast(api, user, "cancelled", id=eid, delay=1)
        answer = await api.delete(f"/api/events/{eid}", headers=PUBLISHER)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "status": "cancelled",
            "eventID": eid,
            "cancelled": 1,
            "retracted": 0,
        }
        # A sentinel due after the cancelled one: once it arrives, the other would have too.
        sentinel = await unicast(api, user, "sentinel", delay=2)
        frame = await live.next_message()
        assert frame.data["eventID"] == sentinel["eventID"]
    notes, unread = await listing(api, user)
    assert [n["eventID"] for n in notes] == [sentinel["eventID"]] and unread == 1
    assert (await api.delete(f"/api/events/{eid}", headers=PUBLISHER)).status_code == 404


async def test_delete_retracts_a_delivered_notification_from_every_inbox_and_stream(
    api: httpx.AsyncClient,
) -> None:
    users = [new_client_id(), new_client_id()]
    eid = event_id()
    async with (
        open_stream(api, stream_url(users[0]), headers=bearer(users[0])) as first,
        open_stream(api, stream_url(users[1]), headers=bearer(users[1])) as second,
    ):
        kept = await unicast(api, users[0], "kept")
        sent = await publish(api, "broadcast", {"destinations": users, "data": "oops", "id": eid})
        ids = {one["notificationID"] for one in sent.json()}
        assert (await first.next_message()).data["notificationID"] == kept["notificationID"]
        for stream in (first, second):
            assert (await stream.next_message()).data["notificationID"] in ids
        answer = await api.delete(f"/api/events/{eid}", headers=PUBLISHER)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "retracted" and answer.json()["retracted"] == 2
        told = [await next_named(stream, "read-state") for stream in (first, second)]
    assert {t["notificationID"] for t in told} == ids
    assert {t["status"] for t in told} == {"deleted"}
    assert [t["unreadCount"] for t in told] == [1, 0]
    assert await listed_ids(api, users[0]) == [kept["notificationID"]]
    assert await listing(api, users[1]) == ([], 0)
    resumed = {**bearer(users[1]), "Last-Event-ID": "0"}
    async with open_stream(api, stream_url(users[1]), headers=resumed) as stream:
        await asyncio.sleep(0.5)
        assert [m for m in stream.pending() if m.event == "message"] == []
    # Retracting again changes nothing and says so.
    again = await api.delete(f"/api/events/{eid}", headers=PUBLISHER)
    assert again.status_code == 200 and again.json()["retracted"] == 0


async def test_only_the_publisher_that_sent_it_may_delete_an_event(api: httpx.AsyncClient) -> None:
    user = new_client_id()
    eid = event_id()
    sent = await unicast(api, user, "mine", id=eid)
    other = bearer("another-publisher", publisher=True)
    assert (await api.delete(f"/api/events/{eid}", headers=other)).status_code == 404
    assert (await api.delete(f"/api/events/{eid}", headers=bearer(user))).status_code == 403
    assert (await api.delete(f"/api/events/{eid}")).status_code == 401
    assert await listed_ids(api, user) == [sent["notificationID"]]


# -- restarts and clusters --------------------------------------------------------------------


def backend_env(kind: str, folder: Path, pg_url: str | None) -> dict[str, str]:
    env = server_files(folder)
    if kind == "postgres":
        assert pg_url is not None
        env["MERCURIO_DB_CONN"] = pg_url
    return env


@pytest.fixture
def fresh_pg(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """A database of its own when the test runs on PostgreSQL."""
    if request.node.callspec.params.get("kind") != "postgres":
        yield None
        return
    with postgres_database() as url:
        yield url


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_delay_survives_a_restart_and_is_delivered_once(
    kind: str, tmp_path: Path, fresh_pg: str | None
) -> None:
    env = backend_env(kind, tmp_path, fresh_pg)
    node = ServerProcess(env).start()
    user = new_client_id()
    try:
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as api:
            waiting = await unicast(api, user, "across a restart", delay=2, id=event_id())
        node.stop()
        await asyncio.sleep(3)  # due while the server is down
        node.start()
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as api:
            (note,) = await until_listed(api, user, 1)
            assert note["eventID"] == waiting["eventID"]
            await asyncio.sleep(1)
            assert len((await listing(api, user))[0]) == 1
    finally:
        node.stop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A database of its own (a sync fixture: postgres_database runs its own event loop)."""
    with postgres_database() as url:
        yield url


@pytest.mark.postgres
async def test_two_nodes_on_one_postgres_deliver_each_scheduled_notification_once(
    tmp_path: Path, pg_url: str
) -> None:
    topic = f"sched-{uuid.uuid4().hex[:8]}"
    nodes = [
        ServerProcess(
            {
                **server_files(tmp_path / name),
                "MERCURIO_DB_CONN": pg_url,
                "MERCURIO_NID": name,
                "MERCURIO_MQ": "on",
                "MERCURIO_MQ_CONN": pg_url,
                "MERCURIO_MQ_TOPIC": topic,
            }
        )
        for name in ("sched-a", "sched-b")
    ]
    try:
        for node in nodes:
            (tmp_path / node.env["MERCURIO_NID"]).mkdir()
            node.start()
        users = [new_client_id() for _ in range(6)]
        async with (
            httpx.AsyncClient(base_url=nodes[0].url, timeout=10) as a,
            httpx.AsyncClient(base_url=nodes[1].url, timeout=10) as b,
        ):
            async with open_stream(b, stream_url(users[0]), headers=bearer(users[0])) as live:
                due = moment(2)
                for index, user in enumerate(users):
                    for copy in range(3):
                        via = (a, b)[(index + copy) % 2]
                        body = {"destinationID": user, "data": copy, "deliverAt": due}
                        answer = await publish(via, "unicast", body)
                        assert answer.status_code == 202, answer.text
                # Scheduled on both nodes, delivered live on node b to a stream there.
                seen = [await live.next_message(timeout=30) for _ in range(3)]
                assert sorted(m.data["data"] for m in seen) == [0, 1, 2]
            for user in users:
                await until_listed(b, user, 3)
            await asyncio.sleep(1.5)
            for user in users:
                notes = (await listing(a, user))[0]
                assert sorted(n["data"] for n in notes) == [0, 1, 2], notes
    finally:
        for node in nodes:
            node.stop()
