"""Tokens: what is accepted, what is refused, and with which message."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mercurio.auth import Authenticator, AuthError, Principal, bearer_token
from mercurio.config import DEVELOPMENT_KEY, load_settings

KEY = DEVELOPMENT_KEY.encode()


def hs(claims: dict[str, object], key: bytes = KEY, alg: str = "HS256") -> str:
    """Sign by hand, so tests can make tokens PyJWT itself would refuse to make."""
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    header = jwt.utils.base64url_encode(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = jwt.utils.base64url_encode(json.dumps(claims).encode())
    signing_input = header + b"." + payload
    signature = jwt.utils.base64url_encode(hmac.new(key, signing_input, digest).digest())
    return (signing_input + b"." + signature).decode()


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator(load_settings({"MERCURIO_ENV": "test"}))


def refused(auth: Authenticator, token: str) -> AuthError:
    with pytest.raises(AuthError) as caught:
        auth.verify(token)
    return caught.value


def test_prototype_claims(auth: Authenticator) -> None:
    assert auth.verify(hs({"user_id": "123"})) == Principal("123", False, None)
    assert auth.verify(hs({"sub": "456"})).user_id == "456"
    assert auth.verify(hs({"user_id": 123})).user_id == "123"
    assert auth.verify(hs({"user_id": "666"})).is_publisher


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "svc", "roles": ["publisher"]},
        {"sub": "svc", "roles": "reader publisher"},
        {"sub": "svc", "scope": "notifications:read notifications:publish"},
        {"sub": "svc", "scope": ["notifications:publish"]},
    ],
)
def test_publisher_claims(auth: Authenticator, claims: dict[str, object]) -> None:
    assert auth.verify(hs(claims)).is_publisher


def test_plain_user_is_not_a_publisher(auth: Authenticator) -> None:
    assert not auth.verify(hs({"sub": "1", "roles": ["reader"], "scope": "publish"})).is_publisher


def test_refusals_say_why(auth: Authenticator) -> None:
    now = int(time.time())
    none_token = jwt.encode({"sub": "1"}, None, algorithm="none")
    cases = {
        none_token: "algorithm not allowed",
        hs({"sub": "1"}, alg="HS512"): "algorithm not allowed",
        hs({"sub": "1"}, key=b"another-key-that-is-long-enough-32b"): "signature",
        "garbage": "malformed",
        "a.b.c": "malformed",
        hs({"sub": "1", "exp": now - 60}): "expired",
        hs({"sub": "1", "nbf": now + 600}): "not yet valid",
        hs({"role": "x"}): "no user_id",
        hs({"sub": ""}): "no user_id",
        "x" * 9000: "too large",
    }
    for token, reason in cases.items():
        error = refused(auth, token)
        assert error.status == 401
        assert reason in error.message, (token[:20], error.message)


def test_tampered_payload_is_refused(auth: Authenticator) -> None:
    header, _, signature = hs({"sub": "123"}).split(".")
    forged_payload = jwt.utils.base64url_encode(b'{"sub":"666"}').decode()
    assert "signature" in refused(auth, f"{header}.{forged_payload}.{signature}").message


def test_issuer_and_audience_when_configured() -> None:
    auth = Authenticator(
        load_settings({"MERCURIO_AUTH_ISSUER": "https://idp", "MERCURIO_AUTH_AUDIENCE": "mercurio"})
    )
    good = hs({"sub": "1", "iss": "https://idp", "aud": "mercurio"})
    assert auth.verify(good).user_id == "1"
    assert "issuer" in refused(auth, hs({"sub": "1", "iss": "evil", "aud": "mercurio"})).message
    assert (
        "audience" in refused(auth, hs({"sub": "1", "iss": "https://idp", "aud": "other"})).message
    )
    assert "claim" in refused(auth, hs({"sub": "1"})).message


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_public_key_algorithms(alg: str) -> None:
    private = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if alg == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    auth = Authenticator(
        load_settings({"MERCURIO_AUTH_ALGORITHMS": alg, "MERCURIO_AUTH_PK_TEXT": public_pem})
    )
    token = jwt.encode({"sub": "9"}, private, algorithm=alg)
    assert auth.verify(token).user_id == "9"
    # Key confusion: the public key used as an HMAC secret must not pass.
    confused = hs({"sub": "9"}, key=public_pem.encode())
    assert refused(auth, confused).status == 401


def test_tickets(auth: Authenticator) -> None:
    principal = Principal("123", False, 2e9)
    ticket, ttl = auth.mint_ticket(principal, "123")
    assert ttl == 60
    read = auth.read_ticket(ticket, "123")
    assert read.principal == principal and read.client_id == "123"
    with pytest.raises(AuthError) as other:
        auth.read_ticket(ticket, "456")
    assert other.value.status == 403
    with pytest.raises(AuthError):
        auth.read_ticket(ticket + "x", "123")
    with pytest.raises(AuthError, match="not a bearer token"):
        # A ticket signed with the main key would be a way to forge one; ours never are,
        # and a ticket-typed JWT is never a bearer token.
        auth.verify(hs({"sub": "123", "typ": "mercurio-stream-ticket"}))


def test_bearer_header_parsing() -> None:
    assert bearer_token(None) is None
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    with pytest.raises(AuthError):
        bearer_token("Basic abc")
    with pytest.raises(AuthError):
        bearer_token("Bearer ")
