"""Expiry (issue 13, item 2): `ttl` or `expiresAt` on every publish route; once past, the
notification is not listed, counted, fetched, read or replayed (push and e-mail: their tests)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import PUBLISHER, bearer, new_client_id
from tests.streams import open_stream

pytestmark = pytest.mark.timeout(60)


async def publish(api: httpx.AsyncClient, route: str, body: dict[str, Any]) -> httpx.Response:
    return await api.post(
        f"/api/events/{route}", json={"sourceID": "tests", **body}, headers=PUBLISHER
    )


async def unicast(api: httpx.AsyncClient, user: str, data: str, **extra: Any) -> int:
    answer = await publish(api, "unicast", {"destinationID": user, "data": data, **extra})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["notificationID"])


async def listing(api: httpx.AsyncClient, user: str) -> dict[str, Any]:
    answer = await api.get(f"/api/clients/{user}/notifications", headers=bearer(user))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def until_gone(api: httpx.AsyncClient, user: str, nid: int, limit: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while nid in [n["notificationID"] for n in (await listing(api, user))["notifications"]]:
        assert asyncio.get_running_loop().time() < deadline, f"{nid} never expired"
        await asyncio.sleep(0.1)


async def test_an_expired_notification_is_not_listed_counted_fetched_read_or_replayed(
    api: httpx.AsyncClient,
) -> None:
    user = new_client_id()
    me = bearer(user)
    async with open_stream(api, f"/api/clients/{user}/notifications/stream", headers=me) as live:
        short = await unicast(api, user, "short-lived", ttl=1)
        frame = await live.next_message()
        assert frame.data["notificationID"] == short
        assert frame.data["expiresAt"].endswith("Z")  # delivered live while it lasts
    kept = await unicast(api, user, "kept")
    listed = await listing(api, user)
    assert [n["notificationID"] for n in listed["notifications"]] == [kept, short]
    assert (
        "expiresAt" in listed["notifications"][1] and "expiresAt" not in listed["notifications"][0]
    )

    await until_gone(api, user, short)
    assert (await listing(api, user))["unreadCount"] == 1
    count = await api.get(f"/api/clients/{user}/notifications/unread-count", headers=me)
    assert count.json()["unreadCount"] == 1
    one = await api.get(f"/api/clients/{user}/notifications/{short}", headers=me)
    assert one.status_code == 404
    read = await api.put(f"/api/clients/{user}/notifications/{short}/read", headers=me)
    assert read.status_code == 404
    resumed = {**me, "Last-Event-ID": "0"}
    async with open_stream(
        api, f"/api/clients/{user}/notifications/stream", headers=resumed
    ) as stream:
        replayed = [int(m.id) for m in await stream.messages(1)]
        assert replayed == [kept]
        assert stream.pending() == []


async def test_expires_at_and_ttl_on_broadcast_and_announce(api: httpx.AsyncClient) -> None:
    users = [new_client_id(), new_client_id()]
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    answer = await publish(
        api, "broadcast", {"destinations": users, "data": "b", "expiresAt": soon}
    )
    assert answer.status_code == 200, answer.text
    nids = [item["notificationID"] for item in answer.json()]
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    lasting = await publish(
        api, "broadcast", {"destinations": users, "data": "l", "expiresAt": later}
    )
    assert lasting.status_code == 200, lasting.text
    announced = await publish(api, "announce", {"data": "a", "ttl": 1})
    assert announced.status_code == 200, announced.text
    for user, nid in zip(users, nids, strict=True):
        await until_gone(api, user, nid)
        await until_gone(api, user, announced.json()["notificationID"])
        shown = (await listing(api, user))["notifications"]
        assert [n["data"] for n in shown if n["sourceID"] == "tests"][:1] == ["l"]
        assert shown[0]["expiresAt"].startswith(later[:16])


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"ttl": 0}, "ttl"),
        ({"ttl": -5}, "ttl"),
        ({"ttl": "60"}, "ttl"),
        ({"ttl": 1.5}, "ttl"),
        ({"ttl": 10**12}, "ttl"),
        ({"expiresAt": "2001-01-01T00:00:00Z"}, "past"),
        ({"expiresAt": "2999-01-01T00:00:00Z"}, "ten years"),
        ({"expiresAt": "2030-01-01T00:00:00"}, "offset"),
        ({"expiresAt": "tomorrow"}, "RFC 3339"),
        ({"expiresAt": 1893456000}, "expiresAt"),
        ({"ttl": 60, "expiresAt": "2030-01-01T00:00:00Z"}, "not both"),
    ],
)
async def test_a_bad_expiry_is_refused_and_nothing_is_stored(
    api: httpx.AsyncClient, extra: dict[str, Any], says: str
) -> None:
    user = new_client_id()
    marker = f"refused {new_client_id()}"
    for route, body in (
        ("unicast", {"destinationID": user}),
        ("broadcast", {"destinations": [user]}),
        ("announce", {}),
    ):
        answer = await publish(api, route, {"data": marker, **body, **extra})
        assert answer.status_code == 422, (route, answer.text)
        assert says in answer.text, (route, answer.text)
    shown = (await listing(api, user))["notifications"]
    assert [n for n in shown if n["data"] == marker] == []
