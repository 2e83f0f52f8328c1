"""Attacks on the tokens and the ids, over HTTP: each gets a clear 4xx and changes nothing.

Every test here checks the whole database (every row of every table) before and after: a
refused request must not have written anything, not even a consumed stream ticket.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from mercurio.config import DEVELOPMENT_KEY
from tests.conftest import PUBLISHER, ServerProcess, bearer, rsa_pair

pytestmark = pytest.mark.timeout(120)

KEY = DEVELOPMENT_KEY.encode()
VICTIM = "victim"
ATTACKER = "attacker"
AUDIENCE = "mercurio-api"
ISSUER = "https://issuer.test"
CLEAR_REFUSALS = {400, 401, 403, 404, 413, 422, 431}

Fingerprint = dict[str, list[tuple[Any, ...]]]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], key: bytes | None = None) -> str:
    """A token signed by hand with HS256 (or unsigned), as an attacker would make it."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if key is None:
        return signing_input + "."
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def hs256(claims: dict[str, Any], key: bytes = KEY) -> str:
    return forge({"alg": "HS256", "typ": "JWT"}, claims, key)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fingerprint(db: Path) -> Fingerprint:
    """Every row of every table of the server's SQLite database."""
    with sqlite3.connect(db) as conn:
        tables = [
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            # The channels' consumers move their cursors as the ledger grows, on their own; an
            # authenticated client's first request records when it was first seen (retention).
            if row[0] not in ("alembic_version", "consumer_cursors", "client_first_seen")
        ]
        return {
            t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables
        }


