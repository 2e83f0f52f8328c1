"""Publishing hardened against input JSON allows but the store cannot keep, and against abuse.

Every test runs a real server process; PostgreSQL ones on a database of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from mercurio.config import load_settings
from mercurio.errors import ConfigError
from tests.conftest import ServerProcess, bearer, new_client_id, postgres_database

pytestmark = pytest.mark.timeout(120)

PUBLISHERS = "A,B,666"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server on SQLite and one on PostgreSQL, with publishers A and B."""
    env = {"MERCURIO_PUBLISHERS": PUBLISHERS}
    folder = tmp_path_factory.mktemp(f"hardening-{request.param}")
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            # A database of its own: the shared one holds other tests' announcements,
            # which would show up in every inbox these tests expect to be empty.
            env["MERCURIO_DB_CONN"] = stack.enter_context(postgres_database())
        proc = ServerProcess.in_folder(folder, env).start()
        yield proc
        proc.stop()


@pytest.fixture
async def client(backend: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=backend.url, timeout=30) as client:
        yield client


def as_publisher(name: str) -> dict[str, str]:
    return bearer(name, publisher=True)


async def inbox(client: httpx.AsyncClient, client_id: str) -> list[dict[str, object]]:
    answer = await client.get(f"/api/clients/{client_id}/notifications", headers=bearer(client_id))
    assert answer.status_code == 200, answer.text
    notes: list[dict[str, object]] = answer.json()["notifications"]
    return notes


NUL_BODIES: list[dict[str, object]] = [
    {"sourceID": "s\u0000rc", "data": "x"},
    {"sourceID": "src", "data": {"text": "a\u0000b"}},
    {"sourceID": "src", "data": {"k\u0000ey": 1}},
    {"sourceID": "src", "data": [[{"deep": ["\u0000"]}]]},
    {"sourceID": "src", "data": "x", "id": "e\u0000v"},
    {"sourceID": "src", "data": "x", "category": "c\u0000"},
]


async def test_a_nul_in_text_is_422_and_never_fails_the_innocent_publishes_of_its_batch(
    client: httpx.AsyncClient,
) -> None:
    async def publish(body: dict[str, object], destination: str) -> httpx.Response:
        return await client.post(
            "/api/events/unicast",
            json={**body, "destinationID": destination},
            headers=as_publisher("A"),
        )

    innocent = [new_client_id() for _ in range(150)]
    guilty = [new_client_id() for _ in range(30)]
    calls = [publish({"sourceID": "src", "data": {"n": i}}, c) for i, c in enumerate(innocent)]
    for i, c in enumerate(guilty):
        calls.insert(i * 5, publish(NUL_BODIES[i % len(NUL_BODIES)], c))
    answers = await asyncio.gather(*calls)
    by_status = sorted({a.status_code for a in answers})
    assert by_status == [200, 422], [a.text for a in answers if a.status_code not in (200, 422)]
    assert sum(a.status_code == 422 for a in answers) == len(guilty)
    assert all("error" in a.json() for a in answers if a.status_code == 422)
    for c in guilty:
        assert await inbox(client, c) == []
    for c in innocent[:10]:
        assert len(await inbox(client, c)) == 1


@pytest.mark.parametrize("path", ["broadcast", "announce"])
async def test_a_nul_in_text_is_422_on_broadcast_and_announce(
    client: httpx.AsyncClient, path: str
) -> None:
    destination = new_client_id()
    for body in NUL_BODIES:
        sent = {**body, "destinations": [destination]} if path == "broadcast" else body
        answer = await client.post(f"/api/events/{path}", json=sent, headers=as_publisher("A"))
        assert answer.status_code == 422, answer.text
        assert set(answer.json()) == {"error"}
    bad_destination = {"sourceID": "s", "data": 1, "destinations": [destination, "u\u0000"]}
    answer = await client.post(
        "/api/events/broadcast", json=bad_destination, headers=as_publisher("A")
    )
    assert answer.status_code == 422
    bad_unicast = {"sourceID": "s", "data": 1, "destinationID": "u\u0000"}
    answer = await client.post("/api/events/unicast", json=bad_unicast, headers=as_publisher("A"))
    assert answer.status_code == 422 and set(answer.json()) == {"error"}
    assert await inbox(client, destination) == []


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", '[1, {"x": NaN}]']


@pytest.mark.parametrize("number", NON_FINITE)
async def test_nan_infinity_and_1e400_are_refused_not_stored_as_null(
    client: httpx.AsyncClient, number: str
) -> None:
    destination = new_client_id()
    bodies = {
        # The fast unicast path and the framework's routes both see these.
        "unicast": f'{{"destinationID": "{destination}", "sourceID": "s", "data": {number}}}',
        "broadcast": f'{{"destinations": ["{destination}"], "sourceID": "s", "data": {number}}}',
    }
    for path, raw in bodies.items():
        answer = await client.post(
            f"/api/events/{path}",
            content=raw,
            headers={**as_publisher("A"), "Content-Type": "application/json"},
        )
        assert answer.status_code in (400, 422), answer.text
        assert set(answer.json()) == {"error"}
    assert await inbox(client, destination) == []


