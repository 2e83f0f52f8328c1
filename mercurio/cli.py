"""The `mercurio` command: serve, mint tokens, migrate the database."""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Annotated

import typer

from mercurio.config import ConfigError, Settings, load_settings

app = typer.Typer(help="Mercurio: notifications over server-sent events.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        typer.echo(f"mercurio: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (MERCURIO_HTTP_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (MERCURIO_HTTP_PORT)")] = None,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development)")] = False,
) -> None:
    """Run the HTTP server."""
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["http_host"] = host
    if port is not None:
        overrides["http_port"] = port
    settings = _settings(**overrides)
    from mercurio.logs import configure_logging

    configure_logging(settings)
    if reload:
        import uvicorn

        uvicorn.run(
            "mercurio.server:reload_app",
            factory=True,
            reload=True,
            host=settings.http_host,
            port=settings.http_port,
        )
        return
    from mercurio.server import build_server

    server = build_server(settings)
    server.run()
    if not server.started:
        sys.exit(3)


_TTL = re.compile(r"(\d+)([smhd]?)")


def _parse_ttl(text: str) -> float | None:
    if text in ("0", "none", "never"):
        return None
    match = _TTL.fullmatch(text)
    if not match:
        raise typer.BadParameter("use a number with s, m, h or d, e.g. 1h; 'never' for none")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


@app.command()
def token(
    user: Annotated[str, typer.Option(help="The user id the token speaks for")],
    publisher: Annotated[bool, typer.Option(help="Grant the publisher role")] = False,
    ttl: Annotated[str, typer.Option(help="Lifetime: 30m, 1h, 7d, or 'never'")] = "1h",
) -> None:
    """Print a token signed with the configured key."""
    from mercurio.auth import Authenticator, AuthError

    settings = _settings()
    try:
        typer.echo(
            Authenticator(settings).mint_token(user, publisher=publisher, ttl=_parse_ttl(ttl))
        )
    except AuthError as exc:
        typer.echo(f"mercurio: {exc.message}", err=True)
        raise typer.Exit(2) from None


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema to the newest migration."""
    from mercurio.config import redact_url
    from mercurio.store import upgrade_database

    settings = _settings()
    try:
        asyncio.run(upgrade_database(settings.db_conn))
    except ConfigError as exc:
        typer.echo(f"mercurio: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"database at {redact_url(settings.db_conn)} is up to date")


def main() -> None:
    """Entry point of the `mercurio` command."""
    app()
