"""The `mercurio` command: serve, mint tokens, migrate and prune the database."""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Annotated, Any

import typer

from mercurio.config import Settings, load_settings
from mercurio.errors import ConfigError

# Plain help (no rich panels): typer's rich help prints every option's Python type, so a
# flag read "--all <bool>"; here flags are bare and values show the metavars given below.
PLAIN = None
app = typer.Typer(
    help="Mercurio: notifications over server-sent events.",
    no_args_is_help=True,
    rich_markup_mode=PLAIN,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True, rich_markup_mode=PLAIN)
app.add_typer(db_app, name="db")
push_app = typer.Typer(help="Web Push.", no_args_is_help=True, rich_markup_mode=PLAIN)
app.add_typer(push_app, name="push")


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"mercurio {version('mercurio')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            typer.echo("mercurio (not installed: no version)")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    """Mercurio: notifications over server-sent events."""


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        typer.echo(f"mercurio: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(metavar="ADDRESS", help="Bind address (MERCURIO_HTTP_HOST)")
    ] = None,
    port: Annotated[
        int | None, typer.Option(metavar="PORT", help="Port (MERCURIO_HTTP_PORT)")
    ] = None,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development)")] = False,
    ssl_certfile: Annotated[
        str | None,
        typer.Option(
            metavar="PEM", help="Serve HTTPS with this PEM certificate (MERCURIO_SSL_CERTFILE)"
        ),
    ] = None,
    ssl_keyfile: Annotated[
        str | None,
        typer.Option(
            metavar="PEM", help="The certificate's PEM private key (MERCURIO_SSL_KEYFILE)"
        ),
    ] = None,
) -> None:
    """Run the HTTP server."""
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["http_host"] = host
    if port is not None:
        overrides["http_port"] = port
    if ssl_certfile is not None:
        overrides["ssl_certfile"] = ssl_certfile
    if ssl_keyfile is not None:
        overrides["ssl_keyfile"] = ssl_keyfile
    settings = _settings(**overrides)
    from mercurio.logs import configure_logging

    configure_logging(settings)
    _ready_to_serve(settings)
    if reload:
        import uvicorn

        uvicorn.run(
            "mercurio.server:reload_app",
            factory=True,
            reload=True,
            host=settings.http_host,
            port=settings.http_port,
            ssl_certfile=settings.ssl_certfile or None,
            ssl_keyfile=settings.ssl_keyfile or None,
        )
        return
    from mercurio.server import build_server

    server = build_server(settings)
    server.run()
    if not server.started:
        sys.exit(3)


def _ready_to_serve(settings: Settings) -> None:
    """Refuse what only shows once serving (the bind, the database) before binding anything."""
    import structlog

    from mercurio.channels import vapid
    from mercurio.config import check_public_bind, startup_warnings
    from mercurio.store import check_reachable

    try:
        check_public_bind(settings)
        vapid.load(settings)
        asyncio.run(check_reachable(settings.db_conn))
    except ConfigError as exc:
        typer.echo(f"mercurio: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    for warning in startup_warnings(settings):
        structlog.get_logger("mercurio.config").warning("config.unsafe", problem=warning)


_TTL = re.compile(r"(\d+)([smhd]?)")


def _parse_ttl(text: str) -> float | None:
    if text in ("0", "none", "never"):
        return None
    match = _TTL.fullmatch(text)
    if not match:
        raise typer.BadParameter(
            "use a number with s, m, h or d, e.g. 1h; 'never' for none", param_hint="--ttl"
        )
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


@app.command()
def token(
    user: Annotated[str, typer.Option(metavar="ID", help="The user id the token speaks for")],
    publisher: Annotated[bool, typer.Option(help="Grant the publisher role")] = False,
    ttl: Annotated[
        str, typer.Option(metavar="DURATION", help="Lifetime: 30m, 1h, 7d, or 'never'")
    ] = "1h",
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
    from mercurio.store import check_reachable, upgrade_database
    from mercurio.urls import redact_url

    settings = _settings()
    try:
        asyncio.run(check_reachable(settings.db_conn))
        asyncio.run(upgrade_database(settings.db_conn))
    except ConfigError as exc:
        typer.echo(f"mercurio: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"database at {redact_url(settings.db_conn)} is up to date")


@db_app.command("prune")
def db_prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be removed; remove nothing")
    ] = False,
) -> None:
    """Purge old, deleted, expired and over-the-cap notifications now; print what went."""
    from mercurio.store import check_reachable

    settings = _settings()
    try:
        asyncio.run(check_reachable(settings.db_conn))
    except ConfigError as exc:
        typer.echo(f"mercurio: configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    from sqlalchemy.exc import DBAPIError

    try:
        report = asyncio.run(_prune(settings, dry_run))
    except DBAPIError as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
        typer.echo(f"mercurio: cannot prune ({reason}); run `mercurio db upgrade` first?", err=True)
        raise typer.Exit(1) from None
    if report.skipped:
        typer.echo("mercurio: another node is pruning right now; try again later", err=True)
        raise typer.Exit(1)
    typer.echo(_prune_lines(report, settings))


async def _prune(settings: Settings, dry_run: bool) -> Any:
    from mercurio.retention import prune_now
    from mercurio.store import Store

    store = Store(settings.db_conn)
    # The schema as it is: a prune does not migrate (`mercurio db upgrade` does).
    await store.start(migrate=False)
    try:
        return await prune_now(store, settings, dry_run=dry_run)
    finally:
        await store.close()


def _prune_lines(report: Any, settings: Settings) -> str:
    by = report.notifications
    head = "would remove (dry run, nothing removed):" if report.dry_run else "removed:"
    return "\n".join(
        [
            head,
            f"  notifications older than {settings.retention_days} days: {by['retention']}",
            f"  notifications deleted: {by['deleted']}",
            f"  notifications expired: {by['expired']}",
            f"  notifications over the inbox max ({settings.inbox_max}): {by['inbox_max']}",
            f"  notifications in all: {report.total}",
            f"  announcement states: {report.states}",
            f"  deliveries: {report.deliveries}",
        ]
    )


DEFAULT_URL = "http://127.0.0.1:8000"
_URL = typer.Option(metavar="URL", help="The Mercurio server")
_TOKEN = typer.Option(
    envvar="MERCURIO_TOKEN",
    metavar="JWT",
    help="Bearer token; minted from the configured key in development and test if absent",
)
_CACERT = typer.Option(
    envvar="MERCURIO_CACERT",
    metavar="PEM",
    help="Trust the CA certificates in this PEM file (a private CA) instead of the system's",
)


@app.command()
def send(
    data: Annotated[
        str, typer.Argument(metavar="DATA", help="What to send: text, or JSON with --json")
    ],
    to: Annotated[
        list[str] | None, typer.Option(metavar="ID", help="Client id to notify (repeatable)")
    ] = None,
    everyone: Annotated[bool, typer.Option("--all", help="Announce to every user")] = False,
    topic: Annotated[
        str | None, typer.Option(metavar="SLUG", help="Notify this topic's subscribers")
    ] = None,
    category: Annotated[
        str | None, typer.Option(metavar="SLUG", help="Category slug (default general)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="DATA is a JSON value")] = False,
    source: Annotated[
        str | None, typer.Option(metavar="ID", help="sourceID (default: the token's user)")
    ] = None,
    event_id: Annotated[
        str | None, typer.Option("--id", metavar="ID", help="Event id (default: a UUID)")
    ] = None,
    ttl: Annotated[
        int | None,
        typer.Option(metavar="SECONDS", help="Expire this long after delivery", min=1),
    ] = None,
    delay: Annotated[
        int | None,
        typer.Option(metavar="SECONDS", help="Deliver this long from now (scheduled)", min=1),
    ] = None,
    collapse_key: Annotated[
        str | None,
        typer.Option(metavar="KEY", help="Replace the recipient's earlier one with this key"),
    ] = None,
    url: Annotated[str, _URL] = DEFAULT_URL,
    token: Annotated[str | None, _TOKEN] = None,
    cacert: Annotated[str | None, _CACERT] = None,
) -> None:
    """Publish a notification to clients (--to), to everyone (--all), or to a topic's
    subscribers (--topic)."""
    from mercurio import terminal

    raise typer.Exit(
        terminal.send(
            url=url,
            token=token,
            to=to or [],
            everyone=everyone,
            category=category,
            as_json=as_json,
            data=data,
            source=source,
            event_id=event_id,
            ca_file=cacert,
            ttl=ttl,
            delay=delay,
            collapse_key=collapse_key,
            topic=topic,
        )
    )


@app.command()
def listen(
    user: Annotated[
        str, typer.Option(metavar="ID", help="The client id whose notifications to show")
    ],
    category: Annotated[
        list[str] | None, typer.Option(metavar="SLUG", help="Only this category (repeatable)")
    ] = None,
    last_event_id: Annotated[
        str | None,
        typer.Option(metavar="ID", help="Also show what came after this notification id"),
    ] = None,
    url: Annotated[str, _URL] = DEFAULT_URL,
    token: Annotated[str | None, _TOKEN] = None,
    cacert: Annotated[str | None, _CACERT] = None,
) -> None:
    """Print a client's notifications as they arrive, one line each, reconnecting."""
    from mercurio import terminal

    raise typer.Exit(
        terminal.listen(
            url=url,
            user=user,
            token=token,
            categories=category,
            last_event_id=last_event_id,
            ca_file=cacert,
        )
    )


def main() -> None:
    """Entry point of the `mercurio` command."""
    app()


@push_app.command("keys")
def push_keys() -> None:
    """Print a new VAPID key pair: set the private key as MERCURIO_VAPID_PRIVATE_KEY."""
    from mercurio.channels.vapid import new_pair

    private_pem, public_key = new_pair()
    typer.echo(private_pem.rstrip())
    typer.echo(f"# public key (what GET /api/push/vapid-public-key answers): {public_key}")
