"""Replace in place (issue 13, item 4) against real servers, SQLite and PostgreSQL: a new
notification with the same (client, collapseKey) replaces the older one: it leaves the list,
the unread count and replays, open streams get read-state `deleted` for the old id."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
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


def start(kind: str, folder: Path, pg_url: str | None) -> ServerProcess:
    env = {**server_files(folder), "MERCURIO_SSE_HEARTBEAT": "1"}
    if pg_url is not None:
        env["MERCURIO_DB_CONN"] = pg_url
    return ServerProcess(env).start()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server per back end for this module's unicasts and broadcasts."""
    folder = tmp_path_factory.mktemp(f"collapse-{request.param}")
    if request.param == "sqlite":
        proc = start("sqlite", folder, None)
        yield proc
        proc.stop()
        return
    with postgres_database() as url:
        proc = start("postgres", folder, url)
        yield proc
        proc.stop()


@pytest.fixture
async def api(backend: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=backend.url, timeout=10) as client:
        yield client


async def publish(api: httpx.AsyncClient, route: str, body: dict[str, Any]) -> httpx.Response:
    return await api.post(
        f"/api/events/{route}", json={"sourceID": "tests", **body}, headers=PUBLISHER
    )


async def unicast(api: httpx.AsyncClient, user: str, data: Any, **extra: Any) -> int:
    answer = await publish(api, "unicast", {"destinationID": user, "data": data, **extra})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["notificationID"])


async def listing(api: httpx.AsyncClient, user: str) -> tuple[list[int], int]:
    answer = await api.get(f"/api/clients/{user}/notifications", headers=bearer(user))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return [note["notificationID"] for note in body["notifications"]], body["unreadCount"]


def stream_url(user: str) -> str:
    return f"/api/clients/{user}/notifications/stream"


async def next_named(stream: Stream, event: str) -> Any:
    while True:
        item = await stream.next()
        if item.event == event:
            return item.data


async def test_a_collapse_key_replaces_the_older_notification_in_list_count_and_stream(
    api: httpx.AsyncClient,
) -> None:
    user, other = new_client_id(), new_client_id()
    async with open_stream(api, stream_url(user), headers=bearer(user)) as live:
        old = await unicast(api, user, "3 new messages", collapseKey="inbox")
        elsewhere = await unicast(api, other, "theirs", collapseKey="inbox")
        unrelated = await unicast(api, user, "a like", collapseKey="likes")
        plain = await unicast(api, user, "plain")
        assert await listing(api, user) == ([plain, unrelated, old], 3)
        new = await unicast(api, user, "5 new messages", collapseKey="inbox")
        received = [(await live.next_message()).data["notificationID"] for _ in range(4)]
        assert received == [old, unrelated, plain, new]
        told = await next_named(live, "read-state")
    assert told == {"notificationID": old, "status": "deleted", "category": None, "unreadCount": 3}
    assert await listing(api, user) == ([new, plain, unrelated], 3)
    # Another client's key is its own; a replaced one is not fetched or replayed.
    assert await listing(api, other) == ([elsewhere], 1)
    one = await api.get(f"/api/clients/{user}/notifications/{old}", headers=bearer(user))
    assert one.status_code == 404
    resumed = {**bearer(user), "Last-Event-ID": "0"}
    async with open_stream(api, stream_url(user), headers=resumed) as stream:
        replayed = [int(m.id) for m in await stream.messages(3)]
    assert replayed == [unrelated, plain, new]


async def test_a_broadcast_collapses_per_destination(api: httpx.AsyncClient) -> None:
    users = [new_client_id(), new_client_id()]
    first = await unicast(api, users[0], "v1", collapseKey="build-42")
    answer = await publish(
        api, "broadcast", {"destinations": users, "data": "v2", "collapseKey": "build-42"}
    )
    assert answer.status_code == 200, answer.text
    latest = [one["notificationID"] for one in answer.json()]
    for user, note in zip(users, latest, strict=True):
        assert await listing(api, user) == ([note], 1)
    assert first not in latest


async def test_a_repeated_publish_with_a_collapse_key_replaces_nothing_more(
    api: httpx.AsyncClient,
) -> None:
    user = new_client_id()
    body = {"id": f"evt-{uuid.uuid4().hex[:8]}", "collapseKey": "status"}
    kept = await unicast(api, user, "up", **body)
    assert await unicast(api, user, "up", **body) == kept
    assert await listing(api, user) == ([kept], 1)


@pytest.mark.parametrize("key", ["", " spaced", "-leading", "x" * 65, "émoji", "a/b", "a b", 42])
async def test_a_bad_collapse_key_is_refused_and_nothing_is_stored(
    api: httpx.AsyncClient, key: Any
) -> None:
    user = new_client_id()
    kept = await unicast(api, user, "kept", collapseKey="fine")
    answer = await publish(api, "unicast", {"destinationID": user, "data": "x", "collapseKey": key})
    assert answer.status_code == 422, answer.text
    assert "collapseKey" in answer.json()["error"]
    assert await listing(api, user) == ([kept], 1)


@pytest.fixture
def own_db(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """A database of its own on PostgreSQL (None: SQLite in the test's folder)."""
    if request.node.callspec.params.get("kind") != "postgres":
        yield None
        return
    with postgres_database() as url:
        yield url


@pytest.mark.parametrize("kind", BACKENDS)
async def test_an_announcement_replaces_the_previous_announcement_with_its_key(
    kind: str, tmp_path: Path, own_db: str | None
) -> None:
    # A server of its own: announcements reach every user of a database.
    proc = start(kind, tmp_path, own_db)
    try:
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as api:
            user = new_client_id()
            body = {"data": "maintenance at 10:00", "collapseKey": "maintenance"}
            async with open_stream(api, stream_url(user), headers=bearer(user)) as live:
                old = (await publish(api, "announce", body)).json()["notificationID"]
                answer = await publish(api, "announce", {**body, "data": "moved to 11:00"})
                new = answer.json()["notificationID"]
                assert [m.id for m in await live.messages(2)] == [str(old), str(new)]
                told = await next_named(live, "read-state")
            assert told["notificationID"] == old and told["status"] == "deleted"
            assert told["unreadCount"] is None  # each user's own: read it from the API
            assert await listing(api, user) == ([new], 1)
    finally:
        proc.stop()
