"""The VAPID key pair (RFC 8292) this service signs its pushes with."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid, VapidException

from mercurio.config import Settings
from mercurio.errors import ConfigError
from mercurio.urls import sqlite_file

KEY_FILE = ".mercurio-vapid.pem"
DEVELOPMENT_SUBJECT = "mailto:mercurio@localhost"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_key_b64(vapid: Vapid) -> str:
    """The public key as browsers take it for applicationServerKey: an uncompressed point."""
    raw = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(raw)


def new_pair() -> tuple[str, str]:
    """A fresh key pair: the private key as PEM text, the public key as base64url."""
    vapid = Vapid()
    vapid.generate_keys()
    return vapid.private_pem().decode(), public_key_b64(vapid)


def load(settings: Settings) -> Vapid | None:
    """The configured key; outside production one made once and kept beside the database.

    None when Web Push is off. A key that does not parse is a ConfigError (one line at start).
    """
    if not settings.push_enabled:
        return None
    if settings.vapid_private_key:
        return _parse(settings.vapid_private_key.encode(), "MERCURIO_VAPID_PRIVATE_KEY")
    if settings.vapid_private_key_path:
        path = Path(settings.vapid_private_key_path)
        return _parse(path.read_bytes(), "MERCURIO_VAPID_PRIVATE_KEY_PATH")
    if settings.env == "production":  # config refuses this; never make a key in production
        raise ConfigError("MERCURIO_VAPID_PRIVATE_KEY: required in production with Web Push on")
    return _parse(_kept_key(key_path(settings)), str(key_path(settings)))


def subject(settings: Settings) -> str:
    return settings.vapid_subject or DEVELOPMENT_SUBJECT


def key_path(settings: Settings) -> Path:
    """Beside the SQLite database (nodes sharing it share the key), else in MERCURIO_ENV_DIR."""
    path = sqlite_file(settings.db_conn)
    if path and path != ":memory:":
        return Path(path).resolve().parent / KEY_FILE
    return Path(settings.env_dir).resolve() / KEY_FILE


def _parse(pem: bytes, where: str) -> Vapid:
    try:
        vapid = Vapid.from_pem(pem)
        public_key_b64(vapid)
    except (VapidException, ValueError, TypeError, AttributeError):
        raise ConfigError(f"{where}: not a PEM EC P-256 private key") from None
    return vapid


def _kept_key(path: Path) -> bytes:
    """The key kept in path, made once; concurrent starters all end up with the first one."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f"{path.name}.{uuid.uuid4().hex}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(new_pair()[0])
        try:
            os.link(draft, path)  # atomic, and never replaces another node's key
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_bytes()