@pytest.mark.parametrize("path", ["unicast", "broadcast", "announce"])
async def test_another_publisher_reusing_an_event_id_gets_its_own_notification(
    client: httpx.AsyncClient, path: str
) -> None:
    user, event = new_client_id(), f"evt-{new_client_id()}"

    async def publish(publisher: str, text: str) -> httpx.Response:
        body: dict[str, object] = {"id": event, "sourceID": publisher, "data": text}
        if path == "unicast":
            body["destinationID"] = user
        elif path == "broadcast":
            body["destinations"] = [user]
        return await client.post(f"/api/events/{path}", json=body, headers=as_publisher(publisher))

    def first(answer: httpx.Response) -> int:
        assert answer.status_code == 200, answer.text
        value = answer.json()
        return int((value[0] if isinstance(value, list) else value)["notificationID"])

    from_a = first(await publish("A", "from A"))
    from_b = first(await publish("B", "from B"))
    assert from_a != from_b
    texts = {note["notificationID"]: note["data"] for note in await inbox(client, user)}
    assert texts[from_a] == "from A" and texts[from_b] == "from B"
    assert first(await publish("A", "from A")) == from_a  # an idempotent retry still works
    changed = await publish("A", "A changed its mind")
    assert changed.status_code == 409, changed.text
    assert set(changed.json()) == {"error"}
    texts = {note["notificationID"]: note["data"] for note in await inbox(client, user)}
    assert texts[from_a] == "from A" and "A changed its mind" not in texts.values()


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with small row and byte budgets and a 1 MiB cap per publish."""
    folder = tmp_path_factory.mktemp("budgets")
    proc = ServerProcess.in_folder(
        folder,
        {
            "MERCURIO_PUBLISHERS": "rows,bytes,big",
            "MERCURIO_PUBLISH_MAX_BYTES_PER_REQUEST": str(1024 * 1024),
            "MERCURIO_PUBLISH_ROW_RATE": "0.01",
            "MERCURIO_PUBLISH_ROW_BURST": "100",
            "MERCURIO_PUBLISH_BYTE_RATE": "1",
            "MERCURIO_PUBLISH_BYTE_BURST": "120000",
        },
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
async def limited(budgeted: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=budgeted.url, timeout=30) as client:
        yield client


async def test_a_small_broadcast_request_cannot_store_megabytes(
    limited: httpx.AsyncClient,
) -> None:
    destinations = [new_client_id() for _ in range(100)]
    body = {"sourceID": "s", "data": "x" * 20_000, "destinations": destinations}
    answer = await limited.post("/api/events/broadcast", json=body, headers=as_publisher("big"))
    assert answer.status_code == 413, answer.text
    assert "2000200 bytes" in answer.json()["error"]
    assert await inbox(limited, destinations[0]) == []


async def test_a_publisher_is_charged_for_rows_not_only_requests(
    limited: httpx.AsyncClient,
) -> None:
    destinations = [new_client_id() for _ in range(60)]
    body = {"sourceID": "s", "data": "x", "destinations": destinations}
    first = await limited.post("/api/events/broadcast", json=body, headers=as_publisher("rows"))
    assert first.status_code == 200, first.text
    again = {**body, "destinations": [new_client_id() for _ in range(60)]}
    refused = await limited.post("/api/events/broadcast", json=again, headers=as_publisher("rows"))
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert await inbox(limited, again["destinations"][0]) == []  # type: ignore[index]


async def test_a_publisher_is_charged_for_stored_bytes_on_every_route(
    limited: httpx.AsyncClient,
) -> None:
    destinations = [new_client_id() for _ in range(5)]
    body = {"sourceID": "s", "data": "y" * 10_000, "destinations": destinations}
    for _ in range(2):  # 2 x 5 x 10 kB of the 120 kB budget
        answer = await limited.post(
            "/api/events/broadcast", json=body, headers=as_publisher("bytes")
        )
        assert answer.status_code == 200, answer.text
    user = new_client_id()
    unicast = {"sourceID": "s", "data": "z" * 30_000, "destinationID": user}
    refused = await limited.post("/api/events/unicast", json=unicast, headers=as_publisher("bytes"))
    assert refused.status_code == 429, refused.text
    assert refused.json() == {"error": "publish rate limit exceeded"}
    assert int(refused.headers["retry-after"]) >= 1
    assert await inbox(limited, user) == []


def test_publish_budget_settings_are_validated_by_name() -> None:
    cases: dict[str, Callable[[], object]] = {
        name: (lambda name=name, value=value: load_settings({"MERCURIO_ENV": "test", name: value}))
        for name, value in [
            ("MERCURIO_PUBLISH_MAX_BYTES_PER_REQUEST", "0"),
            ("MERCURIO_PUBLISH_ROW_RATE", "-1"),
            ("MERCURIO_PUBLISH_BYTE_BURST", "nope"),
        ]
    }
    for name, load in cases.items():
        with pytest.raises(ConfigError, match=name):
            load()
