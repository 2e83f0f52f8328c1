"""Abuse limits of a real server: streams per client, publish rate, CORS, security headers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from mercurio.api.app import create_app
from mercurio.config import load_settings
from mercurio.errors import ConfigError
from mercurio.limits import RateLimiter, retry_after
from mercurio.node import Node
from tests.conftest import ServerProcess, bearer, new_client_id
from tests.streams import open_stream

pytestmark = pytest.mark.timeout(60)

ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Two streams per client, three publishes saved up and one more every 100 s."""
    folder = tmp_path_factory.mktemp("limits")
    server = ServerProcess.in_folder(
        folder,
        {
            "MERCURIO_MAX_STREAMS_PER_CLIENT": "2",
            "MERCURIO_PUBLISH_RATE": "0.01",
            "MERCURIO_PUBLISH_BURST": "3",
            "MERCURIO_PUBLISHERS": "p1,p2,p3,p4",
            "MERCURIO_CORS_ALLOWED_ORIGINS": ORIGIN,
            "MERCURIO_SSE_HEARTBEAT": "1",
        },
    ).start()
    yield server
    server.stop()


@pytest.fixture
async def client(limited: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=limited.url, timeout=10) as client:
        yield client


async def test_a_stream_over_the_cap_is_refused_and_the_open_ones_keep_going(
    client: httpx.AsyncClient,
) -> None:
    client_id, other = new_client_id(), new_client_id()
    url = f"/api/clients/{client_id}/notifications/stream"
    async with open_stream(client, url, bearer(client_id)) as first:
        async with open_stream(client, url, bearer(client_id)) as second:
            assert first.status == second.status == 200
            refused = await client.get(url, headers=bearer(client_id))
            assert refused.status_code == 429
            assert refused.json() == {"error": "too many open streams: at most 2 per client"}
            assert int(refused.headers["retry-after"]) >= 1
            # The cap is per client: another one is not affected.
            async with open_stream(
                client, f"/api/clients/{other}/notifications/stream", bearer(other)
            ) as elsewhere:
                assert elsewhere.status == 200
            # The two open streams were not disturbed: both still deliver.
            assert (await _publish(client, "p4", destinationID=client_id)).status_code == 200
            await first.next_message()
            await second.next_message()
        # Once one closes, a new one is welcome (as soon as the server saw the close).
        deadline = time.monotonic() + 10
        while True:
            async with open_stream(client, url, bearer(client_id)) as third:
                if third.status == 200:
                    break
            assert time.monotonic() < deadline, "the closed stream still counts"
            await asyncio.sleep(0.1)


async def _publish(client: httpx.AsyncClient, publisher: str, **body: object) -> httpx.Response:
    path = "broadcast" if "destinations" in body else "unicast"
    return await client.post(
        f"/api/events/{path}",
        json={"sourceID": publisher, "data": "x", **body},
        headers=bearer(publisher, publisher=True),
    )


async def test_a_publisher_over_its_rate_gets_429_with_retry_after_and_nothing_stored(
    client: httpx.AsyncClient,
) -> None:
    client_id = new_client_id()
    for _ in range(3):
        assert (await _publish(client, "p1", destinationID=client_id)).status_code == 200
    refused = await _publish(client, "p1", destinationID=client_id)
    assert refused.status_code == 429
    assert refused.json() == {"error": "publish rate limit exceeded"}
    assert 1 <= int(refused.headers["retry-after"]) <= 100
    stored = await client.get(f"/api/clients/{client_id}/notifications", headers=bearer(client_id))
    assert len(stored.json()["notifications"]) == 3
    # Another publisher has its own bucket.
    assert (await _publish(client, "p2", destinationID=client_id)).status_code == 200


async def test_a_broadcast_costs_one_token_whatever_its_size(client: httpx.AsyncClient) -> None:
    destinations = [new_client_id() for _ in range(5)]
    wide = await _publish(client, "p3", destinations=destinations)
    assert wide.status_code == 200 and len(wide.json()) == 5
    assert (await _publish(client, "p3", destinations=destinations[:2])).status_code == 200
    assert (await _publish(client, "p3", destinationID=destinations[0])).status_code == 200
    assert (await _publish(client, "p3", destinations=destinations)).status_code == 429


