"""/metrics of a real server: who may read it, and what it counts."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message, Receive, Scope, Send

from mercurio.api.app import create_app
from mercurio.api.layers import RequestContext
from mercurio.config import load_settings
from mercurio.fanout import LinkHealth, LocalFanout
from mercurio.hub import Hub
from mercurio.metrics import HttpTally, histogram
from mercurio.node import Node
from mercurio.stats import LatencyTally
from tests.conftest import PUBLISHER, ServerProcess, bearer, make_token, new_client_id
from tests.streams import open_stream

pytestmark = pytest.mark.timeout(60)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
METRICS_TOKEN = "scrape-key-0123456789abcdef"


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape(client: httpx.AsyncClient) -> Samples:
    answer = await client.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return parse(answer.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_without_a_key_only_loopback_clients_may_read(api: httpx.AsyncClient) -> None:
    assert (await api.get("/metrics")).status_code == 200
    # uvicorn trusts X-Forwarded-For from a loopback proxy: this is a remote client to the app.
    remote = await api.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert remote.status_code == 403
    assert remote.json() == {"error": "metrics are served to loopback clients only"}


async def test_with_a_key_the_bearer_key_is_required_even_on_loopback(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server({"MERCURIO_METRICS_TOKEN": METRICS_TOKEN})
    async with httpx.AsyncClient(base_url=server.url) as client:
        bare = await client.get("/metrics")
        assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer not-the-key"})
        assert wrong.status_code == 401
        user = await client.get("/metrics", headers=bearer("123"))
        assert user.status_code == 401  # a user's JWT is not the metrics key
        good = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert good.status_code == 200
        remote = await client.get(
            "/metrics",
            headers={"Authorization": f"Bearer {METRICS_TOKEN}", "X-Forwarded-For": "203.0.113.9"},
        )
        assert remote.status_code == 200
    assert "mercurio_open_streams" in good.text


@pytest.fixture
async def own(make_server: Callable[..., ServerProcess]) -> AsyncIterator[httpx.AsyncClient]:
    """A server of the test's own: an announcement reaches every user of its database."""
    server = make_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


async def test_streams_publishes_deliveries_and_replays_are_counted(
    own: httpx.AsyncClient,
) -> None:
    api = own
    client_id, other = new_client_id(), new_client_id()
    stream_url = f"/api/clients/{client_id}/notifications/stream"
    before = await scrape(api)
    async with open_stream(api, stream_url, headers=bearer(client_id)) as stream:
        during = await scrape(api)
        assert value(during, "mercurio_open_streams") >= value(before, "mercurio_open_streams") + 1
        for path, body in (
            ("unicast", {"destinationID": client_id}),
            ("broadcast", {"destinations": [client_id, other]}),
            ("announce", {}),
        ):
            answer = await api.post(
                f"/api/events/{path}",
                json={"sourceID": "m", "data": path, **body},
                headers=PUBLISHER,
            )
            assert answer.status_code == 200, answer.text
        assert [m.data["data"] for m in await stream.messages(3)] == [
            "unicast",
            "broadcast",
            "announce",
        ]
        after = await scrape(api)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    for kind in ("unicast", "broadcast", "announce"):
        assert delta("mercurio_publishes_total", kind=kind) == 1
    assert delta("mercurio_published_notifications_total", kind="broadcast") == 2
    assert delta("mercurio_publish_seconds_count") == 3
    assert delta("mercurio_publish_seconds_bucket", le="+Inf") == 3
    assert delta("mercurio_publish_seconds_sum") > 0
    assert delta("mercurio_deliveries_total", kind="direct") >= 2
    assert delta("mercurio_deliveries_total", kind="announce") >= 1
    assert delta("mercurio_publish_to_deliver_seconds_count") >= 1
    assert delta("mercurio_store_commits_total") >= 1
    assert ("mercurio_db_pool_checked_out", (("pool", "read"),)) in after

    # A client resuming from the start is replayed at least its three notifications.
    async with open_stream(
        api, stream_url, headers=bearer(client_id), params={"lastEventId": "0"}
    ) as stream:
        await stream.messages(3)
        replayed = await scrape(api)
    assert (
        value(replayed, "mercurio_replayed_notifications_total")
        - value(after, "mercurio_replayed_notifications_total")
        >= 3
    )
    deadline, baseline = time.monotonic() + 10, value(before, "mercurio_open_streams")
    while value(await scrape(api), "mercurio_open_streams") > baseline:
        assert time.monotonic() < deadline, "closed streams are still counted as open"
        await asyncio.sleep(0.05)


