"""The mock push service takes what pywebpush + py_vapid build and refuses what a real push
service refuses; scripted answers, holding and the threaded variant work."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import http_ece
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid
from pywebpush import WebPusher

from tests.push_service import (
    MockPushService,
    PushDevice,
    ThreadedPushService,
    b64url,
    b64url_decode,
)

pytestmark = pytest.mark.timeout(20)

PAYLOAD = json.dumps({"notificationID": 7, "data": {"title": "hello"}}).encode()
SUBJECT = "mailto:ops@example.com"


@pytest.fixture(scope="module")
def vapid() -> Vapid:
    key = Vapid()
    key.generate_keys()
    return key


@pytest.fixture
async def push() -> AsyncIterator[MockPushService]:
    async with MockPushService() as service:
        yield service


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as http:
        yield http


def origin(device: PushDevice) -> str:
    return "/".join(device.endpoint.split("/")[:3])


def public_b64(vapid: Vapid) -> str:
    """The application server key as a page passes it to `pushManager.subscribe`."""
    point = vapid.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return b64url(point)


def forged(vapid: Vapid, claims: dict[str, Any], *, k: str | None = None) -> str:
    """A VAPID header over any claims at all (py_vapid refuses to sign bad ones)."""
    token = jwt.encode(claims, vapid.private_key, algorithm="ES256")
    return f"vapid t={token}, k={k or public_b64(vapid)}"


def good_push(
    device: PushDevice, vapid: Vapid, payload: bytes = PAYLOAD, **headers: str
) -> tuple[bytes, dict[str, str]]:
    """What the server will send: pywebpush's body, py_vapid's header, the push headers."""
    body = WebPusher(device.subscription_json()).encode(payload)["body"]
    auth = vapid.sign({"aud": origin(device), "sub": SUBJECT})
    return body, {"Content-Encoding": "aes128gcm", "TTL": "60", **auth, **headers}


async def send(
    client: httpx.AsyncClient, device: PushDevice, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return await client.post(device.endpoint, content=body, headers=headers)


def test_subscription_json_is_what_a_browser_gives(push: MockPushService) -> None:
    device = push.device()
    sub = device.subscription_json()
    assert set(sub) == {"endpoint", "expirationTime", "keys"}
    assert sub["endpoint"].startswith(f"{push.base_url}/push/")
    assert sub["expirationTime"] is None
    p256dh, auth = sub["keys"]["p256dh"], sub["keys"]["auth"]
    assert "=" not in p256dh + auth
    assert len(b64url_decode(p256dh)) == 65 and b64url_decode(p256dh)[0] == 4
    assert len(b64url_decode(auth)) == 16
    assert push.device().endpoint != device.endpoint


async def test_a_correct_push_is_received_decrypted(
    push: MockPushService, client: httpx.AsyncClient, vapid: Vapid
) -> None:
    device = push.device()
    body, headers = good_push(device, vapid, Urgency="high", Topic="inbox-123")
    response = await send(client, device, body, headers)
    assert response.status_code == 201, response.text
    assert response.headers["location"].startswith(f"{push.base_url}/message/")
    [got] = await push.wait_for(1)
    assert got.device is device
    assert got.payload == PAYLOAD and got.json()["notificationID"] == 7
    assert (got.ttl, got.urgency, got.topic) == (60, "high", "inbox-123")
    assert got.headers["content-encoding"] == "aes128gcm"
    assert got.vapid_claims["aud"] == origin(device) and got.vapid_claims["sub"] == SUBJECT
    assert got.vapid_public_key == public_b64(vapid)
    assert push.attempts == [(device, 201)] and push.refused == []


async def test_pushes_on_one_kept_alive_connection(
    push: MockPushService, client: httpx.AsyncClient, vapid: Vapid
) -> None:
    device = push.device()
    for n in range(3):
        body, headers = good_push(device, vapid, str(n).encode())
        assert (await send(client, device, body, headers)).status_code == 201
    assert [r.payload for r in await push.wait_for(3)] == [b"0", b"1", b"2"]


def bad_headers(device: PushDevice, vapid: Vapid, name: str) -> dict[str, str | None]:
    """Header overrides that break one rule each (None removes the header)."""
    now = int(time.time())
    aud, other = origin(device), Vapid()
    other.generate_keys()
    claims = {"aud": aud, "sub": SUBJECT, "exp": now + 60}
    overrides: dict[str, dict[str, str | None]] = {
        "no authorization": {"Authorization": None},
        "legacy WebPush scheme": {
            "Authorization": "WebPush " + forged(vapid, claims).split("t=")[1].split(",")[0]
        },
        "no k": {"Authorization": forged(vapid, claims).split(",")[0]},
        "k not a point": {"Authorization": forged(vapid, claims, k=b64url(b"\x04" * 20))},
        "wrong aud": {"Authorization": forged(vapid, {**claims, "aud": "http://127.0.0.1:1"})},
        "aud a list": {"Authorization": forged(vapid, {**claims, "aud": [aud]})},
        "expired": {"Authorization": forged(vapid, {**claims, "exp": now - 60})},
        "no exp": {"Authorization": forged(vapid, {"aud": aud, "sub": SUBJECT})},
        "exp over 24 h": {"Authorization": forged(vapid, {**claims, "exp": now + 90000})},
        "no sub": {"Authorization": forged(vapid, {"aud": aud, "exp": now + 60})},
        "sub not a URI": {"Authorization": forged(vapid, {**claims, "sub": "ops@example.com"})},
        "bad signature": {"Authorization": forged(vapid, claims, k=public_b64(other))},
        "HS256 token": {
            "Authorization": f"vapid t={jwt.encode(claims, 'k' * 32, algorithm='HS256')},"
            f" k={public_b64(vapid)}"
        },
        "no TTL": {"TTL": None},
        "negative TTL": {"TTL": "-1"},
        "TTL not an integer": {"TTL": "1.5"},
        "bad urgency": {"Urgency": "urgent"},
        "topic too long": {"Topic": "a" * 33},
        "topic not base64url": {"Topic": "no spaces"},
        "not aes128gcm": {"Content-Encoding": "aesgcm"},
        "no content-encoding": {"Content-Encoding": None},
    }
    return overrides[name]


REFUSALS = {  # rule: (status, what the reason must name)
    "no authorization": (401, "no Authorization"),
    "legacy WebPush scheme": (401, "not vapid"),
    "no k": (401, "k= are both required"),
    "k not a point": (401, "not a P-256 public key"),
    "wrong aud": (401, "is not the origin"),
    "aud a list": (401, "is not the origin"),
    "expired": (401, "ExpiredSignature"),
    "no exp": (401, '"exp"'),
    "exp over 24 h": (401, "more than 24 h"),
    "no sub": (401, '"sub"'),
    "sub not a URI": (401, "not a mailto: or https:"),
    "bad signature": (401, "InvalidSignature"),
    "HS256 token": (401, "alg"),
    "no TTL": (400, "TTL"),
    "negative TTL": (400, "TTL"),
    "TTL not an integer": (400, "TTL"),
    "bad urgency": (400, "Urgency"),
    "topic too long": (400, "Topic"),
    "topic not base64url": (400, "Topic"),
    "not aes128gcm": (400, "Content-Encoding"),
    "no content-encoding": (400, "Content-Encoding"),
}


@pytest.mark.parametrize("rule", list(REFUSALS))
async def test_a_push_breaking_a_rule_is_refused(
    push: MockPushService, client: httpx.AsyncClient, vapid: Vapid, rule: str
) -> None:
    device = push.device()
    body, headers = good_push(device, vapid)
    for name, value in bad_headers(device, vapid, rule).items():
        headers.pop(name, None)
        if value is not None:
            headers[name] = value
    expected, because = REFUSALS[rule]
    response = await send(client, device, body, headers)
    assert response.status_code == expected, response.text
    [(endpoint, status, reason)] = push.refused
    assert (endpoint, status) == (device.endpoint, expected) and because in reason
    assert push.received == [] and push.attempts == [(device, expected)]


def several_records(device: PushDevice, payload: bytes) -> bytes:
    """A valid aes128gcm body in 50-byte records: RFC 8291 §4 wants push messages in one."""
    sender = ec.generate_private_key(ec.SECP256R1())
    body: bytes = http_ece.encrypt(
        payload, private_key=sender, dh=device.public_key, auth_secret=device.auth, rs=50
    )
    return body


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("garbage", 400),
        ("random bytes", 400),
        ("for another device", 400),
        ("several records", 400),
        ("empty", 400),
        ("too large", 413),
        ("far too large", 413),
    ],
)
async def test_a_body_that_is_not_for_this_subscription_is_refused(
    push: MockPushService, client: httpx.AsyncClient, vapid: Vapid, case: str, status: int
) -> None:
    device = push.device()
    body, headers = good_push(device, vapid)
    body = {
        "garbage": b"\x00" * 16 + b"\x00\x00\x10\x00" + bytes([65, 4]) + b"x" * 120,
        "random bytes": os.urandom(200),
        "several records": several_records(device, b"x" * 200),
        "for another device": good_push(push.device(), vapid)[0],
        "empty": b"",
        "too large": good_push(device, vapid, b"x" * 4096)[0],
        "far too large": os.urandom(100_000),  # refused before it is all read
    }[case]
    response = await send(client, device, body, headers)
    assert response.status_code == status, response.text
    assert [(e, s) for e, s, _ in push.refused] == [(device.endpoint, status)]
    assert push.received == []


async def test_unknown_and_forgotten_endpoints_are_404_and_get_is_405(
    push: MockPushService, client: httpx.AsyncClient, vapid: Vapid
) -> None:
    device = push.device()
    body, headers = good_push(device, vapid)
    unknown = await client.post(f"{push.base_url}/push/nobody", content=body, headers=headers)
    push.forget(device)
    gone = await send(client, device, body, headers)
    get = await client.get(push.device().endpoint)
    assert (unknown.status_code, gone.status_code, get.status_code) == (404, 404, 405)
    assert [s for _, s, _ in push.refused] == [404, 404, 405]
    assert push.attempts == [] and push.received == []


async def test_the_expected_subject_and_key_are_enforced(
    push: MockPushService, client: httpx.AsyncClient, vapid: Vapid
) -> None:
    device = push.device()
    other = Vapid()
    other.generate_keys()
    push.expected_subject = SUBJECT
    push.expect_vapid_key(public_b64(other))
    body, headers = good_push(device, vapid)
    assert (await send(client, device, body, headers)).status_code == 403
    push.expect_vapid_key(public_b64(vapid))
    assert (await send(client, device, body, headers)).status_code == 201
    push.expected_subject = "mailto:someone-else@example.com"
    assert (await send(client, device, body, headers)).status_code == 401
    assert [s for _, s, _ in push.refused] == [403, 401]
    assert len(push.received) == 1


async def test_scripted_answers_come_in_order_then_201(
    push: MockPushService, client: httpx.AsyncClient, vapid: Vapid
) -> None:
    device, bystander = push.device(), push.device()
    push.script(device, (429, {"Retry-After": "1"}), 500, 404, 410, 400)
    statuses, retry_after = [], None
    for _ in range(6):
        response = await send(client, device, *good_push(device, vapid))
        statuses.append(response.status_code)
        retry_after = retry_after or response.headers.get("retry-after")
    assert statuses == [429, 500, 404, 410, 400, 201]
    assert retry_after == "1"
    assert (await send(client, bystander, *good_push(bystander, vapid))).status_code == 201
    assert [s for _, s in push.attempts] == [429, 500, 404, 410, 400, 201, 201]
    assert [r.device for r in push.received] == [device, bystander]
    assert push.refused == []


async def test_a_held_push_is_never_answered(
    push: MockPushService, vapid: Vapid, client: httpx.AsyncClient
) -> None:
    device = push.device()
    push.hold(True)
    async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=0.3)) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await send(impatient, device, *good_push(device, vapid))
    [held] = await push.wait_for_held(1)
    assert held.payload == PAYLOAD
    assert push.received == [] and push.attempts == []
    push.hold(False)
    assert (await send(client, device, *good_push(device, vapid))).status_code == 201
    assert len(push.received) == 1


async def test_wait_for_wakes_on_a_push_and_times_out_without_one(
    push: MockPushService, client: httpx.AsyncClient, vapid: Vapid
) -> None:
    device = push.device()
    waiting = asyncio.create_task(push.wait_for(1))
    await asyncio.sleep(0)
    assert not waiting.done()
    await send(client, device, *good_push(device, vapid))
    assert [r.payload for r in await waiting] == [PAYLOAD]
    with pytest.raises(TimeoutError, match="1 of 2 pushes"):
        await push.wait_for(2, timeout=0.05)


def test_the_threaded_service_serves_sync_tests(vapid: Vapid) -> None:
    with ThreadedPushService() as push, httpx.Client(timeout=5) as http:
        device = push.device()
        push.script(device, 503)
        body, headers = good_push(device, vapid)
        first = http.post(device.endpoint, content=body, headers=headers)
        second = http.post(device.endpoint, content=body, headers=headers)
        assert (first.status_code, second.status_code) == (503, 201)
        assert [r.payload for r in push.wait_for(1)] == [PAYLOAD]
        assert [s for _, s in push.attempts] == [503, 201]
        with pytest.raises(TimeoutError):
            push.wait_for(2, timeout=0.05)
        push.hold(True)
        with pytest.raises(httpx.ReadTimeout):
            http.post(device.endpoint, content=body, headers=headers, timeout=0.3)
        assert len(push.wait_for_held(1)) == 1
