"""What the client hands back: errors, publish receipts, stream events, and the retry policy."""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from httpx_sse import ServerSentEvent

from mercurio.backoff import backoff_delay

JSONValue: TypeAlias = (
    str | int | float | bool | Sequence["JSONValue"] | Mapping[str, "JSONValue"] | None
)
"""Any JSON value a notification can carry (usually a string)."""

TokenProvider: TypeAlias = Callable[[], str | Awaitable[str]]
"""A callable (plain or async) that returns a fresh bearer token."""


class MercurioError(Exception):
    """The server refused a request (status and its `{"error": ...}` message)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"{status}: {message}" if status is not None else message)
        self.status = status
        self.message = message


class MercurioUnavailable(MercurioError):
    """The server could not be reached, or kept answering 429/5xx, after every retry."""


@dataclass(frozen=True, slots=True)
class PublishReceipt:
    """What the server answered for one stored (or scheduled) notification."""

    notification_id: int | None
    """None while a scheduled notification waits (it gets its id when delivered)."""
    event_id: str
    deliver_at: datetime | None = None
    """When a scheduled notification is delivered (None: it was delivered at once)."""


@dataclass(frozen=True, slots=True)
class Retraction:
    """What DELETE /api/events/{eventID} did."""

    status: str
    """"cancelled" (it was still scheduled) or "retracted"."""
    event_id: str
    cancelled: int
    retracted: int


@dataclass(frozen=True, slots=True)
class InboxNotification:
    """A notification as the inbox keeps it (list and get), read or not."""

    notification_id: int
    event_id: str
    source_id: str
    data: Any
    category: str
    created_at: datetime | None
    read_at: datetime | None
    topic: str | None = None
    """The topic it was published to (None: sent to this client, or an announcement)."""

    @property
    def read(self) -> bool:
        """Whether the client has read it."""
        return self.read_at is not None


@dataclass(frozen=True, slots=True)
class NotificationPage:
    """A page of a client's inbox, newest first; pass next_before as `before` for the next."""

    client_id: str
    notifications: list[InboxNotification]
    unread_count: int
    next_before: int | None


@dataclass(frozen=True, slots=True)
class ReceivedNotification:
    """A notification pushed on the stream (an unnamed SSE event)."""

    notification_id: int
    event_id: str
    source_id: str
    client_id: str
    data: Any
    category: str
    created_at: datetime | None
    topic: str | None = None
    """The topic it was published to (None: sent to this client, or an announcement)."""


@dataclass(frozen=True, slots=True)
class ReadState:
    """Another tab or device of this client changed read state (`event: read-state`)."""

    notification_id: int | None
    status: str
    category: str | None
    unread_count: int


@dataclass(frozen=True, slots=True)
class Reset:
    """The replay was longer than the server keeps: only the newest came; reload the list."""

    last_event_id: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class TokenExpired:
    """The token's `exp` passed and the server ended the stream."""

    last_event_id: int | None


Event: TypeAlias = ReceivedNotification | ReadState | Reset | TokenExpired
"""Everything `subscribe()` yields."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with jitter: attempt n waits about base * 2**n, at most cap."""

    attempts: int = 6
    base: float = 0.25
    cap: float = 10.0
    retry_after_cap: float = 120.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (0-based): half fixed, half jitter."""
        return backoff_delay(attempt, self.base, self.cap)

    def reconnect(self, attempt: int, hint: float) -> float:
        """Seconds before reconnecting a stream: the server's hint, then growing; never less."""
        first = hint if attempt == 0 else max(hint, self.base) * 2.0 ** min(attempt, 30)
        return min(max(self.cap, hint), first) * random.uniform(1.0, 1.2)

    def honour(self, retry_after: float | None, attempt: int) -> float:
        """The server's Retry-After when it gave one (bounded), else the backoff delay."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        return self.delay(attempt)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _notification(payload: dict[str, Any], sse_id: str) -> ReceivedNotification:
    return ReceivedNotification(
        notification_id=int(payload.get("notificationID", sse_id or 0)),
        event_id=str(payload.get("eventID", "")),
        source_id=str(payload.get("sourceID", "")),
        client_id=str(payload.get("clientID", "")),
        data=payload.get("data"),
        category=str(payload.get("category", "general")),
        created_at=_parse_time(payload.get("createdAt")),
        topic=_topic(payload),
    )


def inbox_notification(payload: dict[str, Any]) -> InboxNotification:
    """One notification of a list or get answer."""
    return InboxNotification(
        notification_id=int(payload["notificationID"]),
        event_id=str(payload["eventID"]),
        source_id=str(payload["sourceID"]),
        data=payload.get("data"),
        category=str(payload.get("category", "general")),
        created_at=_parse_time(payload.get("createdAt")),
        read_at=_parse_time(payload.get("readAt")),
        topic=_topic(payload),
    )


def _topic(payload: dict[str, Any]) -> str | None:
    topic = payload.get("topic")
    return str(topic) if topic is not None else None


def notification_page(payload: dict[str, Any]) -> NotificationPage:
    """A list answer."""
    next_before = payload.get("nextBefore")
    return NotificationPage(
        client_id=str(payload["clientID"]),
        notifications=[inbox_notification(item) for item in payload["notifications"]],
        unread_count=int(payload.get("unreadCount", 0)),
        next_before=int(next_before) if next_before is not None else None,
    )


def _read_state(payload: dict[str, Any]) -> ReadState:
    category = payload.get("category")
    return ReadState(
        notification_id=_int_or_none(payload.get("notificationID")),
        status=str(payload.get("status", "")),
        category=category if isinstance(category, str) else None,
        unread_count=int(payload.get("unreadCount", 0)),
    )


def parse_event(sse: ServerSentEvent) -> Event | None:
    """The typed event of one SSE block; None for retry-only blocks and unknown events."""
    if not sse.data:
        return None
    try:
        payload = json.loads(sse.data)
    except json.JSONDecodeError:
        return None
    if not isinstance(payload, dict):
        return None
    name = sse.event or "message"
    if name == "message":
        return _notification(payload, sse.id)
    if name == "read-state":
        return _read_state(payload)
    if name == "reset":
        return Reset(_int_or_none(payload.get("lastEventId")), str(payload.get("reason", "")))
    if name == "token-expired":
        return TokenExpired(_int_or_none(payload.get("lastEventId")))
    return None