async def test_security_headers_on_json_answers_and_errors(client: httpx.AsyncClient) -> None:
    stream = f"/api/clients/{new_client_id()}/notifications/stream"
    for answer in (
        await client.get("/"),
        await client.get("/no/such/route"),
        await client.get(stream),  # the raw stream endpoint's 401
        await client.get("/healthz"),
    ):
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-frame-options"] == "DENY"


async def test_the_web_app_html_carries_a_same_origin_content_security_policy(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/app/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = {
        part.split()[0]: part.split()[1:]
        for part in page.headers["content-security-policy"].split("; ")
    }
    assert policy["default-src"] == ["'none'"]
    for directive in ("script-src", "style-src", "connect-src"):
        assert policy[directive] == ["'self'"]  # modules, the stylesheet, fetch and EventSource
    assert policy["frame-ancestors"] == ["'none'"]
    assert page.headers["x-frame-options"] == "DENY"
    # The API docs carry their own policy: our Swagger UI assets and its inline set-up script.
    docs = (await client.get("/docs")).headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in docs and "frame-ancestors 'none'" in docs


async def test_cors_allows_credentials_for_an_explicit_origin(client: httpx.AsyncClient) -> None:
    preflight = await client.options(
        "/api/events/unicast",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert preflight.headers["access-control-allow-credentials"] == "true"
    simple = await client.get("/", headers={"Origin": ORIGIN})
    exposed = simple.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed and "retry-after" in exposed
    stranger = await client.get("/", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in stranger.headers


async def test_cors_with_any_origin_never_allows_credentials() -> None:
    settings = load_settings({"MERCURIO_ENV": "test", "MERCURIO_CORS_ALLOWED_ORIGINS": "*"})
    transport = httpx.ASGITransport(app=create_app(Node(settings)))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        preflight = await client.options(
            "/api/events/unicast",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        )
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in preflight.headers


def test_a_bucket_refills_at_its_rate_and_saves_up_to_its_burst() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0])
    assert [limiter.take("p") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("p") == pytest.approx(0.5)  # half a second to the next token
    now[0] = 0.5
    assert limiter.take("p") == 0.0
    now[0] = 100.0  # a long pause saves up the burst, not more
    assert [limiter.take("p") for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.5)]
    assert retry_after(0.01) == "1" and retry_after(2.2) == "3"


def test_a_rate_of_zero_turns_the_limit_off() -> None:
    limiter = RateLimiter(0, 1)
    assert all(limiter.take("p") == 0.0 for _ in range(1000))


def test_buckets_of_quiet_publishers_are_forgotten() -> None:
    now = [0.0]
    limiter = RateLimiter(1.0, 2, clock=lambda: now[0], max_keys=10)
    for index in range(10):
        limiter.take(f"p{index}")
    now[0] = 5.0  # every bucket is full again
    limiter.take("newcomer")
    assert len(limiter._buckets) == 1


def test_limit_settings_are_validated_by_name() -> None:
    with pytest.raises(ConfigError, match="MERCURIO_MAX_STREAMS_PER_CLIENT"):
        load_settings({"MERCURIO_ENV": "test", "MERCURIO_MAX_STREAMS_PER_CLIENT": "0"})
    with pytest.raises(ConfigError, match="MERCURIO_PUBLISH_RATE"):
        load_settings({"MERCURIO_ENV": "test", "MERCURIO_PUBLISH_RATE": "-1"})
    with pytest.raises(ConfigError, match="MERCURIO_PUBLISH_BURST"):
        load_settings({"MERCURIO_ENV": "test", "MERCURIO_PUBLISH_BURST": "0"})
    with pytest.raises(ConfigError, match="MERCURIO_METRICS_TOKEN") as caught:
        load_settings({"MERCURIO_ENV": "test", "MERCURIO_METRICS_TOKEN": "short-secret"})
    assert "short-secret" not in str(caught.value)
