"""`mercurio send` and `mercurio listen`: close the loop from a terminal, no browser needed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import typer

from mercurio.client import (
    AsyncMercurio,
    Mercurio,
    MercurioError,
    PublishReceipt,
    ReadState,
    ReceivedNotification,
    Reset,
    TokenExpired,
    TokenProvider,
    trusting,
)
from mercurio.client.calls import token_subject
from mercurio.client.transport import Verify

DEFAULT_URL = "http://127.0.0.1:8000"
PUBLISHER_ID = "666"
MINTED_TTL = 3600


class TerminalError(Exception):
    """A command cannot go on: a message for stderr and an exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _fail(message: str, code: int) -> int:
    typer.echo(f"mercurio: {message}", err=True)
    return code


def _refused(exc: MercurioError) -> int:
    """A refusal on stderr; a 401 said to be the token's fault, with where it came from."""
    if exc.status == 401:
        return _fail(f"bad token ({exc}); check --token or MERCURIO_TOKEN", 1)
    return _fail(str(exc), 1)


def verify_for(ca_file: str | None) -> Verify:
    """What TLS trusts: the system's CAs, or only those in ca_file (--cacert)."""
    if ca_file is None:
        return True
    try:
        return trusting(ca_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise TerminalError(f"--cacert {ca_file}: cannot load CA certificates ({exc})") from None


def check_token(token: str) -> None:
    """Refuse a token that is not a JWT naming a user before sending it anywhere."""
    if token_subject(token) is None:
        raise TerminalError(
            "bad token: not a JWT with a user_id (or sub) claim; check --token or MERCURIO_TOKEN"
        )


def mint_development_token(user: str, *, publisher: bool = False) -> str:
    """A token signed with the configured key; only in development and test."""
    from mercurio.auth import Authenticator, AuthError
    from mercurio.config import load_settings
    from mercurio.errors import ConfigError

    try:
        settings = load_settings()
    except ConfigError as exc:
        raise TerminalError(f"configuration error: {exc}") from None
    if settings.env not in ("development", "test"):
        raise TerminalError(
            "no token: pass --token or set MERCURIO_TOKEN "
            f"(tokens are minted locally only in development and test, not in {settings.env})"
        )
    try:
        return Authenticator(settings).mint_token(user, publisher=publisher, ttl=MINTED_TTL)
    except AuthError as exc:
        raise TerminalError(exc.message) from None


def parse_data(text: str, *, as_json: bool) -> Any:
    """DATA as given (a string), or decoded when --json is set."""
    if not as_json:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TerminalError(f"DATA is not valid JSON ({exc.msg} at position {exc.pos})") from None


def send(
    *,
    url: str,
    token: str | None,
    to: Sequence[str],
    everyone: bool,
    category: str | None,
    as_json: bool,
    data: str,
    source: str | None = None,
    event_id: str | None = None,
    ca_file: str | None = None,
    ttl: int | None = None,
    delay: int | None = None,
    collapse_key: str | None = None,
    topic: str | None = None,
) -> int:
    """Publish DATA to one client, several, everyone, or a topic's subscribers; print what
    was stored."""
    try:
        if [everyone, bool(to), topic is not None].count(True) != 1:
            raise TerminalError(
                "say who to notify: --to ID (repeatable), --all or --topic SLUG, one of them"
            )
        value = parse_data(data, as_json=as_json)
        if token is None:
            token = mint_development_token(PUBLISHER_ID, publisher=True)
        elif source is None:
            check_token(token)  # else its missing user would be reported as a missing source
        verify = verify_for(ca_file)
    except TerminalError as exc:
        return _fail(exc.message, exc.code)
    options: dict[str, Any] = {
        "category": category,
        "event_id": event_id,
        "source_id": source,
        "ttl": ttl,
        "delay": delay,
        "collapse_key": collapse_key,
    }
    try:
        with Mercurio(url, token, verify=verify, on_retry=_note) as mercurio:
            sent: list[tuple[str, PublishReceipt]]
            if topic is not None:
                sent = [(f"topic {topic}", mercurio.publish_topic(topic, value, **options))]
            elif everyone:
                sent = [("everyone", mercurio.announce(value, **options))]
            elif len(to) == 1:
                sent = [(to[0], mercurio.publish(to[0], value, **options))]
            else:
                sent = list(zip(to, mercurio.broadcast(to, value, **options), strict=True))
    except MercurioError as exc:
        return _refused(exc)
    except ValueError as exc:
        return _fail(f"{exc}; pass --source", 2)
    for destination, published in sent:
        typer.echo(_receipt_line(destination, published))
    return 0


def _receipt_line(destination: str, published: PublishReceipt) -> str:
    if published.notification_id is None and published.deliver_at is not None:
        when = published.deliver_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"scheduled for {when} to {destination} (event {published.event_id})"
    return f"sent #{published.notification_id} to {destination} (event {published.event_id})"


def _one_line(data: Any) -> str:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return text.replace("\r", "\\r").replace("\n", "\\n")


def format_notification(note: ReceivedNotification) -> str:
    """One line: local time, id, category, source, data."""
    moment = note.created_at.astimezone().strftime("%Y-%m-%d %H:%M:%S") if note.created_at else "?"
    return (
        f"{typer.style(moment, dim=True)}  "
        f"{typer.style(f'#{note.notification_id}', bold=True)}  "
        f"{typer.style(f'[{note.category}]', fg=typer.colors.CYAN)}  "
        f"from {note.source_id}: {_one_line(note.data)}"
    )


def _note(text: str) -> None:
    typer.echo(typer.style(f"· {text}", dim=True), err=True)


def _stream_status(url: str, user: str) -> Callable[[str], None]:
    def show(status: str) -> None:
        if status == "connected":
            _note(f"connected to {url}: waiting for user {user}'s notifications (Ctrl-C stops)")
        else:
            _note(f"{status} ({url}, user {user})")

    return show


async def _listen(
    url: str,
    user: str,
    token: str,
    provider: TokenProvider | None,
    categories: Sequence[str] | None,
    last_event_id: str | None,
    verify: Verify,
) -> int:
    _note(f"connecting to {url} for user {user}'s stream…")
    async with (
        AsyncMercurio(url, verify=verify) as mercurio,
        mercurio.subscribe(
            user,
            token=token,
            last_event_id=last_event_id,
            categories=categories,
            token_provider=provider,
            on_status=_stream_status(url, user),
        ) as events,
    ):
        async for event in events:
            if isinstance(event, ReceivedNotification):
                typer.echo(format_notification(event))
            elif isinstance(event, ReadState):
                which = "all" if event.notification_id is None else f"#{event.notification_id}"
                _note(f"{which} {event.status} elsewhere; {event.unread_count} unread")
            elif isinstance(event, Reset):
                _note("missed too many while away: only the newest were shown")
            elif isinstance(event, TokenExpired) and provider is None:
                return _fail("token expired; pass a fresh one with --token", 1)
    return 0


def listen(
    *,
    url: str,
    user: str,
    token: str | None,
    categories: Sequence[str] | None = None,
    last_event_id: str | None = None,
    ca_file: str | None = None,
) -> int:
    """Print a client's notifications as they arrive, one line each, reconnecting."""
    provider: TokenProvider | None = None
    try:
        if token is None:
            token = mint_development_token(user)

            def provider() -> str:
                return mint_development_token(user)

        else:
            check_token(token)
        verify = verify_for(ca_file)
    except TerminalError as exc:
        return _fail(exc.message, exc.code)
    try:
        return asyncio.run(_listen(url, user, token, provider, categories, last_event_id, verify))
    except MercurioError as exc:
        return _refused(exc)
    except KeyboardInterrupt:
        return 0
