"""Reading and redacting the URLs of settings (database, broker); a leaf module."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.engine import make_url

from mercurio.errors import ConfigError

DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
"""MERCURIO_DB_CONN scheme → the async SQLAlchemy driver that opens it."""


def redact_url(url: str) -> str:
    """The URL with its password hidden, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def scheme_of(url: str) -> str:
    return urlsplit(url.strip()).scheme.lower()


def database_url(conn: str) -> str:
    """MERCURIO_DB_CONN as an async SQLAlchemy URL (a bare path means a SQLite file)."""
    conn = conn.strip()
    if not conn:
        raise ConfigError("MERCURIO_DB_CONN: empty; use a SQLite path or a postgresql:// URL")
    if "://" not in conn:
        return f"sqlite+aiosqlite:///{conn}"
    scheme, rest = conn.split("://", 1)
    driver = DRIVERS.get(scheme)
    if driver is None:
        raise ConfigError(
            f"MERCURIO_DB_CONN: unsupported scheme {scheme!r} in {redact_url(conn)!r}; "
            "use sqlite:///path or postgresql://user@host/db"
        )
    return f"{driver}://{rest}"


def sqlite_file(conn: str) -> str | None:
    """The file of a SQLite MERCURIO_DB_CONN (":memory:" or "" when it names none), else None."""
    url = make_url(database_url(conn))
    if url.get_backend_name() != "sqlite":
        return None
    return ":memory:" if url.query.get("mode") == "memory" else (url.database or "")


def is_sqlite(conn: str) -> bool:
    return database_url(conn).startswith("sqlite")


def libpq_url(conn: str) -> str:
    """A postgresql:// URL as asyncpg itself takes it (no SQLAlchemy driver suffix)."""
    scheme, sep, rest = conn.strip().partition("://")
    if scheme.lower() in ("postgres", "postgresql+asyncpg"):
        scheme = "postgresql"
    return f"{scheme}{sep}{rest}"
