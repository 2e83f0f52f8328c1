"""Every API call described once, without I/O: the request to send and how to read the answer.

A call is a generator (sans-IO): it yields a `Request` to send or a `Pause` to sleep, is sent
back the `httpx.Response` (or has the transport error thrown in), and returns the typed result.
The sync and async clients only run that generator over their own httpx client and sleep, so
the retry rules and every endpoint's shape exist in one place.

Inbox calls (list, get, read, unread, mark all read, delete, unread count, preferences) act
for one client: by default the token's own user. Reads and the idempotent PUTs are retried
like publishes; a DELETE retried after a lost answer may then report 404 (already gone).

Publishing is retried on connect errors, timeouts, 502/503/504 and 429 (honouring
`Retry-After`), with capped exponential backoff and jitter. That is safe because a publish is
idempotent by its event id: the call fixes the id (a UUID) before the first attempt and sends
the same one on every retry, so the server stores the notification once.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeAlias, TypedDict, TypeVar
from urllib.parse import quote

import httpx

from mercurio.client.model import (
    InboxNotification,
    JSONValue,
    MercurioError,
    MercurioUnavailable,
    NotificationPage,
    PublishReceipt,
    Retraction,
    RetryPolicy,
    inbox_notification,
    notification_page,
)

USER_AGENT = "mercurio-python/0.1"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
RETRY_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request a call wants sent, relative to the client's base URL."""

    method: str
    path: str
    json: Any = None
    params: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pause:
    """The call wants the transport to wait this many seconds before its next request."""

    seconds: float
    reason: str = ""
    """What it waits for, for the user: e.g. "cannot reach …: retrying in 0.5s (attempt 2 of 6)"."""


Exchange: TypeAlias = Generator[Request | Pause, httpx.Response | None, T]
"""A call in progress: yields what to do, is sent each response, returns the result."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the client is: base URL, bearer token and default source id."""

    url: str
    token: str | None = None
    source_id: str | None = None

    def headers(self) -> dict[str, str]:
        """The headers every request of this client carries."""
        return base_headers(self.token)


