"""Sending one message to the SMTP server of MERCURIO_SMTP_URL; a leaf module (config reads it).

aiosmtplib: asyncio-native, so a slow mail server holds a coroutine, not a thread; one
connection per digest keeps the failure handling simple (no half-dead pooled connection) and a
digest is rare next to a publish. The password is taken from the URL and never logged.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from enum import Enum
from urllib.parse import parse_qs, unquote, urlsplit

SMTP_TIMEOUT = 30.0
"""Seconds for each SMTP step (connect, a command, the DATA reply)."""
SEND_TIMEOUT = 45.0
"""Seconds for the whole send: below the outbox lease (60 s), so no other node takes the
digest while this one may still be sending it."""
DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    """Where and how to hand mail over, from MERCURIO_SMTP_URL."""

    host: str
    port: int
    use_tls: bool = False
    """smtps://: TLS from the first byte (port 465)."""
    start_tls: bool = False
    """?starttls=true: upgrade a plain connection with STARTTLS, and refuse to go on without."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_smtp_url(url: str) -> SmtpTarget:
    """smtp[s]://[user:pass@]host[:port][?starttls=true]; ValueError (no password) if not."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("use smtp://host:port or smtps://host:port")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError("name the SMTP server's host")
    if parts.path not in ("", "/"):
        raise ValueError("an SMTP URL has no path")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"starttls"})
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} (only starttls=true)")
    start_tls = _flag(query.get("starttls", ["false"])[-1])
    if start_tls and scheme == "smtps":
        raise ValueError("smtps:// is TLS already; starttls=true goes with smtp://")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return SmtpTarget(parts.hostname, port, scheme == "smtps", start_tls, username, password)


def _flag(value: str) -> bool:
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise ValueError(f"starttls must be true or false (got {value!r})")


class Failure(Enum):
    TRANSIENT = "transient"  # try again later: the server is away or said 4xx
    PERMANENT = "permanent"  # 5xx about this message or recipient: sending again will not help


class SendError(Exception):
    """Why a message was not accepted: transient or permanent, and a reason for logs."""

    def __init__(self, failure: Failure, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.failure = failure
        self.reason = reason
        self.code = code


class SmtpSender:
    """Hands messages to the configured server, one connection per message."""

    def __init__(self, target: SmtpTarget) -> None:
        self.target = target

    async def send(self, message: EmailMessage) -> None:
        """Return once the server accepted the message (250 to DATA); else raise SendError."""
        import aiosmtplib  # only nodes that send e-mail need it

        target = self.target
        # Flattened with the message's own policy: given the message, aiosmtplib flattens it
        # with a 78-column one and folds List-Unsubscribe into encoded words.
        raw = message.as_bytes(policy=message.policy)
        sender = parseaddr(str(message["From"]))[1]
        recipients = [address for _, address in getaddresses([str(message["To"])])]
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await aiosmtplib.send(
                    raw,
                    sender=sender,
                    recipients=recipients,
                    hostname=target.host,
                    port=target.port,
                    username=target.username,
                    password=target.password,
                    use_tls=target.use_tls,
                    start_tls=target.start_tls,
                    timeout=SMTP_TIMEOUT,
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            raise _by_code(min(codes, default=550), "recipient_refused") from None
        except aiosmtplib.SMTPDataError as exc:
            raise _by_code(exc.code, "data_refused") from None
        except aiosmtplib.SMTPResponseException as exc:
            # A 5xx greeting, HELO, AUTH or MAIL FROM is about our server or our settings, not
            # this digest: keep it owed until the operator fixes it.
            raise SendError(Failure.TRANSIENT, f"server_refused_{exc.code}", exc.code) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise SendError(Failure.TRANSIENT, type(exc).__name__) from None


def _by_code(code: int, reason: str) -> SendError:
    """RFC 5321: 4xx is a transient refusal, 5xx a permanent one."""
    kind = Failure.PERMANENT if 500 <= code < 600 else Failure.TRANSIENT
    return SendError(kind, f"{reason}_{code}", code)
