"""The prototype's contract, walked against a real server over real sockets."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import PUBLISHER, bearer, new_client_id
from tests.streams import open_stream

pytestmark = pytest.mark.timeout(60)


async def test_welcome(api: httpx.AsyncClient) -> None:
    answer = await api.get("/")
    assert answer.status_code == 200
    assert answer.json() == {"message": "Welcome to Mercurio"}


async def test_prototype_happy_path_with_development_tokens(api: httpx.AsyncClient) -> None:
    """Empty list for 123, unicast from 666, get, list, read, unread; 456 refused; streamed."""
    from pathlib import Path

    auth = Path(__file__).resolve().parent.parent / "auth"
    user = {"Authorization": f"Bearer {(auth / '123.jwt').read_text().strip()}"}
    other = {"Authorization": f"Bearer {(auth / '456.jwt').read_text().strip()}"}
    publisher = {"Authorization": f"Bearer {(auth / '666.jwt').read_text().strip()}"}
    base = "/api/clients/123/notifications"
    # The shared server may already hold 123's notifications from another test: take a mark.
    before = (await api.get(base, headers=user)).json()
    assert before["clientID"] == "123"
    known = {n["notificationID"] for n in before["notifications"]}

    async with open_stream(api, f"{base}/stream", headers=user) as stream:
        assert stream.status == 200
        published = await api.post(
            "/api/events/unicast",
            json={"sourceID": "666", "destinationID": "123", "data": "hello 123"},
            headers=publisher,
        )
        assert published.status_code == 200, published.text
        body = published.json()
        assert set(body) == {"notificationID", "eventID"}
        nid = body["notificationID"]
        assert isinstance(nid, int) and nid not in known
        pushed = await stream.next_message()
        assert pushed.id == str(nid)
        assert pushed.data["notificationID"] == nid
        assert pushed.data["eventID"] == body["eventID"]
        assert pushed.data["sourceID"] == "666"
        assert pushed.data["clientID"] == "123"
        assert pushed.data["data"] == "hello 123"

    one = await api.get(f"{base}/{nid}", headers=user)
    assert one.status_code == 200
    assert one.json()["data"] == "hello 123"
    assert "readAt" not in one.json()

    listed = (await api.get(base, headers=user)).json()
    assert listed["notifications"][0]["notificationID"] == nid

    read = await api.put(f"{base}/{nid}/read", headers=user)
    assert read.json() == {"status": "read"}
    assert "readAt" in (await api.get(f"{base}/{nid}", headers=user)).json()
    assert nid in [
        n["notificationID"]
        for n in (await api.get(base, params={"status": "read"}, headers=user)).json()[
            "notifications"
        ]
    ]
    unread = await api.put(f"{base}/{nid}/unread", headers=user)
    assert unread.json() == {"status": "unread"}
    assert "readAt" not in (await api.get(f"{base}/{nid}", headers=user)).json()

    for method, path in [
        ("GET", base),
        ("GET", f"{base}/{nid}"),
        ("PUT", f"{base}/{nid}/read"),
        ("GET", f"{base}/stream"),
    ]:
        refused = await api.request(method, path, headers=other)
        assert refused.status_code == 403, (method, path)
        assert "error" in refused.json()


async def test_three_streams_of_one_user_all_receive(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    url = f"/api/clients/{client}/notifications/stream"
    async with (
        open_stream(api, url, headers=bearer(client)) as first,
        open_stream(api, url, headers=bearer(client)) as second,
        open_stream(api, url, headers=bearer(client)) as third,
    ):
        answer = await api.post(
            "/api/events/unicast",
            json={"sourceID": "s", "destinationID": client, "data": {"n": 1}},
            headers=PUBLISHER,
        )
        nid = answer.json()["notificationID"]
        got = await asyncio.gather(
            first.next_message(), second.next_message(), third.next_message()
        )
        assert [g.data["notificationID"] for g in got] == [nid, nid, nid]
        assert all(g.data["data"] == {"n": 1} for g in got)


async def test_broadcast_stores_one_per_destination_and_pushes_each(api: httpx.AsyncClient) -> None:
    a, b = new_client_id(), new_client_id()
    async with (
        open_stream(api, f"/api/clients/{a}/notifications/stream", headers=bearer(a)) as sa,
        open_stream(api, f"/api/clients/{b}/notifications/stream", headers=bearer(b)) as sb,
    ):
        answer = await api.post(
            "/api/events/broadcast",
            json={"id": "evt-b1", "sourceID": "s", "destinations": [a, b], "data": "hi all"},
            headers=PUBLISHER,
        )
        assert answer.status_code == 200
        body = answer.json()
        assert [x["eventID"] for x in body] == ["evt-b1", "evt-b1"]
        assert len({x["notificationID"] for x in body}) == 2
        assert (await sa.next_message()).data["notificationID"] == body[0]["notificationID"]
        assert (await sb.next_message()).data["notificationID"] == body[1]["notificationID"]


async def test_event_id_made_when_absent_and_json_data_round_trips(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    data = {"title": "Ünïcode ✓", "n": [1, 2.5, None, True], "nested": {"x": "y"}}
    answer = await api.post(
        "/api/events/unicast",
        json={"sourceID": "s", "destinationID": client, "data": data},
        headers=PUBLISHER,
    )
    body = answer.json()
    assert len(body["eventID"]) == 36  # a UUID
    got = await api.get(
        f"/api/clients/{client}/notifications/{body['notificationID']}", headers=bearer(client)
    )
    assert got.json()["data"] == data


async def test_publish_without_json_content_type_is_read_as_json(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    answer = await api.post(
        "/api/events/unicast",
        content=f'{{"sourceID": "s", "destinationID": "{client}", "data": "curl -d"}}',
        headers={**PUBLISHER, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200, answer.text


async def test_only_publishers_publish(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    body = {"sourceID": "s", "destinationID": client, "data": "x"}
    plain = await api.post("/api/events/unicast", json=body, headers=bearer("123"))
    assert plain.status_code == 403
    assert "publish" in plain.json()["error"]
    none = await api.post("/api/events/unicast", json=body)
    assert none.status_code == 401
    role = await api.post("/api/events/unicast", json=body, headers=bearer("svc", publisher=True))
    assert role.status_code == 200
    listed = await api.get(f"/api/clients/{client}/notifications", headers=bearer(client))
    assert len(listed.json()["notifications"]) == 1


async def test_another_clients_notification_is_not_found_on_own_route(
    api: httpx.AsyncClient,
) -> None:
    owner, intruder = new_client_id(), new_client_id()
    nid = (
        await api.post(
            "/api/events/unicast",
            json={"sourceID": "s", "destinationID": owner, "data": "secret"},
            headers=PUBLISHER,
        )
    ).json()["notificationID"]
    base = f"/api/clients/{intruder}/notifications/{nid}"
    for method, path in [
        ("GET", base),
        ("PUT", f"{base}/read"),
        ("PUT", f"{base}/unread"),
        ("DELETE", base),
    ]:
        answer = await api.request(method, path, headers=bearer(intruder))
        assert answer.status_code == 404, (method, path)
        assert answer.json() == {"error": "notification not found"}
    mine = await api.get(f"/api/clients/{owner}/notifications/{nid}", headers=bearer(owner))
    assert mine.status_code == 200
    assert "readAt" not in mine.json()  # the intruder's PUT read changed nothing


async def test_paging_newest_first_with_before_cursor(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    answer = await api.post(
        "/api/events/broadcast",
        json={"sourceID": "s", "destinations": [client], "data": 0},
        headers=PUBLISHER,
    )
    ids = [answer.json()[0]["notificationID"]]
    for i in range(1, 7):
        answer = await api.post(
            "/api/events/unicast",
            json={"sourceID": "s", "destinationID": client, "data": i},
            headers=PUBLISHER,
        )
        ids.append(answer.json()["notificationID"])
    url = f"/api/clients/{client}/notifications"
    first = (await api.get(url, params={"limit": 3}, headers=bearer(client))).json()
    assert [n["notificationID"] for n in first["notifications"]] == ids[::-1][:3]
    assert first["unreadCount"] == 7
    assert first["nextBefore"] == ids[-3]
    second = (
        await api.get(
            url, params={"limit": 3, "before": first["nextBefore"]}, headers=bearer(client)
        )
    ).json()
    assert [n["notificationID"] for n in second["notifications"]] == ids[::-1][3:6]
    third = (
        await api.get(
            url, params={"limit": 3, "before": second["nextBefore"]}, headers=bearer(client)
        )
    ).json()
    assert [n["notificationID"] for n in third["notifications"]] == ids[:1]
    assert third["nextBefore"] is None


async def test_status_filter_and_unread_count(api: httpx.AsyncClient) -> None:
    client = new_client_id()
    ids = [
        (
            await api.post(
                "/api/events/unicast",
                json={"sourceID": "s", "destinationID": client, "data": i},
                headers=PUBLISHER,
            )
        ).json()["notificationID"]
        for i in range(3)
    ]
    me = bearer(client)
    await api.put(f"/api/clients/{client}/notifications/{ids[0]}/read", headers=me)
    url = f"/api/clients/{client}/notifications"
    read = (await api.get(url, params={"status": "read"}, headers=me)).json()
    unread = (await api.get(url, params={"status": "unread"}, headers=me)).json()
    assert [n["notificationID"] for n in read["notifications"]] == [ids[0]]
    assert [n["notificationID"] for n in unread["notifications"]] == ids[:0:-1]
    count = (await api.get(f"{url}/unread-count", headers=me)).json()
    assert count == {"clientID": client, "unreadCount": 2}