def base_headers(token: str | None) -> dict[str, str]:
    """The headers every request carries: user agent and, if any, the bearer token."""
    headers = {"User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def error_message(response: httpx.Response) -> str:
    """The server's `{"error": ...}` message, or a short excerpt of what it said."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    text = response.text.strip()
    return text[:200] or response.reason_phrase or "request failed"


def retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (delta or HTTP date), if the server sent one."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        moment = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def token_subject(token: str | None) -> str | None:
    """The `user_id` (or `sub`) claim of a JWT, read without verifying it."""
    if not token:
        return None
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    if not isinstance(claims, dict):
        return None
    user = claims.get("user_id", claims.get("sub"))
    if isinstance(user, int | str) and not isinstance(user, bool) and str(user):
        return str(user)
    return None


def retried(
    request: Request, policy: RetryPolicy, where: str, parse: Callable[[Any], T]
) -> Exchange[T]:
    """Send `request` until a 2xx (parsed) or a refusal (raised), at most policy.attempts."""
    last: httpx.Response | Exception | None = None
    wait = 0.0
    for attempt in range(policy.attempts):
        if attempt:
            why = _why(where, last)
            yield Pause(
                wait, f"{why}: retrying in {wait:.1f}s (attempt {attempt + 1} of {policy.attempts})"
            )
        try:
            response = yield request
        except RETRY_ERRORS as exc:
            last, wait = exc, policy.delay(attempt)
            continue
        assert response is not None, "a transport answers every Request with its response"
        if response.status_code < 300:
            return parse(response.json())
        if response.status_code not in RETRY_STATUSES:
            raise MercurioError(response.status_code, error_message(response))
        last, wait = response, policy.honour(retry_after(response), attempt)
    raise _gave_up(where, policy.attempts, last) from (
        last if isinstance(last, Exception) else None
    )


def _why(where: str, last: httpx.Response | Exception | None) -> str:
    if isinstance(last, httpx.Response):
        return f"{where} answered {last.status_code} ({error_message(last)})"
    return f"cannot reach {where} ({type(last).__name__}: {last})" if last else where


def _gave_up(where: str, attempts: int, last: httpx.Response | Exception | None) -> MercurioError:
    if isinstance(last, httpx.Response):
        message = f"{error_message(last)} (gave up after {attempts} attempts)"
        return MercurioUnavailable(last.status_code, message)
    return MercurioUnavailable(
        None, f"cannot reach {where}: {last!r} (gave up after {attempts} attempts)"
    )


def _receipt(body: Any) -> PublishReceipt:
    nid = body["notificationID"]
    due = body.get("deliverAt")
    return PublishReceipt(
        int(nid) if nid is not None else None,
        str(body["eventID"]),
        datetime.fromisoformat(due) if due else None,
    )


def _receipts(body: Any) -> list[PublishReceipt]:
    return [_receipt(item) for item in body]


class PublishOptions(TypedDict, total=False):
    """The keyword arguments of every publish method (as Publishing's fields)."""

    category: str | None
    event_id: str | None
    source_id: str | None
    ttl: int | None
    expires_at: datetime | str | None
    delay: int | None
    deliver_at: datetime | str | None
    collapse_key: str | None


@dataclass(frozen=True, slots=True)
class Publishing:
    """The optional fields every publish call takes."""

    category: str | None = None
    event_id: str | None = None
    source_id: str | None = None
    ttl: int | None = None
    """Seconds it lasts, counted from its delivery."""
    expires_at: datetime | str | None = None
    delay: int | None = None
    """Seconds from now until it is delivered."""
    deliver_at: datetime | str | None = None
    collapse_key: str | None = None
    """A later notification to the same client with this key replaces this one."""

    def fields(self) -> dict[str, Any]:
        """The optional body fields that are set, named as the API names them."""
        chosen = {
            "category": self.category,
            "ttl": self.ttl,
            "expiresAt": _moment(self.expires_at),
            "delay": self.delay,
            "deliverAt": _moment(self.deliver_at),
            "collapseKey": self.collapse_key,
        }
        return {name: value for name, value in chosen.items() if value is not None}


def _moment(value: datetime | str | None) -> str | None:
    """RFC 3339 text for the API (an aware datetime, or text passed on as it is)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a moment needs its time zone (an aware datetime)")
        return value.isoformat()
    return value


def _publish_request(
    me: Identity, path: str, data: JSONValue, options: Publishing, **fields: Any
) -> Request:
    source = options.source_id or me.source_id or token_subject(me.token)
    if not source:
        raise ValueError("source_id is required (the token names no user to default to)")
    body: dict[str, Any] = {
        "id": options.event_id or str(uuid.uuid4()),
        "sourceID": source,
        **fields,
        "data": data,
        **options.fields(),
    }
    return Request("POST", path, json=body, headers=me.headers())


def publish(
    me: Identity, policy: RetryPolicy, destination: str, data: JSONValue, options: Publishing
) -> Exchange[PublishReceipt]:
    """Notify one client."""
    path = "/api/events/unicast"
    request = _publish_request(me, path, data, options, destinationID=destination)
    return retried(request, policy, me.url + path, _receipt)


def broadcast(
    me: Identity,
    policy: RetryPolicy,
    destinations: Sequence[str],
    data: JSONValue,
    options: Publishing,
) -> Exchange[list[PublishReceipt]]:
    """Notify many clients (one notification each, in the order given)."""
    path = "/api/events/broadcast"
    request = _publish_request(me, path, data, options, destinations=list(destinations))
    return retried(request, policy, me.url + path, _receipts)


def announce(
    me: Identity, policy: RetryPolicy, data: JSONValue, options: Publishing
) -> Exchange[PublishReceipt]:
    """Notify every user, present and future, with one stored notification."""
    path = "/api/events/announce"
    request = _publish_request(me, path, data, options)
    return retried(request, policy, me.url + path, _receipt)


def retract(me: Identity, policy: RetryPolicy, event_id: str) -> Exchange[Retraction]:
    """Cancel a scheduled notification, or retract a delivered one from every inbox
    (MercurioError 404 when this publisher sent no such event)."""
    path = f"/api/events/{quote(event_id, safe='')}"
    request = Request("DELETE", path, headers=me.headers())
    return retried(request, policy, me.url + path, _retraction)


def _retraction(body: Any) -> Retraction:
    return Retraction(
        str(body["status"]), str(body["eventID"]), int(body["cancelled"]), int(body["retracted"])
    )


def publish_topic(
    me: Identity, policy: RetryPolicy, topic: str, data: JSONValue, options: Publishing
) -> Exchange[PublishReceipt]:
    """Notify the topic's subscribers of this moment with one stored notification."""
    path = "/api/events/topic"
    request = _publish_request(me, path, data, options, topic=topic)
    return retried(request, policy, me.url + path, _receipt)


def topic_subscribers(me: Identity, policy: RetryPolicy, topic: str) -> Exchange[int]:
    """How many clients follow the topic now (a publisher's token)."""
    path = f"/api/topics/{quote(topic, safe='')}"
    return _inbox(me, policy, "GET", path, lambda body: int(body["subscribers"]))


def _client_path(me: Identity, client_id: str | None, rest: str) -> str:
    """/api/clients/{clientID}{rest}: the given client, else the token's own user."""
    chosen = client_id or token_subject(me.token)
    if not chosen:
        raise ValueError("client_id is required (the token names no user to default to)")
    return f"/api/clients/{quote(chosen, safe='')}{rest}"


def _inbox(
    me: Identity,
    policy: RetryPolicy,
    method: str,
    path: str,
    parse: Callable[[Any], T],
    *,
    params: dict[str, str] | None = None,
    body: Any = None,
) -> Exchange[T]:
    request = Request(method, path, json=body, params=params, headers=me.headers())
    return retried(request, policy, me.url + path, parse)


def list_notifications(
    me: Identity,
    policy: RetryPolicy,
    client_id: str | None,
    *,
    status: str = "all",
    limit: int | None = None,
    before: int | None = None,
    category: str | None = None,
) -> Exchange[NotificationPage]:
    """A page of the client's inbox, newest first (status: all, read or unread)."""
    params = {"status": status}
    for name, value in (("limit", limit), ("before", before), ("category", category)):
        if value is not None:
            params[name] = str(value)
    path = _client_path(me, client_id, "/notifications")
    return _inbox(me, policy, "GET", path, notification_page, params=params)


def get_notification(
    me: Identity, policy: RetryPolicy, client_id: str | None, notification_id: int
) -> Exchange[InboxNotification]:
    """One notification of the client's inbox (MercurioError 404 when it is not there)."""
    path = _client_path(me, client_id, f"/notifications/{int(notification_id)}")
    return _inbox(me, policy, "GET", path, inbox_notification)


def set_read(
    me: Identity, policy: RetryPolicy, client_id: str | None, notification_id: int, read: bool
) -> Exchange[str]:
    """Mark one notification read (or unread); returns the new status."""
    which = "read" if read else "unread"
    path = _client_path(me, client_id, f"/notifications/{int(notification_id)}/{which}")
    return _inbox(me, policy, "PUT", path, lambda body: str(body["status"]))


def mark_all_read(
    me: Identity, policy: RetryPolicy, client_id: str | None, category: str | None
) -> Exchange[int]:
    """Mark every notification (of one category) read; returns how many changed."""
    params = {"category": category} if category is not None else None
    path = _client_path(me, client_id, "/notifications/read")
    return _inbox(me, policy, "PUT", path, lambda body: int(body["updated"]), params=params)


def delete_notification(
    me: Identity, policy: RetryPolicy, client_id: str | None, notification_id: int
) -> Exchange[None]:
    """Remove one notification from the client's inbox."""
    path = _client_path(me, client_id, f"/notifications/{int(notification_id)}")
    return _inbox(me, policy, "DELETE", path, lambda _: None)


def unread_count(me: Identity, policy: RetryPolicy, client_id: str | None) -> Exchange[int]:
    """How many of the client's notifications are unread."""
    path = _client_path(me, client_id, "/notifications/unread-count")
    return _inbox(me, policy, "GET", path, lambda body: int(body["unreadCount"]))


def _muted(body: Any) -> list[str]:
    return [str(category) for category in body["mutedCategories"]]


def get_preferences(
    me: Identity, policy: RetryPolicy, client_id: str | None
) -> Exchange[list[str]]:
    """The client's muted categories (stored, but not pushed live)."""
    path = _client_path(me, client_id, "/preferences")
    return _inbox(me, policy, "GET", path, _muted)


def set_preferences(
    me: Identity, policy: RetryPolicy, client_id: str | None, muted: Sequence[str]
) -> Exchange[list[str]]:
    """Replace the client's muted categories; returns them as stored."""
    path = _client_path(me, client_id, "/preferences")
    body = {"mutedCategories": list(muted)}
    return _inbox(me, policy, "PUT", path, _muted, body=body)


def list_topics(me: Identity, policy: RetryPolicy, client_id: str | None) -> Exchange[list[str]]:
    """The topics the client follows, in name order."""
    path = _client_path(me, client_id, "/topics")
    return _inbox(me, policy, "GET", path, lambda body: [str(t) for t in body["topics"]])


def subscribe_topic(
    me: Identity, policy: RetryPolicy, client_id: str | None, topic: str
) -> Exchange[None]:
    """Subscribe the client to the topic (again is once)."""
    path = _client_path(me, client_id, f"/topics/{quote(topic, safe='')}")
    return _inbox(me, policy, "PUT", path, lambda _: None)


def unsubscribe_topic(
    me: Identity, policy: RetryPolicy, client_id: str | None, topic: str
) -> Exchange[None]:
    """Unsubscribe the client (MercurioError 404 when it was not subscribed)."""
    path = _client_path(me, client_id, f"/topics/{quote(topic, safe='')}")
    return _inbox(me, policy, "DELETE", path, lambda _: None)
