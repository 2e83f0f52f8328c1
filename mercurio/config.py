"""Settings: the prototype's MERCURIO_* names, read once at start-up and validated up front."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.exc import ArgumentError

from mercurio import brokers
from mercurio.channels.smtp import parse_smtp_url
from mercurio.errors import ConfigError
from mercurio.urls import is_sqlite, redact_url, scheme_of, sqlite_file

Environment = Literal["development", "test", "production"]

# The prototype's development key (DESIGN.md). Only ever used outside production.
DEVELOPMENT_KEY = "that-is-a-super-freaking-secret-key"

HMAC_ALGORITHMS = {"HS256", "HS384", "HS512"}
PUBLIC_KEY_ALGORITHMS = {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "EdDSA"}
# A shorter secret can be brute-forced from one token (RFC 7518 3.2: the hash's size).
MIN_HMAC_KEY_BYTES = 32
PUBLIC_KEY_UNSCOPED = (
    "MERCURIO_AUTH_AUDIENCE: with a public key set it or MERCURIO_AUTH_ISSUER, else a token "
    "the key's owner signed for any other service is accepted here"
)

# Where the browsers' own push services take pushes (Chrome, Firefox, Edge, Safari).
PUBLIC_PUSH_HOSTS = (
    "fcm.googleapis.com",
    "android.googleapis.com",
    "updates.push.services.mozilla.com",
    "*.notify.windows.com",
    "web.push.apple.com",
)

CommaList = Annotated[list[str], NoDecode]
# `CommaList | None` would lose NoDecode, so "666" would be read as JSON: a number, no list.
OptionalCommaList = Annotated[list[str] | None, NoDecode]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every setting of a Mercurio node."""

    model_config = SettingsConfigDict(env_prefix="MERCURIO_", extra="ignore", frozen=True)

    env: Environment = "development"
    env_dir: str = "."
    nid: str = ""
    db_conn: str = "sqlite:///mercurio.db"

    auth_pk_text: str = ""
    auth_pk_path: str = ""
    auth_algorithms: CommaList = Field(default_factory=lambda: ["HS256"])
    auth_issuer: str = ""
    auth_audience: str = ""
    publishers: OptionalCommaList = None
    ticket_ttl: int = Field(default=60, ge=5, le=600)
    # Signs stream tickets. A public JWT key cannot: anyone holding it could mint tickets.
    ticket_secret: str = Field(default="", repr=False)

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    allow_public_dev: bool = False  # listen beyond loopback outside production
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    shutdown_grace: float = Field(default=10.0, ge=1, le=3600)
    # Limits at the connection, before any request handler runs (mercurio/protocol.py).
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    header_timeout: float = Field(default=10.0, gt=0, le=3600)
    body_timeout: float = Field(default=30.0, gt=0, le=3600)
    # Longer than the idle expiry of common HTTP clients (httpx: 5 s), so that the client, not
    # the server, closes an idle connection: else a request sent as the server closes it fails
    # (seen as ReadError under load). Behind a load balancer, set it above the balancer's.
    keep_alive_timeout: int = Field(default=15, ge=1, le=3600)
    max_connections: int = Field(default=50_000, ge=1, le=10_000_000)
    cors_allowed_origins: OptionalCommaList = None  # default: any origin outside production
    cors_allowed_headers: CommaList = Field(
        default_factory=lambda: ["Authorization", "Content-Type", "Last-Event-ID"]
    )
    cors_allowed_methods: CommaList = Field(
        default_factory=lambda: ["GET", "POST", "PUT", "DELETE", "OPTIONS"]
    )

    mq: bool = False
    mq_conn: str = ""
    mq_topic: str = "mercurio"
    mq_routing_key: str = "notifications"

    sse_heartbeat: float = Field(default=15.0, gt=0, le=3600)
    sse_retry_ms: int = Field(default=3000, ge=0, le=600_000)
    stream_buffer: int = Field(default=256, ge=1, le=100_000)
    # A slow reader's buffer is bounded in bytes too: 256 frames of 60 kB are 15 MiB a stream.
    stream_buffer_bytes: int = Field(default=1024 * 1024, ge=4096, le=1 << 30)
    replay_max: int = Field(default=1000, ge=1, le=100_000)
    stream_replay_concurrency: int = Field(default=16, ge=1, le=10_000)  # resumes at once
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_destinations: int = Field(default=10_000, ge=1, le=1_000_000)
    max_streams_per_client: int = Field(default=10, ge=1, le=10_000)
    publish_rate: float = Field(default=1000.0, ge=0, le=1_000_000)  # 0: no limit
    publish_burst: int = Field(default=2000, ge=1, le=10_000_000)
    # Rows and bytes are budgeted, not only requests: a 64 KiB broadcast can store 160 MiB.
    publish_max_bytes_per_request: int = Field(default=4 * 1024 * 1024, ge=1024, le=1 << 30)
    publish_row_rate: float = Field(default=20_000.0, ge=0, le=100_000_000)  # 0: no limit
    publish_row_burst: int = Field(default=100_000, ge=1, le=100_000_000)
    publish_byte_rate: float = Field(default=16 * 1024 * 1024, ge=0, le=1 << 40)  # 0: no limit
    publish_byte_burst: int = Field(default=64 * 1024 * 1024, ge=1024, le=1 << 40)
    metrics_token: str = Field(default="", repr=False)
    docs: bool | None = None  # /docs, /redoc, /openapi.json; default: on outside production

    # Web Push (channels/push.py). Default: on outside production; in production with a key.
    push: bool | None = None
    vapid_private_key: str = Field(default="", repr=False)  # PEM text
    vapid_private_key_path: str = ""
    vapid_subject: str = ""  # mailto: or https:, how a push service reaches the operator
    push_endpoint_hosts: CommaList = Field(default_factory=lambda: list(PUBLIC_PUSH_HOSTS))
    push_delay: float = Field(default=0.0, ge=0, le=30 * 86400)  # seconds unread before a push
    # E-mail digests (channels/email.py): on when an SMTP server is named.
    smtp_url: str = Field(default="", repr=False)  # may carry a password
    email_from: str = ""
    email_delay: float = Field(default=900.0, ge=0, le=30 * 86400)  # seconds unread before
    public_url: str = ""  # how people reach this service (links in e-mails)

    # Retention (retention.py): what is purged, how long after, and how often nodes look.
    retention_days: int = Field(default=90, ge=1, le=36_500)
    retention_grace: float = Field(default=3600.0, ge=0, le=30 * 86400)  # after delete/expiry
    inbox_max: int = Field(default=1000, ge=1, le=10_000_000)  # a client's own rows kept
    prune_interval: float = Field(default=3600.0, ge=0.1, le=7 * 86400)  # seconds between runs

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] | None = None

    @field_validator(
        "auth_algorithms",
        "publishers",
        "cors_allowed_origins",
        "cors_allowed_headers",
        "cors_allowed_methods",
        "push_endpoint_hosts",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("auth_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one algorithm")
        unknown = [a for a in value if a not in HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS]
        if unknown:
            raise ValueError(f"unsupported algorithm {unknown[0]!r}")
        families = {a in HMAC_ALGORITHMS for a in value}
        if len(families) > 1:
            # One key cannot serve both families; mixing them invites key-confusion attacks.
            raise ValueError("mixes HMAC (HS*) and public-key algorithms; pick one family")
        return value

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token_shape(cls, value: str) -> str:
        # A bearer key, never echoed back: the error must not quote it.
        if value and not (16 <= len(value) <= 512 and value.isascii() and value.isprintable()):
            raise ValueError("MERCURIO_METRICS_TOKEN: use 16-512 printable ASCII characters")
        if " " in value:
            raise ValueError("MERCURIO_METRICS_TOKEN: must not contain spaces")
        return value

    @field_validator("ticket_secret")
    @classmethod
    def _ticket_secret_shape(cls, value: str) -> str:
        # A signing secret, never echoed back: the error must not quote it.
        if value and not (32 <= len(value) <= 512 and value.isascii() and value.isprintable()):
            raise ValueError("MERCURIO_TICKET_SECRET: use 32-512 printable ASCII characters")
        return value

    @field_validator("nid")
    @classmethod
    def _nid_shape(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", value):
            raise ValueError("use 1-64 letters, digits, '_', '.', ':' or '-'")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if self.mq and not self.mq_conn:
            raise ValueError("MERCURIO_MQ_CONN: required when MERCURIO_MQ is on")
        if self.mq:
            _check_cluster(self.mq_conn, self.db_conn)
        return self

    @property
    def uses_hmac(self) -> bool:
        return self.auth_algorithms[0] in HMAC_ALGORITHMS

    @property
    def publisher_ids(self) -> frozenset[str]:
        if self.publishers is not None:
            return frozenset(self.publishers)
        return frozenset() if self.env == "production" else frozenset({"666"})

    @property
    def cors_origins(self) -> list[str]:
        # Outside production any origin, without credentials, as the prototype's dev settings.
        if self.cors_allowed_origins is not None:
            return self.cors_allowed_origins
        return [] if self.env == "production" else ["*"]

    @property
    def node_id(self) -> str:
        return self.nid or f"{socket.gethostname()}-{self.http_port}"

    @property
    def push_enabled(self) -> bool:
        if self.push is not None:
            return self.push
        has_key = bool(self.vapid_private_key or self.vapid_private_key_path)
        return self.env != "production" or has_key

    @property
    def email_enabled(self) -> bool:
        return bool(self.smtp_url)

    @property
    def email_sender(self) -> str:
        """The From of digests: MERCURIO_EMAIL_FROM, else a local placeholder outside production."""
        return self.email_from or "Mercurio <mercurio@localhost>"

    @property
    def base_url(self) -> str:
        """The service's public address, for links it sends out (no trailing slash)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.ssl_certfile else "http"
        return f"{scheme}://{self.http_host}:{self.http_port}"

    @property
    def docs_enabled(self) -> bool:
        return self.docs if self.docs is not None else self.env != "production"

    @property
    def log_as_json(self) -> bool:
        if self.log_format is not None:
            return self.log_format == "json"
        return self.env == "production"

    def key_text(self) -> str:
        """The verification key: MERCURIO_AUTH_PK_TEXT, else the file, else the dev key."""
        if self.auth_pk_text:
            return self.auth_pk_text
        if self.auth_pk_path:
            return Path(self.auth_pk_path).read_text()
        return DEVELOPMENT_KEY


def _check_cluster(mq_conn: str, db_conn: str) -> None:
    """A broker needs an engine for its URL and a database every node shares."""
    refusal = brokers.unsupported(mq_conn)
    if refusal is not None:
        raise ValueError(refusal)
    # memory:// fans out inside one process only, where one SQLite file serves every node.
    if scheme_of(mq_conn) != "memory" and is_sqlite(db_conn):
        raise ValueError(
            "MERCURIO_DB_CONN: SQLite cannot be shared between nodes; "
            "use postgresql://… with MERCURIO_MQ=on"
        )


def env_files(env: str, env_dir: str) -> list[Path]:
    """The .env files in priority order, first wins (the prototype's order)."""
    names = [f".env.{env}.local"]
    if env != "test":
        names.append(".env.local")
    names += [f".env.{env}", ".env"]
    return [Path(env_dir) / name for name in names]


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    name = f"MERCURIO_{field.upper()}" if field else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    if message.startswith("MERCURIO_"):
        return message
    value = error.get("input")
    shown = f" (got {value!r})" if isinstance(value, str | int | float) and field else ""
    return f"{name}: {message}{shown}"


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from the environment and the .env files; raise ConfigError on a bad one."""
    source = os.environ if environ is None else environ
    env_dir = source.get("MERCURIO_ENV_DIR", ".")
    env = environment_name(source, env_dir)
    if env not in ("development", "test", "production"):
        raise ConfigError(f"MERCURIO_ENV: must be development, test or production (got {env!r})")
    overrides = {"env": env, **overrides}
    # pydantic-settings lets later files win, the prototype lets earlier ones win.
    files = tuple(str(p) for p in reversed(env_files(env, env_dir)) if p.is_file())
    try:
        if environ is None:
            settings = _build(files, overrides)
        else:
            with _environment(environ):
                settings = _build(files, overrides)
    except ValidationError as exc:
        raise ConfigError(_first_error(exc)) from None
    _check_keys(settings)
    _check_tls(settings)
    _check_database(settings.db_conn)
    _check_push(settings)
    _check_email(settings)
    return settings


def environment_name(source: Mapping[str, str], env_dir: str) -> str:
    """MERCURIO_ENV from the real environment, else `.env.local`, else `.env`.

    It picks which `.env.{env}` files to read, so it cannot come from those.
    """
    if "MERCURIO_ENV" in source:
        return source["MERCURIO_ENV"]
    for name in (".env.local", ".env"):
        path = Path(env_dir) / name
        value = dotenv_values(path).get("MERCURIO_ENV") if path.is_file() else None
        if value:
            return value
    return "development"


def _build(files: tuple[str, ...], overrides: dict[str, Any]) -> Settings:
    arguments: dict[str, Any] = {"_env_file": files or None, **overrides}
    return Settings(**arguments)


@contextmanager
def _environment(environ: dict[str, str]) -> Iterator[None]:
    """Swap os.environ for an explicit mapping (tests and tools pass their own)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _check_keys(settings: Settings) -> None:
    if settings.auth_pk_path and not settings.auth_pk_text:
        path = Path(settings.auth_pk_path)
        if not path.is_file():
            raise ConfigError(f"MERCURIO_AUTH_PK_PATH: no such file {str(path)!r}")
    key = settings.key_text().strip()
    if not key:
        raise ConfigError("MERCURIO_AUTH_PK_TEXT: the key is empty")
    if settings.env == "production" and key == DEVELOPMENT_KEY:
        raise ConfigError(
            "MERCURIO_AUTH_PK_TEXT: refusing the development key in production; set a real key"
        )
    if not settings.uses_hmac and "BEGIN" not in key:
        raise ConfigError("MERCURIO_AUTH_PK_TEXT: public-key algorithms need a PEM public key")
    if settings.env == "production" and not settings.uses_hmac and not settings.ticket_secret:
        raise ConfigError(
            "MERCURIO_TICKET_SECRET: required in production with a public-key JWT algorithm; "
            "set 32+ random characters, the same on every node"
        )
    _check_production_keys(settings, key)


def _check_production_keys(settings: Settings, key: str) -> None:
    """Production refuses guessable HMAC keys and public keys that accept any issuer's tokens."""
    if settings.env != "production":
        return
    name = "MERCURIO_AUTH_PK_TEXT" if settings.auth_pk_text else "MERCURIO_AUTH_PK_PATH"
    if settings.uses_hmac and len(key.encode()) < MIN_HMAC_KEY_BYTES:
        raise ConfigError(
            f"{name}: an HMAC key needs at least {MIN_HMAC_KEY_BYTES} bytes in production"
        )
    if not settings.uses_hmac and not (settings.auth_audience or settings.auth_issuer):
        raise ConfigError(PUBLIC_KEY_UNSCOPED)


def startup_warnings(settings: Settings) -> list[str]:
    """What production would refuse but development only warns about."""
    if settings.env != "production" and not settings.uses_hmac:
        if not (settings.auth_audience or settings.auth_issuer):
            return [PUBLIC_KEY_UNSCOPED]
    return []


def check_public_bind(settings: Settings) -> None:
    """Outside production the development key and /api/dev/token are open: loopback only."""
    if settings.env == "production" or settings.allow_public_dev:
        return
    if not _is_loopback(settings.http_host):
        raise ConfigError(
            f"MERCURIO_HTTP_HOST: refusing {settings.http_host!r} in {settings.env}, where "
            "anyone may mint tokens; bind 127.0.0.1, or set MERCURIO_ALLOW_PUBLIC_DEV=true"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _check_database(conn: str) -> None:
    """A URL the store can open: a known scheme; for SQLite a file in an existing folder."""
    try:
        path = sqlite_file(conn)
    except (ArgumentError, ValueError):
        raise ConfigError(f"MERCURIO_DB_CONN: not a database URL {redact_url(conn)!r}") from None
    if path is None:
        return
    if path in ("", ":memory:"):
        # Each of the store's connections would get its own empty database.
        raise ConfigError("MERCURIO_DB_CONN: an in-memory SQLite database; name a file")
    if not Path(path).parent.is_dir():
        # A typo in the path must not start a fresh, empty database somewhere else.
        raise ConfigError(
            f"MERCURIO_DB_CONN: no such folder {str(Path(path).parent)!r} for the SQLite file"
        )


def _check_tls(settings: Settings) -> None:
    if bool(settings.ssl_certfile) != bool(settings.ssl_keyfile):
        missing = "MERCURIO_SSL_KEYFILE" if settings.ssl_certfile else "MERCURIO_SSL_CERTFILE"
        raise ConfigError(f"{missing}: TLS needs both a certificate and its private key")
    for name, value in (("CERTFILE", settings.ssl_certfile), ("KEYFILE", settings.ssl_keyfile)):
        if value and not Path(value).is_file():
            raise ConfigError(f"MERCURIO_SSL_{name}: no such file {value!r}")


def _check_push(settings: Settings) -> None:
    subject = settings.vapid_subject
    if subject and not subject.startswith(("mailto:", "https://")):
        raise ConfigError(
            f"MERCURIO_VAPID_SUBJECT: use a mailto: or https:// URL (got {subject!r})"
        )
    path = settings.vapid_private_key_path
    if path and not settings.vapid_private_key and not Path(path).is_file():
        raise ConfigError(f"MERCURIO_VAPID_PRIVATE_KEY_PATH: no such file {path!r}")
    for host in settings.push_endpoint_hosts:
        if not re.fullmatch(r"(\*\.)?[A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]", host):
            raise ConfigError(f"MERCURIO_PUSH_ENDPOINT_HOSTS: not a host name {host!r}")
    if settings.env != "production" or not settings.push_enabled:
        return
    if not (settings.vapid_private_key or path):
        raise ConfigError(
            "MERCURIO_VAPID_PRIVATE_KEY: required in production with Web Push on; make a pair "
            "with `mercurio push keys`, or set MERCURIO_PUSH=off"
        )
    if not subject:
        raise ConfigError(
            "MERCURIO_VAPID_SUBJECT: required in production with Web Push on "
            "(mailto:you@example.com), so push services can reach you"
        )


def _check_email(settings: Settings) -> None:
    url = settings.smtp_url
    if url:
        if scheme_of(url) not in ("smtp", "smtps"):
            raise ConfigError(
                f"MERCURIO_SMTP_URL: use smtp://host:port or smtps://host:port "
                f"(got {redact_url(url)!r})"
            )
        try:
            parse_smtp_url(url)
        except ValueError as exc:
            raise ConfigError(f"MERCURIO_SMTP_URL: {exc} (got {redact_url(url)!r})") from None
        if settings.env == "production" and not settings.email_from:
            raise ConfigError("MERCURIO_EMAIL_FROM: required with MERCURIO_SMTP_URL in production")
    sender = settings.email_from
    if sender and ("@" not in parseaddr(sender)[1] or any(ch in sender for ch in "\r\n")):
        raise ConfigError(
            f"MERCURIO_EMAIL_FROM: use an address, e.g. Mercurio <noreply@example.com> "
            f"(got {sender!r})"
        )
    public = settings.public_url
    if public and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", public):
        raise ConfigError(f"MERCURIO_PUBLIC_URL: use http(s)://host[:port][/path] (got {public!r})")
