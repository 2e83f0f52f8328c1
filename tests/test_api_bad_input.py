"""Bad input always gets a clear 4xx JSON error and stores nothing."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import PUBLISHER, bearer, new_client_id

pytestmark = pytest.mark.timeout(60)


async def _count(api: httpx.AsyncClient, client: str) -> int:
    answer = await api.get(f"/api/clients/{client}/notifications", headers=bearer(client))
    return len(answer.json()["notifications"])


UNICAST_CASES = [
    ("malformed JSON", b'{"sourceID": "s", "destinationID": ', 400, "JSON"),
    ("not an object", b'["a"]', 422, ""),
    ("missing data", b'{"sourceID": "s", "destinationID": "%s"}', 422, "data"),
    ("missing sourceID", b'{"destinationID": "%s", "data": "x"}', 422, "sourceID"),
    (
        "wrong-typed destination",
        b'{"sourceID": "s", "destinationID": 123, "data": "x"}',
        422,
        "destinationID",
    ),
    ("wrong-typed source", b'{"sourceID": 5, "destinationID": "%s", "data": "x"}', 422, "sourceID"),
    (
        "unknown field",
        b'{"sourceID": "s", "destinationID": "%s", "data": "x", "extra": 1}',
        422,
        "unknown field",
    ),
    (
        "bad category",
        b'{"sourceID": "s", "destinationID": "%s", "data": "x", "category": "A B"}',
        422,
        "category",
    ),
    (
        "bad event id",
        b'{"id": "has space", "sourceID": "s", "destinationID": "%s", "data": "x"}',
        422,
        "id",
    ),
    (
        "SQL-looking destination",
        b'{"sourceID": "s", "destinationID": "1\' OR \'1\'=\'1", "data": "x"}',
        422,
        "destinationID",
    ),
    ("empty body", b"", 400, "body"),
]


@pytest.mark.parametrize(
    ("name", "body", "status", "mentions"), UNICAST_CASES, ids=[c[0] for c in UNICAST_CASES]
)
async def test_bad_unicast_is_refused_and_stores_nothing(
    api: httpx.AsyncClient, name: str, body: bytes, status: int, mentions: str
) -> None:
    client = new_client_id()
    content = body.replace(b"%s", client.encode()) if b"%s" in body else body
    answer = await api.post(
        "/api/events/unicast",
        content=content,
        headers={**PUBLISHER, "Content-Type": "application/json"},
    )
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert isinstance(error, str) and error
    assert mentions in error
    assert await _count(api, client) == 0


async def test_empty_destination_list_is_refused(api: httpx.AsyncClient) -> None:
    answer = await api.post(
        "/api/events/broadcast",
        headers=PUBLISHER,
        json={"sourceID": "s", "destinations": [], "data": "x"},
    )
    assert answer.status_code == 422
    assert "destinations" in answer.json()["error"]


async def test_over_ten_thousand_destinations_is_refused_and_stores_nothing(
    api: httpx.AsyncClient,
) -> None:
    first = new_client_id()
    destinations = [first] + [f"{first}-{i}" for i in range(10_000)]
    answer = await api.post(
        "/api/events/broadcast",
        headers=PUBLISHER,
        json={"sourceID": "s", "destinations": destinations, "data": "x"},
    )
    assert answer.status_code in (413, 422), answer.text
    assert "error" in answer.json()
    assert await _count(api, first) == 0


async def test_one_bad_destination_refuses_the_whole_broadcast(api: httpx.AsyncClient) -> None:
    good = new_client_id()
    answer = await api.post(
        "/api/events/broadcast",
        headers=PUBLISHER,
        json={"sourceID": "s", "destinations": [good, "bad id"], "data": "x"},
    )
    assert answer.status_code == 422
    assert await _count(api, good) == 0


async def test_everyone_cannot_be_mixed_with_users(api: httpx.AsyncClient) -> None:
    answer = await api.post(
        "/api/events/broadcast",
        headers=PUBLISHER,
        json={"sourceID": "s", "destinations": ["*", "123"], "data": "x"},
    )
    assert answer.status_code == 422


async def test_body_over_limit_is_413_and_stores_nothing(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    answer = await api.post(
        "/api/events/unicast",
        headers=PUBLISHER,
        json={"sourceID": "s", "destinationID": client, "data": "x" * (65 * 1024)},
    )
    assert answer.status_code == 413
    assert "bytes" in answer.json()["error"]
    assert await _count(api, client) == 0


async def test_body_over_limit_without_content_length_is_413(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    payload = (
        f'{{"sourceID": "s", "destinationID": "{client}", "data": "' + "y" * (70 * 1024) + '"}'
    ).encode()

    async def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(payload), 8192):
            yield payload[start : start + 8192]

    answer = await api.post("/api/events/unicast", headers=PUBLISHER, content=chunks())
    assert answer.status_code == 413
    assert await _count(api, client) == 0


@pytest.mark.parametrize("raw", ["abc", "-1", "0", "1.5", "99999999999999999999999", "1;DROP"])
async def test_non_numeric_notification_ids_are_400(api: httpx.AsyncClient, raw: str) -> None:
    client = new_client_id()
    for method, path in [
        ("GET", f"/api/clients/{client}/notifications/{raw}"),
        ("PUT", f"/api/clients/{client}/notifications/{raw}/read"),
        ("PUT", f"/api/clients/{client}/notifications/{raw}/unread"),
        ("DELETE", f"/api/clients/{client}/notifications/{raw}"),
    ]:
        answer = await api.request(method, path, headers=bearer(client))
        assert answer.status_code == 400, (method, path, answer.text)
        assert "notification id" in answer.json()["error"]


@pytest.mark.parametrize(
    ("params", "mentions"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "-5"}, "limit"),
        ({"limit": "1e9"}, "limit"),
        ({"limit": "99999999999999999999"}, "limit"),
        ({"before": "x"}, "notification id"),
        ({"status": "archived"}, "status"),
        ({"category": "DROP TABLE"}, "category"),
    ],
)
async def test_bad_list_parameters_are_400(
    api: httpx.AsyncClient, params: dict[str, str], mentions: str
) -> None:
    client = new_client_id()
    answer = await api.get(
        f"/api/clients/{client}/notifications", params=params, headers=bearer(client)
    )
    assert answer.status_code == 400
    assert mentions in answer.json()["error"]


async def test_bad_client_id_in_path_is_400(api: httpx.AsyncClient) -> None:
    answer = await api.get("/api/clients/a%20b/notifications", headers=bearer("a b"))
    assert answer.status_code == 400


@pytest.mark.parametrize("header", ["Bearer", "Basic abc", "Bearer not-a-jwt", "Token x.y.z"])
async def test_bad_authorization_headers_are_401(api: httpx.AsyncClient, header: str) -> None:
    answer = await api.get("/api/clients/123/notifications", headers={"Authorization": header})
    assert answer.status_code == 401
    assert answer.json()["error"]


async def test_bad_preferences_are_refused_and_change_nothing(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    url = f"/api/clients/{client}/preferences"
    me = bearer(client)
    assert (await api.put(url, json={"mutedCategories": ["ok"]}, headers=me)).status_code == 200
    for body in (
        {"mutedCategories": ["Not A Slug"]},
        {"mutedCategories": "x"},
        {"muted": []},
        {"mutedCategories": ["a"] * 101},
    ):
        answer = await api.put(url, json=body, headers=me)
        assert answer.status_code in (400, 422), body
    assert (await api.get(url, headers=me)).json()["mutedCategories"] == ["ok"]


async def test_unknown_route_and_method_are_json(api: httpx.AsyncClient) -> None:
    missing = await api.get("/api/nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {"error": "not found"}
    wrong = await api.delete("/api/events/unicast", headers=PUBLISHER)
    assert wrong.status_code == 405
    assert "error" in wrong.json()
