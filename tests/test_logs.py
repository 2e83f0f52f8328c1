"""Logs of a real server: one event per request, request ids, and never a token or a ticket."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from mercurio.config import load_settings
from mercurio.logs import configure_logging
from tests.conftest import PUBLISHER, ServerProcess, bearer, make_token, new_client_id
from tests.streams import open_stream

pytestmark = pytest.mark.timeout(60)

NOTIFICATIONS = "/api/clients/{clientID}/notifications"
ONE = "/api/clients/{clientID}/notifications/{notificationID}"
STREAM = "/api/clients/{clientID}/notifications/stream"


def json_events(server: ServerProcess) -> list[dict[str, Any]]:
    """Every line of the server's log, each parsed as one JSON object."""
    return [json.loads(line) for line in server.log_path.read_text().splitlines() if line]


async def wait_for_event(
    server: ServerProcess, match: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in json_events(server) if match(e)]
        if found:
            return found[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"no such log event in:\n{server.tail()}")
        await asyncio.sleep(0.05)


def request_event(request_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == "http.request" and e.get("request_id") == request_id


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server logging JSON, shared by this module's tests (each uses its own ids)."""
    folder = tmp_path_factory.mktemp("json-logs")
    server = ServerProcess.in_folder(
        folder,
        {
            "MERCURIO_LOG_FORMAT": "json",
            "MERCURIO_NID": "node-7",
            "MERCURIO_SSE_HEARTBEAT": "1",
        },
    ).start()
    yield server
    server.stop()


async def test_json_format_is_one_object_per_line(json_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=json_server.url) as client:
        await client.get("/", headers={"X-Request-ID": "probe-1"})
    await wait_for_event(json_server, request_event("probe-1"))
    lines = [line for line in json_server.log_path.read_text().splitlines() if line]
    assert len(lines) > 3  # uvicorn's own start-up lines are JSON too
    for line in lines:
        assert isinstance(json.loads(line), dict), line


async def test_each_request_logs_template_client_status_duration_node_and_request_id(
    json_server: ServerProcess,
) -> None:
    client_id = new_client_id()
    async with httpx.AsyncClient(base_url=json_server.url) as client:
        published = await client.post(
            "/api/events/unicast",
            json={"sourceID": "s", "destinationID": client_id, "data": "x"},
            headers={**PUBLISHER, "X-Request-ID": "pub-1"},
        )
        nid = published.json()["notificationID"]
        got = await client.get(
            f"/api/clients/{client_id}/notifications/{nid}?status=all",
            headers={**bearer(client_id), "X-Request-ID": "get-1"},
        )
        missing = await client.get(
            f"/api/clients/{client_id}/notifications/999999999",
            headers={**bearer(client_id), "X-Request-ID": "get-2"},
        )
    assert published.headers["x-request-id"] == "pub-1"
    assert got.status_code == 200 and got.headers["x-request-id"] == "get-1"
    assert missing.status_code == 404

    event = await wait_for_event(json_server, request_event("get-1"))
    assert event["method"] == "GET"
    assert event["route"] == ONE
    assert event["client_id"] == client_id
    assert event["status"] == 200
    assert isinstance(event["duration_ms"], float) and event["duration_ms"] >= 0
    assert event["node_id"] == "node-7"
    assert event["level"] == "info"
    assert "status=all" not in json.dumps(event)

    publish = await wait_for_event(json_server, request_event("pub-1"))
    assert publish["route"] == "/api/events/unicast" and publish["status"] == 200
    assert "client_id" not in publish
    refused = await wait_for_event(json_server, request_event("get-2"))
    assert refused["status"] == 404 and refused["route"] == ONE


async def test_publish_lines_carry_the_publisher_and_notification_ids(
    json_server: ServerProcess,
) -> None:
    first, second = new_client_id(), new_client_id()
    async with httpx.AsyncClient(base_url=json_server.url) as client:
        one = await client.post(
            "/api/events/unicast",
            json={"id": f"ev-{first}", "sourceID": "s", "destinationID": first, "data": "x"},
            headers={**PUBLISHER, "X-Request-ID": f"uni-{first}"},
        )
        many = await client.post(
            "/api/events/broadcast",
            json={"sourceID": "s", "destinations": [first, second], "data": "y"},
            headers={**PUBLISHER, "X-Request-ID": f"bro-{first}"},
        )
        again = await client.post(
            "/api/events/unicast",
            json={"id": f"ev-{first}", "sourceID": "s", "destinationID": first, "data": "other"},
            headers={**PUBLISHER, "X-Request-ID": f"dup-{first}"},
        )
        plain = await client.get("/", headers={"X-Request-ID": f"plain-{first}"})
    assert one.status_code == 200 and many.status_code == 200 and again.status_code == 409
    assert plain.status_code == 200

    unicast = await wait_for_event(json_server, request_event(f"uni-{first}"))
    assert unicast["publisher_id"] == "666"
    assert unicast["notification_id"] == one.json()["notificationID"]
    assert unicast["event_id"] == f"ev-{first}"
    assert "notifications" not in unicast
    broadcast = await wait_for_event(json_server, request_event(f"bro-{first}"))
    ids = [item["notificationID"] for item in many.json()]
    assert broadcast["publisher_id"] == "666"
    assert broadcast["notification_id"] == ids[0]
    assert broadcast["last_notification_id"] == ids[-1]
    assert broadcast["notifications"] == 2
    refused = await wait_for_event(json_server, request_event(f"dup-{first}"))
    assert refused["status"] == 409 and refused["publisher_id"] == "666"
    assert "notification_id" not in refused
    # The ids belong to their request's line only, not to the next one on the connection.
    other = await wait_for_event(json_server, request_event(f"plain-{first}"))
    assert "publisher_id" not in other and "notification_id" not in other


async def test_a_made_up_request_id_replaces_an_unfit_one(json_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=json_server.url) as client:
        fine = await client.get("/", headers={"X-Request-ID": "A1b2-c3.d4_e5:f6"})
        spaced = await client.get("/", headers={"X-Request-ID": "two words"})
        long = await client.get("/", headers={"X-Request-ID": "x" * 129})
        none = await client.get("/")
    assert fine.headers["x-request-id"] == "A1b2-c3.d4_e5:f6"
    for answer in (spaced, long, none):
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
    await wait_for_event(json_server, request_event(none.headers["x-request-id"]))


async def test_stream_open_and_close_carry_request_and_node_ids(
    json_server: ServerProcess,
) -> None:
    client_id = new_client_id()
    async with httpx.AsyncClient(base_url=json_server.url, timeout=10) as client:
        headers = {**bearer(client_id), "X-Request-ID": "stream-1"}
        async with open_stream(client, f"/api/clients/{client_id}/notifications/stream", headers):
            opened = await wait_for_event(
                json_server,
                lambda e: e.get("event") == "stream.open" and e.get("client_id") == client_id,
            )
            assert opened["request_id"] == "stream-1"
            assert opened["node_id"] == "node-7"
    closed = await wait_for_event(
        json_server, lambda e: e.get("event") == "stream.close" and e.get("client_id") == client_id
    )
    assert closed["request_id"] == "stream-1" and closed["node_id"] == "node-7"
    assert closed["reason"] == "disconnect"
    assert closed["duration_ms"] > 0
    request = await wait_for_event(json_server, request_event("stream-1"))
    assert request["route"] == STREAM and request["status"] == 200
    assert request["client_id"] == client_id


async def test_probes_log_at_debug_level_only(json_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=json_server.url) as client:
        await client.get("/healthz", headers={"X-Request-ID": "health-1"})
        await client.get("/", headers={"X-Request-ID": "after-1"})
    await wait_for_event(json_server, request_event("after-1"))
    assert not [e for e in json_events(json_server) if e.get("request_id") == "health-1"]


@pytest.mark.timeout(90)
async def test_tokens_and_tickets_never_reach_the_logs(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Tokens in headers, cookies and a refused ?token=, and a ?ticket=: none is printed."""
    server = make_server(
        {"MERCURIO_LOG_LEVEL": "debug", "MERCURIO_SSE_HEARTBEAT": "1"}  # console format
    )
    client_id = new_client_id()
    token = make_token(client_id)
    cookie_token = make_token(client_id, ttl=7200)
    query_token = make_token(client_id, ttl=5400)
    publisher_token = make_token("666", publisher=True, ttl=4000)
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    base = f"/api/clients/{client_id}/notifications"
    secrets = [token, cookie_token, query_token, publisher_token, tampered]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        auth = {"Authorization": f"Bearer {token}"}
        assert (await client.get(base, headers=auth)).status_code == 200
        published = await client.post(
            "/api/events/unicast",
            json={"sourceID": "s", "destinationID": client_id, "data": "secret-free"},
            headers={"Authorization": f"Bearer {publisher_token}"},
        )
        assert published.status_code == 200
        bad = await client.get(base, headers={"Authorization": f"Bearer {tampered}"})
        assert bad.status_code == 401
        refused = await client.get(f"{base}/stream", params={"token": query_token})
        assert refused.status_code == 401

        minted = await client.post(f"/api/clients/{client_id}/stream-tickets", headers=auth)
        ticket = minted.json()["ticket"]
        secrets.append(ticket)
        async with open_stream(client, f"{base}/stream", params={"ticket": ticket}) as stream:
            assert stream.status == 200
            await client.post(
                "/api/events/unicast",
                json={"sourceID": "s", "destinationID": client_id, "data": "by ticket"},
                headers={"Authorization": f"Bearer {publisher_token}"},
            )
            assert (await stream.next_message()).data["data"] == "by ticket"
        spent = await client.get(f"{base}/stream", params={"ticket": ticket})
        assert spent.status_code == 401  # refused, and still not printed

        jar = httpx.Cookies({"mercurio_token": cookie_token})
        async with httpx.AsyncClient(base_url=server.url, cookies=jar, timeout=10) as browser:
            async with open_stream(browser, f"{base}/stream") as stream:
                assert stream.status == 200
                await client.post(
                    "/api/events/unicast",
                    json={"sourceID": "s", "destinationID": client_id, "data": "live"},
                    headers={"Authorization": f"Bearer {publisher_token}"},
                )
                assert (await stream.next_message()).data["data"] == "live"
    server.stop()
    text = server.log_path.read_text()
    assert "stream.close" in text and "http.request" in text  # the logs were written
    for secret in secrets:
        assert secret not in text
        # No recognisable piece either: the signature, and the payload segment.
        for piece in secret.split(".")[1:]:
            if len(piece) >= 16:
                assert piece not in text


def test_a_traceback_in_the_logs_shows_no_local_variables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Rich tracebacks print every frame's locals, and a local may be a token."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging(load_settings({"MERCURIO_ENV": "test", "MERCURIO_LOG_FORMAT": "console"}))

    def check(token: str) -> None:
        raise ValueError("bad token")

    try:
        try:
            check(make_token("123"))
        except ValueError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
            structlog.get_logger("mercurio.test").exception("request.failed")
        printed = capsys.readouterr().err
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        structlog.reset_defaults()
    assert printed.count("ValueError: bad token") == 2
    assert make_token("123").split(".")[0] not in printed  # the JWT header segment
    assert "token =" not in printed and "token=" not in printed
