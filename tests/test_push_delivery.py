"""Web Push delivery (issue 12), from a real server process to a strict mock push service.

The mock (tests/push_service.py) checks the VAPID signature and decrypts every push, so a
push that arrives here is one a browser's push service would take.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PUBLISHER, ServerProcess, bearer, new_client_id, postgres_database
from tests.helpers import until
from tests.push_service import MockPushService, PushDevice

pytestmark = pytest.mark.timeout(120)


def push_env(**extra: str) -> dict[str, str]:
    return {"MERCURIO_PUSH_ENDPOINT_HOSTS": "127.0.0.1", "MERCURIO_NID": "push-a", **extra}


@pytest.fixture
async def service() -> AsyncIterator[MockPushService]:
    async with MockPushService() as running:
        yield running


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


class Api:
    """The server's HTTP API, asynchronously (the mock push service shares this loop)."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.http = httpx.AsyncClient(base_url=server.url, timeout=10)
        OPEN_APIS.append(self)

    async def register(self, user: str, device: PushDevice) -> int:
        answer = await self.http.post(
            f"/api/clients/{user}/push-subscriptions",
            json=device.subscription_json(),
            headers=bearer(user),
        )
        assert answer.status_code == 201, answer.text
        return int(answer.json()["id"])

    async def subscriptions(self, user: str) -> list[dict[str, Any]]:
        answer = await self.http.get(
            f"/api/clients/{user}/push-subscriptions", headers=bearer(user)
        )
        assert answer.status_code == 200, answer.text
        return list(answer.json()["subscriptions"])

    async def unicast(self, user: str, data: Any, category: str | None = None) -> int:
        body: dict[str, Any] = {"sourceID": "tests", "destinationID": user, "data": data}
        if category is not None:
            body["category"] = category
        answer = await self.http.post("/api/events/unicast", json=body, headers=PUBLISHER)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["notificationID"])

    async def announce(self, data: Any) -> int:
        body = {"sourceID": "tests", "destinations": ["*"], "data": data}
        answer = await self.http.post("/api/events/broadcast", json=body, headers=PUBLISHER)
        assert answer.status_code == 200, answer.text
        return int(answer.json()[0]["notificationID"])

    async def close(self) -> None:
        await self.http.aclose()


OPEN_APIS: list[Api] = []
"""Closed when the test's servers stop: a test that failed before its own close() left its
client's sockets to the garbage collector, whose ResourceWarning then failed another test."""


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    yield servers
    while OPEN_APIS:
        await OPEN_APIS.pop().close()
    for server in servers:
        server.stop(signal.SIGKILL)


async def start(started: list[ServerProcess], folder: Path, env: dict[str, str]) -> Api:
    server = ServerProcess.in_folder(folder, env)
    await asyncio.to_thread(server.start)  # the loop keeps serving the mock meanwhile
    started.append(server)
    return Api(server)


