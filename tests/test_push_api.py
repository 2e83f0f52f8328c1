"""Web Push routes (issue 12): the VAPID key, each client's subscriptions, the SSRF fence.

Against a real server process. Every refusal leaves the stored subscriptions untouched.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tests.conftest import PUBLISHER, ROOT, ServerProcess, bearer, new_client_id
from tests.test_config_startup import assert_one_line_refusal, serve

LISTED = "127.0.0.1,fcm.googleapis.com,*.notify.windows.com"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def browser_keys() -> dict[str, str]:
    """Keys shaped like a browser's: a P-256 public point and a 16-byte auth secret."""
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    raw = b"\x04" + point.x.to_bytes(32, "big") + point.y.to_bytes(32, "big")
    return {"p256dh": b64url(raw), "auth": b64url(os.urandom(16))}


def subscription(endpoint: str) -> dict[str, object]:
    return {"endpoint": endpoint, "expirationTime": None, "keys": browser_keys()}


@pytest.fixture(scope="module")
def push_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("push-api")
    proc = ServerProcess.in_folder(folder, {"MERCURIO_PUSH_ENDPOINT_HOSTS": LISTED}).start()
    yield proc
    proc.stop()


def routes(server: ServerProcess, user: str) -> str:
    return f"{server.url}/api/clients/{user}/push-subscriptions"


def listed(server: ServerProcess, user: str) -> list[str]:
    answer = httpx.get(routes(server, user), headers=bearer(user))
    assert answer.status_code == 200, answer.text
    return [s["endpoint"] for s in answer.json()["subscriptions"]]


def test_vapid_public_key_is_an_uncompressed_p256_point_kept_across_restarts(
    tmp_path: Path,
) -> None:
    proc = ServerProcess.in_folder(tmp_path).start()
    try:
        first = httpx.get(f"{proc.url}/api/push/vapid-public-key", headers=bearer("123"))
        assert first.status_code == 200, first.text
        key = unb64url(first.json()["publicKey"])
        assert len(key) == 65 and key[0] == 4
        assert httpx.get(f"{proc.url}/api/push/vapid-public-key").status_code == 401
    finally:
        proc.stop()
    proc = ServerProcess.in_folder(tmp_path).start()
    try:
        again = httpx.get(f"{proc.url}/api/push/vapid-public-key", headers=bearer("123"))
        assert again.json() == first.json()  # browsers' subscriptions stay valid
    finally:
        proc.stop()


def test_push_off_answers_404_on_every_push_route(tmp_path: Path) -> None:
    proc = ServerProcess.in_folder(tmp_path, {"MERCURIO_PUSH": "off"}).start()
    try:
        key = httpx.get(f"{proc.url}/api/push/vapid-public-key", headers=bearer("123"))
        assert key.status_code == 404 and "off" in key.json()["error"]
        body = subscription("https://fcm.googleapis.com/fcm/send/abc")
        added = httpx.post(routes(proc, "123"), json=body, headers=bearer("123"))
        assert added.status_code == 404
    finally:
        proc.stop()


def test_register_is_idempotent_per_endpoint_and_lists_and_deletes(
    push_server: ServerProcess,
) -> None:
    user = new_client_id()
    body = subscription("https://fcm.googleapis.com/fcm/send/" + new_client_id())
    first = httpx.post(routes(push_server, user), json=body, headers=bearer(user))
    assert first.status_code == 201, first.text
    assert first.json()["endpoint"] == body["endpoint"]
    second = httpx.post(routes(push_server, user), json=body, headers=bearer(user))
    assert second.status_code == 201 and second.json()["id"] == first.json()["id"]
    assert listed(push_server, user) == [body["endpoint"]]
    one = f"{routes(push_server, user)}/{first.json()['id']}"
    assert httpx.delete(one, headers=bearer(user)).json() == {"status": "deleted"}
    assert listed(push_server, user) == []
    assert httpx.delete(one, headers=bearer(user)).status_code == 404


