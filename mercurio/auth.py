"""Tokens and principals: who is calling, and may they publish."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from mercurio.config import Settings
from mercurio.errors import ConfigError
from mercurio.urls import sqlite_file

TICKET_TYPE = "mercurio-stream-ticket"
TICKET_SECRET_FILE = ".mercurio-ticket-secret"
VERIFIED_CACHE_SIZE = 10_000
EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class AuthError(Exception):
    """A request's credentials were refused; carries the HTTP status and a clear message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    user_id: str
    is_publisher: bool
    expires_at: float | None
    email: str | None = None
    """The token's `email` claim, when it looks like an address (where digests may go)."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """A verified, not yet consumed, single-use stream ticket."""

    ticket_id: str
    client_id: str
    expires_at: float
    principal: Principal


_DECODE_ERRORS: list[tuple[type[Exception], str]] = [
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "token audience not accepted"),
    (jwt.InvalidIssuerError, "token issuer not accepted"),
    (jwt.MissingRequiredClaimError, "token lacks a required claim"),
    (jwt.InvalidAlgorithmError, "token algorithm not allowed"),
    (jwt.InvalidSignatureError, "token signature is invalid"),
    (jwt.InvalidKeyError, "token cannot be verified with the configured key"),
    (jwt.DecodeError, "token is malformed"),
]


def _describe(exc: jwt.PyJWTError) -> str:
    for kind, message in _DECODE_ERRORS:
        if isinstance(exc, kind):
            return message
    return "token is invalid"


def _claim_has(claims: dict[str, Any], name: str, wanted: str) -> bool:
    value = claims.get(name)
    if isinstance(value, str):
        return wanted in value.split()
    if isinstance(value, list):
        return wanted in value
    return False


class Authenticator:
    """Verifies JWTs and mints and verifies stream tickets."""

    def __init__(self, settings: Settings) -> None:
        self._algorithms = list(settings.auth_algorithms)
        self._key: str | bytes = settings.key_text()
        if settings.uses_hmac:
            self._key = self._key.encode()
        self._issuer = settings.auth_issuer or None
        self._audience = settings.auth_audience or None
        self._publishers = settings.publisher_ids
        self._ticket_ttl = settings.ticket_ttl
        self._can_sign = settings.uses_hmac
        self._settings = settings
        self._ticket_secret: bytes | None = None
        # Publishers send the same token with every request; checking its signature and
        # claims once per token, not per request, halves the CPU of a publish. Only tokens
        # that passed are kept, each until its own exp, and the whole cache is bounded.
        self._verified: dict[str, Principal] = {}

    def verify(self, token: str) -> Principal:
        """Decode and check a bearer token, or raise AuthError(401)."""
        cached = self._verified.get(token)
        if cached is not None and (cached.expires_at is None or cached.expires_at > time.time()):
            return cached
        principal = self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = principal
        return principal

    def _verify(self, token: str) -> Principal:
        if len(token) > 8192:
            raise AuthError(401, "token is too large")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                options={"require": [], "verify_aud": self._audience is not None},
                leeway=5,
            )
        except jwt.PyJWTError as exc:
            raise AuthError(401, _describe(exc)) from None
        if claims.get("typ") == TICKET_TYPE:
            raise AuthError(401, "a stream ticket is not a bearer token")
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        user = claims.get("user_id", claims.get("sub"))
        if isinstance(user, int) and not isinstance(user, bool):
            user = str(user)
        if not isinstance(user, str) or not user:
            raise AuthError(401, "token has no user_id or sub claim")
        publisher = (
            _claim_has(claims, "roles", "publisher")
            or _claim_has(claims, "scope", "notifications:publish")
            or user in self._publishers
        )
        exp = claims.get("exp")
        expires = float(exp) if isinstance(exp, int | float) else None
        return Principal(user, publisher, expires, _email_claim(claims.get("email")))

    @property
    def _ticket_key(self) -> bytes:
        # Read on first use: a node that never mints a ticket never writes a secret file.
        if self._ticket_secret is None:
            self._ticket_secret = ticket_key(self._settings)
        return self._ticket_secret

    def mint_ticket(self, principal: Principal, client_id: str) -> tuple[str, int]:
        """A single-use stream ticket for client_id, and its lifetime in seconds."""
        now = int(time.time())
        claims = {
            "typ": TICKET_TYPE,
            "jti": uuid.uuid4().hex,
            "sub": principal.user_id,
            "cid": client_id,
            "exp": now + self._ticket_ttl,
            "pub": principal.is_publisher,
        }
        if principal.expires_at is not None:
            claims["texp"] = principal.expires_at
        return jwt.encode(claims, self._ticket_key, algorithm="HS256"), self._ticket_ttl

    def read_ticket(self, ticket: str, client_id: str) -> Ticket:
        """Verify a ticket's signature, lifetime and client; consumption is the store's job."""
        if len(ticket) > 2048:
            raise AuthError(401, "stream ticket is invalid")
        try:
            claims = jwt.decode(
                ticket,
                self._ticket_key,
                algorithms=["HS256"],
                options={"require": ["exp", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "stream ticket expired") from None
        except jwt.PyJWTError:
            raise AuthError(401, "stream ticket is invalid") from None
        if not _ticket_shaped(claims):
            # Signed by us but not as mint_ticket writes them: refuse, never a 500.
            raise AuthError(401, "stream ticket is invalid")
        if claims.get("cid") != client_id:
            raise AuthError(403, "stream ticket is for another client")
        texp = claims.get("texp")
        principal = Principal(claims["sub"], claims.get("pub") is True, _number(texp))
        return Ticket(claims["jti"], client_id, float(claims["exp"]), principal)

    def mint_token(self, user_id: str, *, publisher: bool = False, ttl: float | None = 3600) -> str:
        """A bearer token signed with the configured HMAC key (CLI and development)."""
        if not self._can_sign:
            raise AuthError(500, "cannot mint tokens: the configured key is a public key")
        claims: dict[str, Any] = {"user_id": user_id, "sub": user_id, "iat": int(time.time())}
        if ttl is not None:
            claims["exp"] = int(time.time() + ttl)
        if publisher:
            claims["roles"] = ["publisher"]
        if self._issuer:
            claims["iss"] = self._issuer
        if self._audience:
            claims["aud"] = self._audience
        return jwt.encode(claims, self._key, algorithm=self._algorithms[0])


def _email_claim(value: object) -> str | None:
    """The claim when it is shaped like one address; anything else is ignored, not refused
    (identity providers put all sorts in it, and the token is valid without it)."""
    if isinstance(value, str) and len(value) <= 320 and EMAIL_SHAPE.fullmatch(value):
        return value
    return None


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _ticket_shaped(claims: dict[str, Any]) -> bool:
    """The claims have the types mint_ticket gives them."""
    sub, jti, cid = claims.get("sub"), claims.get("jti"), claims.get("cid")
    return (
        claims.get("typ") == TICKET_TYPE
        and isinstance(sub, str)
        and bool(sub)
        and isinstance(jti, str)
        and bool(jti)
        and isinstance(cid, str)
        and _number(claims.get("exp")) is not None
        and ("texp" not in claims or _number(claims["texp"]) is not None)
    )


def ticket_key(settings: Settings) -> bytes:
    """The HMAC key of stream tickets; never derived from a public key."""
    if settings.ticket_secret:
        seed = settings.ticket_secret.encode()
    elif settings.uses_hmac:
        # The HMAC JWT key is secret and shared by the whole cluster: tickets may lean on it.
        seed = settings.key_text().encode()
    else:
        # Public JWT key outside production (config refuses production without a secret).
        seed = _stored_secret(ticket_secret_path(settings))
    return hmac.new(seed, b"mercurio stream tickets", hashlib.sha256).digest()


def ticket_secret_path(settings: Settings) -> Path:
    """Beside the SQLite database, so development nodes sharing it share tickets too."""
    path = sqlite_file(settings.db_conn)
    if path and path != ":memory:":
        return Path(path).resolve().parent / TICKET_SECRET_FILE
    return Path(settings.env_dir).resolve() / TICKET_SECRET_FILE


def _stored_secret(path: Path) -> bytes:
    """The secret kept in path, made once; concurrent starters all end up with the first one."""
    if not path.is_file() or not path.read_text().strip():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f"{path.name}.{uuid.uuid4().hex}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48) + "\n")
        try:
            os.link(draft, path)  # atomic, and refuses to replace another node's secret
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    secret = path.read_text().strip()
    if not secret:
        raise ConfigError(f"MERCURIO_TICKET_SECRET: unset and {str(path)!r} is empty; delete it")
    return secret.encode()


def single_authorization(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The one Authorization header of raw ASGI headers; two are refused, not picked from."""
    found: str | None = None
    for name, value in headers:
        if name == b"authorization":
            if found is not None:
                raise AuthError(400, "send one Authorization header, not several")
            found = value.decode("latin-1")
    return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header, if it is one."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "Authorization header must be 'Bearer <token>'")
    return token.strip()
