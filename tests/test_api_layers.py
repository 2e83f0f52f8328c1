"""The raw ASGI layers that shortcut framework work answer as the framework would."""

from __future__ import annotations

import httpx
import pytest
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Message, Receive, Scope, Send

from mercurio.api.layers import CrossOriginOnly
from tests.conftest import PUBLISHER, ServerProcess, new_client_id

pytestmark = pytest.mark.timeout(60)

VARY_CASES = [
    [],
    [(b"content-type", b"application/json")],
    [(b"vary", b"Accept")],
    [(b"a", b"1"), (b"vary", b"A"), (b"b", b"2"), (b"vary", b"B")],
]


async def _answer_headers(layer: object, headers: list[tuple[bytes, bytes]]) -> list[object]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"host", b"test")]}
    await layer(scope, None, send)  # type: ignore[operator]
    return list(sent[0]["headers"])


@pytest.mark.parametrize("headers", VARY_CASES)
async def test_a_request_without_origin_gets_the_vary_cors_middleware_gives(
    headers: list[tuple[bytes, bytes]],
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": b""})

    cors = CORSMiddleware(app, allow_origins=["*"])
    assert await _answer_headers(CrossOriginOnly(cors, app), headers) == await _answer_headers(
        cors, headers
    )


async def test_cross_origin_requests_still_get_cors_headers_and_others_vary(
    server: ServerProcess,
) -> None:
    """The test environment allows any origin: with Origin, CORSMiddleware answers."""
    body = {"sourceID": "s", "destinationID": new_client_id(), "data": "x"}
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        plain = await client.post("/api/events/unicast", json=body, headers=PUBLISHER)
        crossed = await client.post(
            "/api/events/unicast", json=body, headers={**PUBLISHER, "Origin": "http://a.test"}
        )
    assert plain.status_code == crossed.status_code == 200
    assert plain.headers["vary"] == "Origin"
    assert "access-control-allow-origin" not in plain.headers
    assert crossed.headers["access-control-allow-origin"] in ("*", "http://a.test")