def routes(client_id: str, nid: int | str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every route a client may call on its own data, with a valid body where one is needed."""
    base = f"/api/clients/{client_id}"
    return [
        ("GET", f"{base}/notifications", {}),
        ("GET", f"{base}/notifications/unread-count", {}),
        ("PUT", f"{base}/notifications/read", {}),
        ("GET", f"{base}/notifications/{nid}", {}),
        ("PUT", f"{base}/notifications/{nid}/read", {}),
        ("PUT", f"{base}/notifications/{nid}/unread", {}),
        ("DELETE", f"{base}/notifications/{nid}", {}),
        ("GET", f"{base}/preferences", {}),
        ("PUT", f"{base}/preferences", {"json": {"mutedCategories": ["security"]}}),
        ("POST", f"{base}/stream-tickets", {}),
        ("GET", f"{base}/notifications/stream", {}),
    ]


PUBLISH_ROUTES: list[tuple[str, dict[str, Any]]] = [
    ("/api/events/unicast", {"sourceID": "evil", "destinationID": VICTIM, "data": "x"}),
    ("/api/events/broadcast", {"sourceID": "evil", "destinations": [VICTIM], "data": "x"}),
    ("/api/events/announce", {"sourceID": "evil", "data": "x"}),
]


class Target:
    """A server with its own database, and the victim's one notification in it."""

    def __init__(self, server: ServerProcess, db: Path) -> None:
        self.server = server
        self.db = db
        self.nid = 0

    async def send(
        self, client: httpx.AsyncClient, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        if path.endswith("/notifications/stream"):
            # Read only the head of a stream: an accepted one would never end.
            async with client.stream(method, path, **kwargs) as response:
                if response.status_code != 200:
                    await response.aread()
                return response
        return await client.request(method, path, **kwargs)


def _start(folder: Path, env: dict[str, str]) -> tuple[ServerProcess, Path]:
    return ServerProcess.in_folder(folder, env).start(), folder / "mercurio.db"


@pytest.fixture(scope="module")
def hs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    server, db = _start(tmp_path_factory.mktemp("jwt-hs"), {})
    target = Target(server, db)
    answer = httpx.post(
        server.url + "/api/events/unicast",
        json={"id": "seed", "sourceID": "666", "destinationID": VICTIM, "data": "secret"},
        headers=PUBLISHER,
        timeout=10,
    )
    answer.raise_for_status()
    target.nid = answer.json()["notificationID"]
    yield target
    server.stop()


@pytest.fixture
async def client(hs_server: Target) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hs_server.server.url, timeout=10) as http:
        yield http


async def assert_refused_everywhere(
    target: Target, client: httpx.AsyncClient, headers: dict[str, Any], status: set[int]
) -> None:
    """The token gets `status` on every client route and every publish route; nothing changes."""
    before = fingerprint(target.db)
    for method, path, extra in routes(VICTIM, target.nid):
        answer = await target.send(client, method, path, headers=headers, **extra)
        assert answer.status_code in status, (method, path, answer.status_code, answer.text)
        if answer.status_code == 401:
            assert "error" in answer.json()
    for path, body in PUBLISH_ROUTES:
        answer = await client.post(path, json=body, headers=headers)
        assert answer.status_code in status, (path, answer.status_code, answer.text)
    assert fingerprint(target.db) == before


def now() -> int:
    return int(time.time())


# -- forged and broken tokens -------------------------------------------------------------------

ALG_NONE_HEADERS = [
    {"alg": "none", "typ": "JWT"},
    {"alg": "None", "typ": "JWT"},
    {"alg": "NONE", "typ": "JWT"},
    {"alg": "nOnE"},
]


@pytest.mark.parametrize("header", ALG_NONE_HEADERS, ids=[h["alg"] for h in ALG_NONE_HEADERS])
async def test_alg_none_is_refused(
    hs_server: Target, client: httpx.AsyncClient, header: dict[str, Any]
) -> None:
    claims = {"user_id": VICTIM, "roles": ["publisher"], "exp": now() + 600}
    await assert_refused_everywhere(hs_server, client, auth(forge(header, claims)), {401})
    # The same, with a (meaningless) signature appended.
    signed = forge(header, claims) + b64(b"sig")
    await assert_refused_everywhere(hs_server, client, auth(signed), {401})


async def test_expired_token_is_refused(hs_server: Target, client: httpx.AsyncClient) -> None:
    token = hs256({"user_id": VICTIM, "roles": ["publisher"], "exp": now() - 60})
    await assert_refused_everywhere(hs_server, client, auth(token), {401})


async def test_not_yet_valid_token_is_refused(hs_server: Target, client: httpx.AsyncClient) -> None:
    token = hs256({"user_id": VICTIM, "roles": ["publisher"], "nbf": now() + 600})
    await assert_refused_everywhere(hs_server, client, auth(token), {401})


async def test_tampered_payload_is_refused(hs_server: Target, client: httpx.AsyncClient) -> None:
    header, _, signature = hs256({"user_id": ATTACKER, "exp": now() + 600}).split(".")
    promoted = b64(json.dumps({"user_id": VICTIM, "roles": ["publisher"]}).encode())
    await assert_refused_everywhere(
        hs_server, client, auth(f"{header}.{promoted}.{signature}"), {401}
    )


async def test_flipped_signature_is_refused(hs_server: Target, client: httpx.AsyncClient) -> None:
    token = hs256({"user_id": VICTIM, "roles": ["publisher"]})
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    await assert_refused_everywhere(hs_server, client, auth(flipped), {401})


async def test_token_signed_with_another_key_is_refused(
    hs_server: Target, client: httpx.AsyncClient
) -> None:
    token = hs256({"user_id": VICTIM, "roles": ["publisher"]}, key=b"guessed-secret")
    await assert_refused_everywhere(hs_server, client, auth(token), {401})


MALFORMED_AUTHORIZATION = {
    "bearer-alone": "Bearer",
    "basic": "Basic dmljdGltOnB3",
    "garbage": "Bearer garbage",
    "two-parts": "Bearer a.b",
    "abc": "Bearer a.b.c",
    "dots": "Bearer ..",
    "empty-json": "Bearer e30.e30.",
    "two-tokens": "Bearer a.b.c d.e.f",
    "latin": "Bearer " + "\u00e9" * 10,
}


@pytest.mark.parametrize(
    "value", MALFORMED_AUTHORIZATION.values(), ids=list(MALFORMED_AUTHORIZATION)
)
async def test_malformed_authorization_gets_401(
    hs_server: Target, client: httpx.AsyncClient, value: str
) -> None:
    headers = {"Authorization": value.encode()}
    await assert_refused_everywhere(hs_server, client, headers, {401})


async def test_one_megabyte_token_gets_a_clear_4xx(
    hs_server: Target, client: httpx.AsyncClient
) -> None:
    huge = hs256({"user_id": VICTIM, "roles": ["publisher"], "pad": "A" * 1_000_000})
    await assert_refused_everywhere(hs_server, client, auth(huge), {401, 413, 431})
    # The same token as the stream's cookie.
    answer = await hs_server.send(
        client,
        "GET",
        f"/api/clients/{VICTIM}/notifications/stream",
        headers={"Cookie": f"mercurio_token={huge}"},
    )
    assert answer.status_code in {401, 413, 431}


async def test_a_refused_publisher_token_publishes_nothing(
    hs_server: Target, client: httpx.AsyncClient
) -> None:
    before = fingerprint(hs_server.db)
    for path, body in PUBLISH_ROUTES:
        answer = await client.post(path, json=body, headers=bearer(ATTACKER))
        assert answer.status_code == 403, answer.text
    assert fingerprint(hs_server.db) == before


# -- a valid token for another client -----------------------------------------------------------


async def test_another_clients_token_gets_403_on_every_route(
    hs_server: Target, client: httpx.AsyncClient
) -> None:
    before = fingerprint(hs_server.db)
    for method, path, extra in routes(VICTIM, hs_server.nid):
        answer = await hs_server.send(client, method, path, headers=bearer(ATTACKER), **extra)
        assert answer.status_code == 403, (method, path, answer.status_code, answer.text)
        assert answer.json()["error"]
    assert fingerprint(hs_server.db) == before


async def test_another_clients_notification_is_404_on_own_routes(
    hs_server: Target, client: httpx.AsyncClient
) -> None:
    """The victim's notification id used on the attacker's own routes: never revealed."""
    before = fingerprint(hs_server.db)
    for method, path, extra in routes(ATTACKER, hs_server.nid):
        if f"/{hs_server.nid}" not in path:
            continue
        answer = await client.request(method, path, headers=bearer(ATTACKER), **extra)
        assert answer.status_code == 404, (method, path, answer.status_code)
        assert answer.json() == {"error": "notification not found"}
    assert fingerprint(hs_server.db) == before


async def test_another_clients_stream_ticket_is_refused(
    hs_server: Target, client: httpx.AsyncClient
) -> None:
    own = await client.post(f"/api/clients/{ATTACKER}/stream-tickets", headers=bearer(ATTACKER))
    ticket = own.json()["ticket"]
    before = fingerprint(hs_server.db)
    answer = await hs_server.send(
        client, "GET", f"/api/clients/{VICTIM}/notifications/stream", params={"ticket": ticket}
    )
    assert answer.status_code == 403
    assert fingerprint(hs_server.db) == before


# -- SQL-looking input --------------------------------------------------------------------------

SQL_CLIENT_IDS = [
    "1' OR '1'='1",
    "victim' --",
    'victim"; DROP TABLE notifications; --',
    "victim' UNION SELECT * FROM notifications --",
    "*",
    "%",
    "victim%",
]
SQL_NOTIFICATION_IDS = ["1 OR 1=1", "1; DROP TABLE notifications", "-1", "0", "1e3", "0x1", "１"]  # noqa: RUF001
SQL_CATEGORIES = ["general' OR '1'='1", "x'; DELETE FROM notifications; --", "%", "GENERAL", "a b"]


@pytest.mark.parametrize("client_id", SQL_CLIENT_IDS)
async def test_sql_looking_client_ids_are_refused(
    hs_server: Target, client: httpx.AsyncClient, client_id: str
) -> None:
    before = fingerprint(hs_server.db)
    # A token that really names that user: only the id's shape can stop it.
    headers = auth(hs256({"user_id": client_id, "roles": ["publisher"]}))
    for method, path, extra in routes(client_id, hs_server.nid):
        answer = await hs_server.send(client, method, path, headers=headers, **extra)
        assert answer.status_code in {400, 404}, (method, path, answer.status_code, answer.text)
    for body in (
        {"sourceID": "x", "destinationID": client_id, "data": 1},
        {"sourceID": "x", "destinations": [VICTIM, client_id], "data": 1},
    ):
        path = "/api/events/unicast" if "destinationID" in body else "/api/events/broadcast"
        answer = await client.post(path, json=body, headers=PUBLISHER)
        assert answer.status_code == 422, (path, answer.status_code, answer.text)
    assert fingerprint(hs_server.db) == before


@pytest.mark.parametrize("nid", SQL_NOTIFICATION_IDS)
async def test_sql_looking_notification_ids_are_refused(
    hs_server: Target, client: httpx.AsyncClient, nid: str
) -> None:
    before = fingerprint(hs_server.db)
    for method, path, extra in routes(VICTIM, nid):
        if not path.endswith(f"/{nid}") and f"/{nid}/" not in path:
            continue
        answer = await client.request(method, path, headers=bearer(VICTIM), **extra)
        assert answer.status_code in {400, 404}, (method, path, answer.status_code)
    for name in ("before",):
        answer = await client.get(
            f"/api/clients/{VICTIM}/notifications", params={name: nid}, headers=bearer(VICTIM)
        )
        assert answer.status_code == 400
    answer = await hs_server.send(
        client,
        "GET",
        f"/api/clients/{VICTIM}/notifications/stream",
        headers={**bearer(VICTIM), "Last-Event-ID": nid.encode()},
    )
    # 0 is a fine Last-Event-ID (everything), but the stream must then be a real one.
    assert answer.status_code == (200 if nid == "0" else 400)
    assert fingerprint(hs_server.db) == before


@pytest.mark.parametrize("category", SQL_CATEGORIES)
async def test_sql_looking_categories_are_refused(
    hs_server: Target, client: httpx.AsyncClient, category: str
) -> None:
    before = fingerprint(hs_server.db)
    own = bearer(VICTIM)
    base = f"/api/clients/{VICTIM}"
    answers = [
        await client.get(f"{base}/notifications", params={"category": category}, headers=own),
        await client.put(f"{base}/notifications/read", params={"category": category}, headers=own),
        await client.put(f"{base}/preferences", json={"mutedCategories": [category]}, headers=own),
        await client.post(
            "/api/events/unicast",
            json={"sourceID": "x", "destinationID": VICTIM, "data": 1, "category": category},
            headers=PUBLISHER,
        ),
        await hs_server.send(
            client,
            "GET",
            f"{base}/notifications/stream",
            params={"categories": f"general,{category}"},
            headers=own,
        ),
    ]
    for answer in answers:
        assert answer.status_code in {400, 422}, (answer.request.url, answer.status_code)
    assert fingerprint(hs_server.db) == before


# -- servers with stricter token settings -------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[Any, str]:
    return rsa_pair()


@pytest.fixture(scope="module")
def rs_server(
    tmp_path_factory: pytest.TempPathFactory, rsa_keys: tuple[Any, str]
) -> Iterator[Target]:
    _, public_pem = rsa_keys
    server, db = _start(
        tmp_path_factory.mktemp("jwt-rs"),
        {"MERCURIO_AUTH_ALGORITHMS": "RS256", "MERCURIO_AUTH_PK_TEXT": public_pem},
    )
    yield Target(server, db)
    server.stop()


async def test_hs256_token_signed_with_the_rs256_public_key_is_refused(
    rs_server: Target, rsa_keys: tuple[Any, str]
) -> None:
    """Key confusion: the public key is public, so an HMAC made with it proves nothing."""
    private, public_pem = rsa_keys
    claims = {"user_id": VICTIM, "roles": ["publisher"], "exp": now() + 600}
    async with httpx.AsyncClient(base_url=rs_server.server.url, timeout=10) as http:
        genuine = jwt.encode(claims, private, algorithm="RS256")
        assert (
            await http.get(f"/api/clients/{VICTIM}/notifications", headers=auth(genuine))
        ).status_code == 200
        for key in (public_pem.encode(), public_pem.strip().encode()):
            forged = hs256(claims, key=key)
            await assert_refused_everywhere(rs_server, http, auth(forged), {401})
        # The development HMAC key is not accepted either once RS256 is configured.
        await assert_refused_everywhere(rs_server, http, bearer(VICTIM, publisher=True), {401})


@pytest.fixture(scope="module")
def audience_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    server, db = _start(
        tmp_path_factory.mktemp("jwt-aud"),
        {"MERCURIO_AUTH_AUDIENCE": AUDIENCE, "MERCURIO_AUTH_ISSUER": ISSUER},
    )
    yield Target(server, db)
    server.stop()


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "another-api", "iss": ISSUER},
        {"aud": AUDIENCE, "iss": "https://evil.test"},
        {"iss": ISSUER},
        {"aud": AUDIENCE},
        {"aud": [], "iss": ISSUER},
        {"aud": AUDIENCE.upper(), "iss": ISSUER},
    ],
    ids=["wrong-aud", "wrong-iss", "no-aud", "no-iss", "empty-aud", "aud-case"],
)
async def test_wrong_audience_or_issuer_is_refused(
    audience_server: Target, claims: dict[str, Any]
) -> None:
    base = {"user_id": VICTIM, "roles": ["publisher"], "exp": now() + 600}
    async with httpx.AsyncClient(base_url=audience_server.server.url, timeout=10) as http:
        right = hs256({**base, "aud": AUDIENCE, "iss": ISSUER})
        assert (
            await http.get(f"/api/clients/{VICTIM}/notifications", headers=auth(right))
        ).status_code == 200
        await assert_refused_everywhere(
            audience_server, http, auth(hs256({**base, **claims})), {401}
        )
