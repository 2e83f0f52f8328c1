"""A muted category is stored but kept out of the default list and the unread count (issue 13).

Before, a muted notification was only kept off the live stream: a reload listed it again and
the badge counted it, which a new user found confusing.
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import PUBLISHER, bearer, new_client_id

pytestmark = pytest.mark.timeout(60)


async def publish(api: httpx.AsyncClient, user: str, category: str) -> int:
    body = {"sourceID": "tests", "destinationID": user, "data": category, "category": category}
    answer = await api.post("/api/events/unicast", json=body, headers=PUBLISHER)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["notificationID"])


async def mute(api: httpx.AsyncClient, user: str, *categories: str) -> None:
    answer = await api.put(
        f"/api/clients/{user}/preferences",
        json={"mutedCategories": list(categories)},
        headers=bearer(user),
    )
    assert answer.status_code == 200, answer.text


async def listing(api: httpx.AsyncClient, user: str, query: str = "") -> tuple[list[int], int]:
    answer = await api.get(f"/api/clients/{user}/notifications{query}", headers=bearer(user))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return [note["notificationID"] for note in body["notifications"]], body["unreadCount"]


async def badge(api: httpx.AsyncClient, user: str, query: str = "") -> int:
    answer = await api.get(
        f"/api/clients/{user}/notifications/unread-count{query}", headers=bearer(user)
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["unreadCount"])


async def test_a_muted_category_is_left_out_of_the_default_list_and_the_unread_count(
    api: httpx.AsyncClient,
) -> None:
    user = new_client_id()
    kept = await publish(api, user, "mentions")
    muted_before = await publish(api, user, "marketing")
    await mute(api, user, "marketing")
    muted_after = await publish(api, user, "marketing")

    assert await listing(api, user) == ([kept], 1)
    assert await badge(api, user) == 1
    assert await listing(api, user, "?status=unread") == ([kept], 1)
    assert await listing(api, user, "?category=marketing") == ([], 1)

    everything = [muted_after, muted_before, kept]
    assert await listing(api, user, "?muted=include") == (everything, 3)
    assert await badge(api, user, "?muted=include") == 3
    one = await api.get(f"/api/clients/{user}/notifications/{muted_after}", headers=bearer(user))
    assert one.status_code == 200  # stored, and reachable by its id

    await mute(api, user)
    assert await listing(api, user) == (everything, 3)


async def test_a_bad_muted_value_is_refused(api: httpx.AsyncClient) -> None:
    user = new_client_id()
    for path in ("/notifications?muted=all", "/notifications/unread-count?muted=yes"):
        answer = await api.get(f"/api/clients/{user}{path}", headers=bearer(user))
        assert answer.status_code == 400, answer.text
        assert "muted" in answer.json()["error"]