async def test_http_requests_and_refusals_are_counted_by_route_template(
    own: httpx.AsyncClient,
) -> None:
    api = own
    client_id = new_client_id()
    one = "/api/clients/{clientID}/notifications/{notificationID}"
    unicast = "/api/events/unicast"
    before = await scrape(api)
    body = {"sourceID": "m", "destinationID": client_id, "data": "x"}
    assert (await api.post(unicast, json=body, headers=PUBLISHER)).status_code == 200
    assert (await api.post(unicast, json=body)).status_code == 401
    assert (await api.post(unicast, json=body, headers=bearer(client_id))).status_code == 403
    assert (await api.post(unicast, json={**body, "data": "x" * 70_000})).status_code == 413
    assert (await api.post(unicast, json={"sourceID": "m"}, headers=PUBLISHER)).status_code == 422
    missing = f"/api/clients/{client_id}/notifications/999999999"
    assert (await api.get(missing, headers=bearer(client_id))).status_code == 404
    assert (await api.get("/no/such/route")).status_code == 404
    assert (await api.get("/docs/assets/swagger-ui.css")).status_code == 200
    assert (await api.get("/openapi.json")).status_code == 200
    after = await scrape(api)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "mercurio_http_requests_total"
    for status in ("200", "401", "403", "422"):
        assert delta(requests, method="POST", route=unicast, status=status) == 1, status
    # A body over the limit is refused before any route is chosen.
    assert delta(requests, method="POST", route="unmatched", status="413") == 1
    assert delta(requests, method="GET", route=one, status="404") == 1
    assert delta(requests, method="GET", route="unmatched", status="404") == 1
    assert delta(requests, method="GET", route="/docs/assets/{path}", status="200") == 1
    assert delta(requests, method="GET", route="/openapi.json", status="200") == 1
    # The scrape before this one was counted once it was answered.
    assert delta(requests, method="GET", route="/metrics", status="200") == 1
    refusals = "mercurio_http_refusals_total"
    for reason in ("unauthenticated", "forbidden", "invalid"):
        assert delta(refusals, route=unicast, reason=reason) == 1, reason
    assert delta(refusals, route="unmatched", reason="too_large") == 1
    assert delta(refusals, route=one, reason="not_found") == 1
    assert value(after, refusals, route="/metrics", reason="not_found") == 0


@pytest.mark.timeout(90)
async def test_a_reader_that_stops_reading_is_counted_as_a_slow_disconnect(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server({"MERCURIO_STREAM_BUFFER": "2"})
    client_id = new_client_id()
    # A raw socket with a tiny receive buffer that never reads: the server's writes stall.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    request = (
        f"GET /api/clients/{client_id}/notifications/stream HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {make_token(client_id)}\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            deadline = time.monotonic() + 10
            while value(await scrape(client), "mercurio_open_streams") < 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            big = "x" * 50_000
            for _ in range(400):
                answer = await client.post(
                    "/api/events/unicast",
                    json={"sourceID": "m", "destinationID": client_id, "data": big},
                    headers=PUBLISHER,
                )
                assert answer.status_code == 200
                if value(await scrape(client), "mercurio_slow_reader_disconnects_total") >= 1:
                    break
            samples = await scrape(client)
    finally:
        sock.close()
    assert value(samples, "mercurio_slow_reader_disconnects_total") == 1
    assert value(samples, "mercurio_open_streams") == 0


async def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/metrics.db"
    settings = load_settings({"MERCURIO_ENV": "test", "MERCURIO_DB_CONN": db})
    first, second = create_app(Node(settings)), create_app(Node(settings))
    for app in (first, second):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            samples = await scrape(client)
        assert value(samples, "mercurio_open_streams") == 0
        assert value(samples, "mercurio_publishes_total", kind="unicast") == 0


async def test_a_remote_client_is_refused_in_process_too() -> None:
    app = create_app(Node(load_settings({"MERCURIO_ENV": "test"})))
    for host, status in (("10.1.2.3", 403), ("::1", 200), ("127.0.0.1", 200)):
        transport = httpx.ASGITransport(app=app, client=(host, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/metrics")).status_code == status


async def test_an_answer_is_counted_before_its_app_finishes_after_the_last_byte() -> None:
    """A file answer closes its file in a thread after its last byte: CI read /metrics first."""
    tally = HttpTally()
    closing = asyncio.Event()

    async def answers_then_closes_a_file(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asset"})
        await closing.wait()

    last_byte_sent = asyncio.Event()

    async def collect(message: Message) -> None:
        if message["type"] == "http.response.body":
            last_byte_sent.set()

    async def nothing() -> Message:
        return {"type": "http.disconnect"}

    scope: Scope = {"type": "http", "method": "GET", "path": "/docs/assets/a.css", "headers": []}
    app = RequestContext(answers_then_closes_a_file, "node-1", tally)
    answering = asyncio.create_task(app(scope, nothing, collect))
    await asyncio.wait_for(last_byte_sent.wait(), 10)
    assert tally.answers == {("GET", "/docs/assets/{path}", 200): 1}
    closing.set()
    await answering
    assert tally.answers == {("GET", "/docs/assets/{path}", 200): 1}, "counted twice"


class _LinkedFanout(LocalFanout):
    """A fan-out whose link to other nodes reports itself through health()."""

    link = LinkHealth(connected=False, reconnects=3)

    def health(self) -> LinkHealth:
        return self.link


def test_broker_state_and_reconnects_come_from_the_fanout() -> None:
    node = Node(load_settings({"MERCURIO_ENV": "test"}), fanout=_LinkedFanout(Hub()))
    samples = parse(node.metrics.render().decode())
    assert value(samples, "mercurio_broker_up") == 0
    assert value(samples, "mercurio_broker_reconnects_total") == 3
    _LinkedFanout.link = LinkHealth(connected=True, reconnects=3)
    assert value(parse(node.metrics.render().decode()), "mercurio_broker_up") == 1


def test_a_node_without_a_broker_exports_no_broker_gauge() -> None:
    text = Node(load_settings({"MERCURIO_ENV": "test"})).metrics.render().decode()
    assert "mercurio_broker_up" not in text


def test_latency_buckets_are_cumulative_and_inclusive() -> None:
    tally = LatencyTally((0.001, 0.01))
    for seconds in (0.0005, 0.001, 0.005, 0.5):
        tally.observe(seconds)
    family = histogram(tally, "x_seconds", "test")
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == "x_seconds_bucket"}
    assert buckets == {"0.001": 2, "0.01": 3, "+Inf": 4}
    assert tally.total == pytest.approx(0.5065)
