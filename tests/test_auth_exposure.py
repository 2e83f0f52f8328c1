"""Issue 9, credentials and exposure: tickets, duplicate headers, cookies, docs, redirects, metrics.

Every test runs against a real server process; each names what used to break.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from mercurio.auth import ticket_key
from mercurio.config import DEVELOPMENT_KEY, load_settings
from mercurio.errors import ConfigError
from tests.conftest import (
    PUBLISHER,
    ROOT,
    ServerProcess,
    bearer,
    make_token,
    new_client_id,
    rsa_pair,
)
from tests.streams import open_stream

pytestmark = pytest.mark.timeout(90)

TICKET_SECRET = "ticket-secret-" + "0123456789abcdef" * 2


# -- helpers ------------------------------------------------------------------------------------


def rs_env(public_pem: str, **extra: str) -> dict[str, str]:
    return {"MERCURIO_AUTH_ALGORITHMS": "RS256", "MERCURIO_AUTH_PK_TEXT": public_pem, **extra}


def rs_bearer(private: Any, user: str) -> dict[str, str]:
    token = jwt.encode({"sub": user, "exp": int(time.time()) + 600}, private, algorithm="RS256")
    return {"Authorization": f"Bearer {token}"}


async def rs_publish(server: ServerProcess, private: Any, user: str) -> None:
    """One notification for user; the development HMAC publisher is refused under RS256."""
    claims = {"sub": "svc", "roles": ["publisher"], "exp": int(time.time()) + 600}
    token = jwt.encode(claims, private, algorithm="RS256")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        sent = await http.post(
            "/api/events/unicast",
            json={"sourceID": "s", "destinationID": user, "data": "private"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert sent.status_code == 200, sent.text


def ticket_claims(user: str, **changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "typ": "mercurio-stream-ticket",
        "jti": uuid.uuid4().hex,
        "sub": user,
        "cid": user,
        "exp": int(time.time()) + 60,
        "pub": False,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def derived(seed: str) -> bytes:
    """The ticket key mercurio derives from a seed (the old code seeded it with the JWT key)."""
    return hmac.new(seed.encode(), b"mercurio stream tickets", hashlib.sha256).digest()


async def stream_status(url: str, path: str, **kwargs: Any) -> httpx.Response:
    """The head of a stream request, with the body read when it is a refusal."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        async with http.stream("GET", path, **kwargs) as response:
            if response.status_code != 200:
                await response.aread()
            return response