async def metric_shows(api: Api, line: str, timeout: float = 10.0) -> None:
    """Until /metrics has the line (what the dispatcher decided, for pushes never sent)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while line not in (await api.http.get("/metrics")).text:
        assert asyncio.get_running_loop().time() < deadline, f"/metrics never showed {line}"
        await asyncio.sleep(0.05)


def pushed_ids(service: MockPushService, device: PushDevice | None = None) -> list[int]:
    return [
        r.json()["notificationID"] for r in service.received if device is None or r.device is device
    ]


async def test_push_reaches_every_subscription_decrypted_and_signed_with_the_published_key(
    service: MockPushService, started: list[ServerProcess], tmp_path: Path
) -> None:
    api = await start(started, tmp_path, push_env())
    user, bystander = new_client_id(), new_client_id()
    phone, laptop, other = service.device(), service.device(), service.device()
    for device in (phone, laptop):
        await api.register(user, device)
    await api.register(bystander, other)
    key = (await api.http.get("/api/push/vapid-public-key", headers=bearer(user))).json()
    data = {"title": "Invoice paid", "body": "€12 <b>thanks</b>", "url": "/app/"}
    note_id = await api.unicast(user, data, category="billing")

    received = await service.wait_for(2)
    assert {r.device.endpoint for r in received} == {phone.endpoint, laptop.endpoint}
    for push in received:
        body = push.json()
        assert set(body) == {"notificationID", "clientID", "category", "data", "createdAt"}
        assert (body["notificationID"], body["clientID"]) == (note_id, user)
        assert (body["category"], body["data"]) == ("billing", data)
        assert body["createdAt"].endswith("Z")
        assert push.vapid_public_key == key["publicKey"]
        assert push.vapid_claims["sub"].startswith("mailto:")
        assert 0 < push.ttl <= 24 * 3600
        assert push.urgency == "normal" and push.topic == f"n{note_id}"
    assert pushed_ids(service, other) == []
    await api.close()


async def test_a_collapse_key_is_the_push_topic_so_the_push_service_keeps_only_the_newest(
    service: MockPushService, started: list[ServerProcess], tmp_path: Path
) -> None:
    api = await start(started, tmp_path, push_env())
    user = new_client_id()
    await api.register(user, service.device())
    topics = []
    for text in ("3 new messages", "5 new messages"):
        body = {"sourceID": "tests", "destinationID": user, "data": text, "collapseKey": "inbox"}
        answer = await api.http.post("/api/events/unicast", json=body, headers=PUBLISHER)
        assert answer.status_code == 200, answer.text
        (push,) = await service.wait_for(1)
        topics.append(push.topic)
        service.received.clear()
    assert topics[0] == topics[1] and topics[0] is not None and topics[0].startswith("k")
    plain = await api.unicast(user, "no key")
    (push,) = await service.wait_for(1)
    assert push.topic == f"n{plain}"
    await api.close()


async def test_announcement_is_pushed_to_every_subscribed_user(
    service: MockPushService, started: list[ServerProcess], tmp_path: Path
) -> None:
    api = await start(started, tmp_path, push_env())
    devices = {new_client_id(): service.device() for _ in range(3)}
    for user, device in devices.items():
        await api.register(user, device)
    note_id = await api.announce("maintenance tonight")
    received = await service.wait_for(3)
    assert sorted(r.json()["clientID"] for r in received) == sorted(devices)
    assert {r.json()["notificationID"] for r in received} == {note_id}
    assert {r.json()["data"] for r in received} == {"maintenance tonight"}
    await api.close()


async def test_escalation_pushes_only_what_is_still_unread_undeleted_and_unmuted(
    service: MockPushService, started: list[ServerProcess], tmp_path: Path
) -> None:
    api = await start(started, tmp_path, push_env(MERCURIO_PUSH_DELAY="2"))
    user = new_client_id()
    device = service.device()
    await api.register(user, device)
    prefs = await api.http.put(
        f"/api/clients/{user}/preferences",
        json={"mutedCategories": ["social"]},
        headers=bearer(user),
    )
    assert prefs.status_code == 200
    read = await api.unicast(user, "read in a tab")
    deleted = await api.unicast(user, "deleted in a tab")
    await api.unicast(user, "muted", category="social")
    owed = await api.unicast(user, "still unread")
    mark = await api.http.put(
        f"/api/clients/{user}/notifications/{read}/read", headers=bearer(user)
    )
    gone = await api.http.delete(
        f"/api/clients/{user}/notifications/{deleted}", headers=bearer(user)
    )
    assert mark.status_code == 200 and gone.status_code == 200
    assert service.received == []  # nothing before the delay runs out
    await service.wait_for(1)
    # The owed one was due last: by the time it arrived every earlier one was decided.
    await until(lambda: len(service.attempts) >= 1)
    assert pushed_ids(service) == [owed]
    await api.close()


async def test_data_too_large_for_a_push_becomes_a_truncated_stub(
    service: MockPushService, started: list[ServerProcess], tmp_path: Path
) -> None:
    api = await start(started, tmp_path, push_env())
    user = new_client_id()
    await api.register(user, service.device())
    note_id = await api.unicast(user, {"text": "x" * 6000})
    [push] = await service.wait_for(1)
    body = push.json()
    assert body["truncated"] is True and "data" not in body
    assert body["notificationID"] == note_id
    await api.close()


async def test_429_with_retry_after_and_500_are_retried_until_delivered_once(
    service: MockPushService, started: list[ServerProcess], tmp_path: Path
) -> None:
    api = await start(started, tmp_path, push_env())
    user = new_client_id()
    device = service.device()
    await api.register(user, device)
    service.script(device, (429, {"Retry-After": "1"}), 503)
    note_id = await api.unicast(user, "eventually")
    await service.wait_for(1, timeout=30)
    assert [status for d, status in service.attempts if d is device] == [429, 503, 201]
    assert pushed_ids(service, device) == [note_id]
    assert len(await api.subscriptions(user)) == 1  # never pruned for 429 or 5xx
    # The mock has the push before the server has its 201 and counts it sent: wait for that.
    await metric_shows(api, 'mercurio_channel_deliveries_total{channel="push",result="sent"} 1.0')
    metrics = (await api.http.get("/metrics")).text
    assert 'mercurio_channel_deliveries_total{channel="push",result="retried"} 2.0' in metrics
    await api.close()


async def test_gone_subscription_is_pruned_and_never_pushed_again(
    service: MockPushService, started: list[ServerProcess], tmp_path: Path
) -> None:
    api = await start(started, tmp_path, push_env())
    user = new_client_id()
    gone, kept = service.device(), service.device()
    await api.register(user, gone)
    await api.register(user, kept)
    service.script(gone, 410)
    await api.unicast(user, "first")
    await service.wait_for(1)
    await until(lambda: len(service.attempts) >= 2)
    deadline = asyncio.get_running_loop().time() + 10
    while len(subscriptions := await api.subscriptions(user)) > 1:  # pruned after the answer
        assert asyncio.get_running_loop().time() < deadline, "the 410 never pruned"
        await asyncio.sleep(0.05)
    assert [s["endpoint"] for s in subscriptions] == [kept.endpoint]
    await api.unicast(user, "second")
    await service.wait_for(2)
    assert [status for d, status in service.attempts if d is gone] == [410]
    await api.close()


async def test_other_4xx_drops_that_push_but_keeps_the_subscription(
    service: MockPushService, started: list[ServerProcess], tmp_path: Path
) -> None:
    api = await start(started, tmp_path, push_env())
    user = new_client_id()
    device = service.device()
    await api.register(user, device)
    service.script(device, 400)
    await api.unicast(user, "refused")
    await until(lambda: len(service.attempts) >= 1)  # sent one at a time: the 400 is the first's
    second = await api.unicast(user, "taken")
    await service.wait_for(1)
    assert pushed_ids(service, device) == [second]
    assert [status for d, status in service.attempts if d is device] == [400, 201]
    assert len(await api.subscriptions(user)) == 1
    await api.close()


async def test_kill_9_mid_send_then_restart_sends_each_owed_push_exactly_once(
    service: MockPushService, started: list[ServerProcess], tmp_path: Path
) -> None:
    api = await start(started, tmp_path, push_env())
    user = new_client_id()
    device = service.device()
    await api.register(user, device)
    before = [await api.unicast(user, f"before {i}") for i in range(3)]
    await service.wait_for(3)
    # Sent means answered and recorded: a push the node had not yet recorded when killed is
    # sent again (the duplicate window that Topic and the tag collapse), which is not this test.
    await metric_shows(api, 'mercurio_channel_deliveries_total{channel="push",result="sent"} 3.0')
    service.hold(True)  # the push service takes the next requests and never answers
    held = [await api.unicast(user, f"held {i}") for i in range(4)]
    await service.wait_for_held(4)  # every one is on the push service's side: none in flight
    started[0].stop(signal.SIGKILL)
    await api.close()
    service.hold(False)

    api = await start(started, tmp_path, push_env())
    await service.wait_for(7, timeout=30)
    await metric_shows(api, 'mercurio_channel_deliveries_total{channel="push",result="sent"} 4.0')
    assert sorted(pushed_ids(service, device)) == sorted(before + held)  # none twice, none lost
    await api.close()


async def test_a_push_service_that_never_answers_one_user_does_not_hold_back_the_others(
    service: MockPushService, started: list[ServerProcess], tmp_path: Path
) -> None:
    api = await start(started, tmp_path, push_env())
    stuck_user, other_user = new_client_id(), new_client_id()
    stuck, other = service.device(), service.device()
    await api.register(stuck_user, stuck)
    await api.register(other_user, other)
    service.hold_for(stuck)
    await api.unicast(stuck_user, "never answered")
    await service.wait_for_held(1)
    sent = await api.unicast(other_user, "must not wait for the stuck one")
    await service.wait_for(1, timeout=30)
    assert pushed_ids(service, other) == [sent]
    # Before, the loop waited for its whole batch: the other push went out only once the
    # stuck request had timed out and been put back for a retry.
    metrics = (await api.http.get("/metrics")).text
    assert 'mercurio_channel_deliveries_total{channel="push",result="retried"} 0.0' in metrics
    await api.close()


@pytest.mark.postgres
async def test_two_nodes_on_one_database_send_each_push_once(
    service: MockPushService, started: list[ServerProcess], tmp_path: Path, pg_url: str
) -> None:
    nodes = []
    for name in ("node-a", "node-b"):
        (tmp_path / name).mkdir()
        env = push_env(MERCURIO_DB_CONN=pg_url, MERCURIO_NID=name)
        nodes.append(await start(started, tmp_path / name, env))
    users = [new_client_id() for _ in range(4)]
    for user in users:
        await nodes[0].register(user, service.device())
    published = [await nodes[i % 2].unicast(user, i) for i, user in enumerate(users * 5)]
    await service.wait_for(len(published), timeout=60)
    assert sorted(pushed_ids(service)) == sorted(published)
    for node in nodes:
        await node.close()


async def test_endpoint_host_delisted_after_registration_is_not_pushed_to(
    service: MockPushService, started: list[ServerProcess], tmp_path: Path
) -> None:
    api = await start(started, tmp_path, push_env())
    user = new_client_id()
    await api.register(user, service.device())
    started[0].stop()
    await api.close()
    api = await start(
        started, tmp_path, push_env(MERCURIO_PUSH_ENDPOINT_HOSTS="fcm.googleapis.com")
    )
    second = new_client_id()
    await api.unicast(user, "to a host no longer allowed")
    await api.unicast(second, "fence")  # a user without subscriptions: nothing to send
    await metric_shows(api, 'mercurio_channel_deliveries_total{channel="push",result="failed"} 1.0')
    assert service.attempts == []  # re-checked at send: no request left the server
    await api.close()


async def test_endpoint_registered_again_by_another_user_stops_the_first_users_pushes(
    service: MockPushService, started: list[ServerProcess], tmp_path: Path
) -> None:
    api = await start(started, tmp_path, push_env())
    first, second = new_client_id(), new_client_id()
    device = service.device()
    await api.register(first, device)
    await api.register(second, device)  # another person signed in on that browser
    assert await api.subscriptions(first) == []
    await api.unicast(first, "for the first user")
    mine = await api.unicast(second, "for the second user")
    await service.wait_for(1)
    await until(lambda: len(service.attempts) >= 1)
    assert pushed_ids(service) == [mine]
    assert [r.json()["clientID"] for r in service.received] == [second]
    await api.close()


async def test_metrics_show_the_queue_depth_and_the_age_of_the_oldest_owed_push(
    service: MockPushService, started: list[ServerProcess], tmp_path: Path
) -> None:
    api = await start(started, tmp_path, push_env(MERCURIO_PUSH_DELAY="3600"))
    user = new_client_id()
    await api.register(user, service.device())
    await metric_shows(api, 'mercurio_channel_queue_depth{channel="push"} 0.0')
    for i in range(2):
        await api.unicast(user, f"owed {i}")
    await metric_shows(api, 'mercurio_channel_queue_depth{channel="push"} 2.0')
    age = metric_value(
        (await api.http.get("/metrics")).text, "mercurio_channel_oldest_owed_seconds"
    )
    assert 0 < age < 3600  # owed since the first publish, not yet due
    assert service.received == []
    await api.close()


def metric_value(text: str, name: str, channel: str = "push") -> float:
    prefix = f'{name}{{channel="{channel}"}} '
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(line.removeprefix(prefix))


async def test_a_notification_that_expires_before_the_delay_runs_out_is_not_pushed(
    service: MockPushService, started: list[ServerProcess], tmp_path: Path
) -> None:
    api = await start(started, tmp_path, push_env(MERCURIO_PUSH_DELAY="2"))
    user = new_client_id()
    device = service.device()
    await api.register(user, device)
    body = {"sourceID": "tests", "destinationID": user, "data": "brief", "ttl": 1}
    answer = await api.http.post("/api/events/unicast", json=body, headers=PUBLISHER)
    assert answer.status_code == 200, answer.text
    lasting = await api.unicast(user, "lasting")
    await service.wait_for(1, timeout=30)
    await metric_shows(
        api, 'mercurio_channel_deliveries_total{channel="push",result="dropped"} 1.0'
    )
    assert pushed_ids(service, device) == [lasting]
    await api.close()