def test_another_user_may_not_see_add_or_delete_subscriptions(push_server: ServerProcess) -> None:
    owner, other = new_client_id(), new_client_id()
    body = subscription("https://fcm.googleapis.com/fcm/send/" + new_client_id())
    added = httpx.post(routes(push_server, owner), json=body, headers=bearer(owner)).json()
    one = f"{routes(push_server, owner)}/{added['id']}"
    assert httpx.get(routes(push_server, owner), headers=bearer(other)).status_code == 403
    assert (
        httpx.post(routes(push_server, owner), json=body, headers=bearer(other)).status_code == 403
    )
    assert httpx.delete(one, headers=bearer(other)).status_code == 403
    assert httpx.delete(one, headers=PUBLISHER).status_code == 403
    # Another user deleting their own path with the owner's id finds nothing.
    theirs = f"{routes(push_server, other)}/{added['id']}"
    assert httpx.delete(theirs, headers=bearer(other)).status_code == 404
    assert listed(push_server, owner) == [body["endpoint"]]


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [
        ("https://evil.example.com/push/1", "not a known push service"),
        ("http://fcm.googleapis.com/fcm/send/1", "https"),
        ("https://user:pw@fcm.googleapis.com/fcm/send/1", "credentials"),
        ("http://127.0.0.2:9/push/1", "not a known push service"),
        ("http://169.254.169.254/latest/meta-data", "not a known push service"),
        ("https://notify.windows.com.evil.example/w", "not a known push service"),
        ("ftp://fcm.googleapis.com/x", "https"),
        ("https://fcm.googleapis.com:99999/x", "not a URL"),
    ],
)
def test_endpoint_outside_the_allow_list_is_refused_and_not_stored(
    push_server: ServerProcess, endpoint: str, why: str
) -> None:
    user = new_client_id()
    answer = httpx.post(
        routes(push_server, user), json=subscription(endpoint), headers=bearer(user)
    )
    assert answer.status_code == 422, answer.text
    assert why in answer.json()["error"]
    assert listed(push_server, user) == []


def test_listed_wildcard_and_loopback_hosts_are_accepted(push_server: ServerProcess) -> None:
    user = new_client_id()
    for endpoint in ("https://wns2-by3p.notify.windows.com/w/?token=x", "http://127.0.0.1:9/p"):
        answer = httpx.post(
            routes(push_server, user), json=subscription(endpoint), headers=bearer(user)
        )
        assert answer.status_code == 201, answer.text
    assert len(listed(push_server, user)) == 2


@pytest.mark.parametrize(
    "keys",
    [
        {"p256dh": b64url(b"\x04" + b"x" * 10), "auth": b64url(os.urandom(16))},
        {"p256dh": browser_keys()["p256dh"], "auth": b64url(b"short")},
        {"p256dh": "not base64url!", "auth": b64url(os.urandom(16))},
        {"auth": b64url(os.urandom(16))},
    ],
)
def test_subscription_with_bad_keys_is_refused(
    push_server: ServerProcess, keys: dict[str, str]
) -> None:
    user = new_client_id()
    body = {"endpoint": "https://fcm.googleapis.com/fcm/send/" + user, "keys": keys}
    answer = httpx.post(routes(push_server, user), json=body, headers=bearer(user))
    assert answer.status_code == 422, answer.text
    assert listed(push_server, user) == []


def test_production_with_push_on_and_no_key_refuses_to_start(tmp_path: Path) -> None:
    env = {
        "MERCURIO_ENV": "production",
        "MERCURIO_AUTH_PK_TEXT": "p" * 40,
        "MERCURIO_DB_CONN": f"sqlite:///{tmp_path}/m.db",
        "MERCURIO_PUSH": "on",
    }
    assert_one_line_refusal(serve(env), "MERCURIO_VAPID_PRIVATE_KEY")
    keyed = {**env, "MERCURIO_VAPID_PRIVATE_KEY_PATH": str(tmp_path / "missing.pem")}
    assert_one_line_refusal(serve(keyed), "MERCURIO_VAPID_PRIVATE_KEY_PATH")
    garbage = {
        **env,
        "MERCURIO_VAPID_PRIVATE_KEY": "not a key",
        "MERCURIO_VAPID_SUBJECT": "mailto:a@b.c",
    }
    assert_one_line_refusal(serve(garbage), "MERCURIO_VAPID_PRIVATE_KEY")
    bad_subject = {**env, "MERCURIO_VAPID_SUBJECT": "admin@example.com"}
    assert_one_line_refusal(serve(bad_subject), "MERCURIO_VAPID_SUBJECT")


def test_push_keys_prints_a_pair_the_server_then_publishes(tmp_path: Path) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "mercurio", "push", "keys"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    ).stdout
    pem, _, comment = printed.partition("-----END PRIVATE KEY-----")
    pem += "-----END PRIVATE KEY-----\n"
    public = comment.strip().rsplit(" ", 1)[-1]
    private = load_pem_private_key(pem.encode(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    numbers = private.public_key().public_numbers()
    assert unb64url(public) == b"\x04" + numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(
        32, "big"
    )
    proc = ServerProcess.in_folder(tmp_path, {"MERCURIO_VAPID_PRIVATE_KEY": pem}).start()
    try:
        answer = httpx.get(f"{proc.url}/api/push/vapid-public-key", headers=bearer("123"))
        assert answer.json() == {"publicKey": public}
    finally:
        proc.stop()