def raw_request(
    port: int, method: str, path: str, headers: list[tuple[str, str]], body: str = ""
) -> bytes:
    """One HTTP/1.1 request over a socket, headers exactly as given (repeats kept)."""
    lines = [f"{method} {path} HTTP/1.1", "Connection: close"]
    if not any(name.lower() == "host" for name, _ in headers):
        lines.append(f"Host: 127.0.0.1:{port}")
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body.encode())}")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n" + body).encode("latin-1"))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_and_json(answer: bytes) -> tuple[int, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    return status, json.loads(body)


@pytest.fixture(scope="module")
def rs_keys() -> tuple[Any, str]:
    return rsa_pair()


@pytest.fixture(scope="module")
def rs_server(
    tmp_path_factory: pytest.TempPathFactory, rs_keys: tuple[Any, str]
) -> Iterator[ServerProcess]:
    """RS256 with no ticket secret set: a test node generates its own beside the database."""
    server = ServerProcess.in_folder(tmp_path_factory.mktemp("rs"), rs_env(rs_keys[1])).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rs_secret_server(
    tmp_path_factory: pytest.TempPathFactory, rs_keys: tuple[Any, str]
) -> Iterator[ServerProcess]:
    env = rs_env(rs_keys[1], MERCURIO_TICKET_SECRET=TICKET_SECRET)
    server = ServerProcess.in_folder(tmp_path_factory.mktemp("rs-secret"), env).start()
    yield server
    server.stop()


# -- 1. stream tickets under a public JWT key ---------------------------------------------------


async def test_ticket_cannot_be_forged_with_the_public_key(
    rs_server: ServerProcess, rs_keys: tuple[Any, str]
) -> None:
    private, public_pem = rs_keys
    victim = new_client_id()
    await rs_publish(rs_server, private, victim)
    for seed in (public_pem, public_pem.strip()):
        forged = jwt.encode(ticket_claims(victim), derived(seed), algorithm="HS256")
        answer = await stream_status(
            rs_server.url,
            f"/api/clients/{victim}/notifications/stream",
            params={"ticket": forged, "lastEventId": "0"},
        )
        assert answer.status_code == 401, answer.text
        assert answer.json() == {"error": "stream ticket is invalid"}


async def test_a_real_ticket_opens_the_stream_under_rs256(
    rs_server: ServerProcess, rs_keys: tuple[Any, str]
) -> None:
    user = new_client_id()
    await rs_publish(rs_server, rs_keys[0], user)
    async with httpx.AsyncClient(base_url=rs_server.url, timeout=10) as http:
        minted = await http.post(
            f"/api/clients/{user}/stream-tickets", headers=rs_bearer(rs_keys[0], user)
        )
        assert minted.status_code == 200, minted.text
        path = f"/api/clients/{user}/notifications/stream"
        params = {"ticket": minted.json()["ticket"], "lastEventId": "0"}
        async with open_stream(http, path, params=params) as stream:
            assert stream.status == 200
            assert (await stream.next_message(timeout=10)).data["data"] == "private"


@pytest.mark.parametrize(
    "changes",
    [
        {"sub": None},
        {"exp": None},
        {"jti": None},
        {"sub": 42},
        {"sub": ""},
        {"exp": "soon"},
        {"texp": "later"},
        {"cid": ["x"]},
    ],
    ids=["no-sub", "no-exp", "no-jti", "int-sub", "empty-sub", "str-exp", "str-texp", "list-cid"],
)
async def test_signed_but_malformed_ticket_is_a_json_401_not_a_500(
    server: ServerProcess, rs_secret_server: ServerProcess, changes: dict[str, Any]
) -> None:
    # HS256 tickets are still keyed from the (secret) HMAC key; RS256 ones from the secret.
    for target, seed in ((server, DEVELOPMENT_KEY), (rs_secret_server, TICKET_SECRET)):
        user = new_client_id()
        claims = ticket_claims(user, **changes)
        if "cid" in changes:
            claims["cid"] = changes["cid"]
        ticket = jwt.encode(claims, derived(seed), algorithm="HS256")
        answer = await stream_status(
            target.url, f"/api/clients/{user}/notifications/stream", params={"ticket": ticket}
        )
        assert answer.status_code == 401, answer.text
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json() == {"error": "stream ticket is invalid"}


async def test_generated_ticket_secret_survives_a_restart_and_is_shared_beside_the_database(
    tmp_path: Path, rs_keys: tuple[Any, str]
) -> None:
    private, public_pem = rs_keys
    user = new_client_id()
    first = ServerProcess.in_folder(tmp_path, rs_env(public_pem)).start()
    try:
        async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
            minted = await http.post(
                f"/api/clients/{user}/stream-tickets", headers=rs_bearer(private, user)
            )
            assert minted.status_code == 200, minted.text
    finally:
        first.stop()
    assert len((tmp_path / ".mercurio-ticket-secret").read_text().strip()) >= 32
    second = ServerProcess.in_folder(tmp_path, rs_env(public_pem)).start()
    try:
        async with httpx.AsyncClient(base_url=second.url, timeout=10) as http:
            path = f"/api/clients/{user}/notifications/stream"
            async with open_stream(http, path, params={"ticket": minted.json()["ticket"]}) as s:
                assert s.status == 200
    finally:
        second.stop()


def test_production_with_a_public_key_refuses_to_start_without_a_ticket_secret(
    rs_keys: tuple[Any, str],
) -> None:
    env = {"MERCURIO_ENV": "production", "MERCURIO_AUTH_AUDIENCE": "mercurio", **rs_env(rs_keys[1])}
    with pytest.raises(ConfigError, match=r"^MERCURIO_TICKET_SECRET: required in production"):
        load_settings(env)
    assert load_settings({**env, "MERCURIO_TICKET_SECRET": TICKET_SECRET}).ticket_secret
    started = subprocess.run(
        [sys.executable, "-m", "mercurio", "serve", "--port", "0"],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert started.returncode != 0
    assert "MERCURIO_TICKET_SECRET" in started.stderr + started.stdout


# -- 13. duplicate Authorization headers -------------------------------------------------------


def test_two_authorization_headers_are_refused_alike_on_every_route(server: ServerProcess) -> None:
    user = new_client_id()
    other = new_client_id()
    # Publisher first, plain user last: the framework read the first, the fast path the last.
    twice = [
        ("Authorization", PUBLISHER["Authorization"]),
        ("Authorization", f"Bearer {make_token(user)}"),
    ]
    body = json.dumps({"sourceID": "s", "destinationID": other, "data": "x"})
    requests = [
        ("GET", f"/api/clients/{user}/notifications", twice),
        ("GET", f"/api/clients/{user}/notifications/stream", twice[::-1]),
        ("GET", f"/api/clients/{user}/notifications/stream", twice),
        ("POST", f"/api/clients/{user}/stream-tickets", twice),
        ("GET", "/metrics", twice),
    ]
    for method, path, headers in requests:
        status, answer = status_and_json(raw_request(server.port, method, path, headers))
        assert status == 400, (method, path, answer)
        assert answer == {"error": "send one Authorization header, not several"}
    json_type = [("Content-Type", "application/json")]
    reply = raw_request(server.port, "POST", "/api/events/unicast", twice + json_type, body)
    status, answer = status_and_json(reply)
    assert status == 400, answer
    listed = httpx.get(f"{server.url}/api/clients/{other}/notifications", headers=bearer(other))
    assert listed.json()["notifications"] == [], listed.text


# -- 13. the stream's cookie -------------------------------------------------------------------


async def test_stream_cookie_is_found_after_an_unparsable_cookie(server: ServerProcess) -> None:
    user = new_client_id()
    cookie = f'bad"cookie; mercurio_token={make_token(user)}'
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        path = f"/api/clients/{user}/notifications/stream"
        async with open_stream(http, path, headers={"Cookie": cookie}) as stream:
            assert stream.status == 200, stream.pending()


# -- 13. production exposure -------------------------------------------------------------------


def production_env(**extra: str) -> dict[str, str]:
    return {"MERCURIO_ENV": "production", "MERCURIO_AUTH_PK_TEXT": secrets.token_hex(32), **extra}


def test_production_serves_no_api_docs_unless_enabled(
    make_server: Callable[..., ServerProcess],
) -> None:
    hidden = make_server(production_env())
    for path in ("/docs", "/redoc", "/openapi.json"):
        answer = httpx.get(hidden.url + path, timeout=10)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json() == {"error": answer.json()["error"]}
    shown = make_server(production_env(MERCURIO_DOCS="true"))
    assert httpx.get(shown.url + "/openapi.json", timeout=10).json()["info"]["title"] == "Mercurio"
    assert httpx.get(shown.url + "/docs", timeout=10).status_code == 200


def test_docs_stay_on_outside_production(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/openapi.json", timeout=10).status_code == 200


@pytest.mark.parametrize("path", ["/api/clients/u1/notifications/", "/healthz/", "//evil.example/"])
def test_slash_redirect_does_not_point_at_the_host_header(server: ServerProcess, path: str) -> None:
    answer = raw_request(server.port, "GET", path, [("Host", "evil.example")])
    lines = answer.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    locations = [
        line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("location:")
    ]
    if path != "//evil.example/":
        assert lines[0].split()[1] == "307" and locations, lines  # the redirect still works
    for target in locations:
        assert "evil.example" not in target, target
        assert target.startswith("/") and not target.startswith(("//", "/\\")), target


# -- 13. /metrics and "loopback" ---------------------------------------------------------------


async def test_metrics_accept_any_loopback_peer_not_only_127_0_0_1(server: ServerProcess) -> None:
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=server.url, transport=transport, timeout=10) as http:
        answer = await http.get("/metrics")
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    "header",
    [("X-Forwarded-For", "127.0.0.1"), ("Forwarded", "for=203.0.113.9"), ("X-Real-IP", "::1")],
)
async def test_metrics_behind_a_proxy_need_the_token(
    server: ServerProcess, header: tuple[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        answer = await http.get("/metrics", headers=[header])
    assert answer.status_code == 403, answer.text
    assert "error" in answer.json()


def test_ticket_secret_is_never_echoed_in_its_error() -> None:
    short = "short-secret-value"
    with pytest.raises(ConfigError) as caught:
        load_settings({"MERCURIO_TICKET_SECRET": short})
    assert str(caught.value).startswith("MERCURIO_TICKET_SECRET:")
    assert short not in str(caught.value)


def test_nodes_starting_together_agree_on_the_generated_ticket_secret(
    tmp_path: Path, rs_keys: tuple[Any, str]
) -> None:
    env = {**rs_env(rs_keys[1]), "MERCURIO_DB_CONN": f"sqlite:///{tmp_path}/mercurio.db"}
    settings = load_settings({"MERCURIO_ENV": "test", **env})
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: ticket_key(settings), range(32)))
    assert len(keys) == 1
    assert keys != {derived(rs_keys[1])}
    assert [p.name for p in tmp_path.iterdir()] == [".mercurio-ticket-secret"]
