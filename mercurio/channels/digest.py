"""One e-mail digest: a user's unread notifications, newest first, as plain text and HTML.

Everything a publisher or user provided is escaped in the HTML part (html.escape), and a link
is made only of an http(s) URL: a digest must never carry a publisher's markup or script.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

import orjson

from mercurio.model import Notification

SHOWN = 20
"""Notifications listed in one digest; the rest are counted ("and 5 more")."""
TITLE_CHARS = 200
BODY_CHARS = 500
URL_CHARS = 2000
# Headers are not folded below RFC 5322's 998 characters: the default (78) would fold the long
# List-Unsubscribe URL into RFC 2047 encoded words, which mail clients do not read as a URL.
# Bodies are 7-bit (quoted-printable or base64 when not ASCII): the bytes go out as flattened
# here, to any server, whether it offers 8BITMIME or not.
POLICY = policy.SMTP.clone(max_line_length=998, cte_type="7bit")


@dataclass(frozen=True, slots=True)
class Item:
    """What a digest shows of one notification."""

    title: str
    body: str
    url: str | None
    meta: str


@dataclass(frozen=True, slots=True)
class Digest:
    """Everything one message says, and to whom."""

    to: str
    sender: str
    notes: Sequence[Notification]
    """Still owed, newest first; only the first SHOWN are listed."""
    app_url: str
    unsubscribe_url: str
    message_id: str

    @property
    def subject(self) -> str:
        count = len(self.notes)
        return f"{count} unread notification{'' if count == 1 else 's'}"


def message_domain(sender: str) -> str:
    """The domain of the sender's address, for Message-IDs (RFC 5322 3.6.4)."""
    address = parseaddr(sender)[1]
    return address.rpartition("@")[2] or "localhost"


def compose(digest: Digest) -> EmailMessage:
    """The message, with its text and HTML alternatives and RFC 8058 one-click headers."""
    items = [describe(note) for note in digest.notes[:SHOWN]]
    more = max(0, len(digest.notes) - SHOWN)
    message = EmailMessage(policy=POLICY)
    message["Subject"] = digest.subject
    message["From"] = digest.sender
    message["To"] = digest.to
    message["Date"] = format_datetime(_now())
    message["Message-ID"] = digest.message_id
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to this
    message["List-Unsubscribe"] = f"<{digest.unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(_text(digest, items, more))
    message.add_alternative(_html(digest, items, more), subtype="html")
    return message


def describe(note: Notification) -> Item:
    """The conventional {"title", "body", "url"} fields when present, else the data itself."""
    meta = f"{note.category}, {note.created_at.strftime('%Y-%m-%d %H:%M')} UTC"
    try:
        data = orjson.loads(note.data_json)
    except orjson.JSONDecodeError:
        data = note.data_json
    if isinstance(data, dict) and any(isinstance(data.get(k), str) for k in ("title", "body")):
        title = _field(data, "title") or f"From {note.source_id}"
        url = _field(data, "url")
        link = url if url.startswith(("https://", "http://")) and len(url) <= URL_CHARS else None
        return Item(_cut(title, TITLE_CHARS), _cut(_field(data, "body"), BODY_CHARS), link, meta)
    body = data if isinstance(data, str) else orjson.dumps(data).decode()
    return Item(f"From {_cut(note.source_id, TITLE_CHARS)}", _cut(body, BODY_CHARS), None, meta)


def _field(data: dict[str, object], name: str) -> str:
    value = data.get(name)
    return value.strip() if isinstance(value, str) else ""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _text(digest: Digest, items: list[Item], more: int) -> str:
    lines = [f"You have {digest.subject}.", ""]
    for item in items:
        lines.append(f"* {item.title}")
        lines += [f"  {line}" for line in item.body.splitlines() if line.strip()]
        if item.url:
            lines.append(f"  {item.url}")
        lines += [f"  {item.meta}", ""]
    if more:
        lines += [f"... and {more} more.", ""]
    lines += [f"Open them: {digest.app_url}", "", f"Stop these e-mails: {digest.unsubscribe_url}"]
    return "\n".join(lines) + "\n"


def _html(digest: Digest, items: list[Item], more: int) -> str:
    e = html.escape
    rows = []
    for item in items:
        title = f"<strong>{e(item.title)}</strong>"
        if item.url:
            title = f'<a href="{e(item.url)}">{title}</a>'
        body = f"<br>{e(item.body)}".replace("\n", "<br>") if item.body else ""
        meta = f'<br><small style="color:#666">{e(item.meta)}</small>'
        rows.append(f'<li style="margin-bottom:12px">{title}{body}{meta}</li>')
    tail = f"<p>… and {more} more.</p>" if more else ""
    return (
        '<!DOCTYPE html><html><body style="font-family:sans-serif">'
        f"<p>You have {e(digest.subject)}.</p>"
        f'<ul style="padding-left:18px">{"".join(rows)}</ul>{tail}'
        f'<p><a href="{e(digest.app_url)}">Open them in Mercurio</a></p>'
        f'<p><small><a href="{e(digest.unsubscribe_url)}">Stop these e-mails</a></small></p>'
        "</body></html>\n"
    )


def _now() -> datetime:
    return datetime.now(UTC)
