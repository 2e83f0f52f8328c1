"""Every API call described once, without I/O: the request to send and how to read the answer.

A call is a generator (sans-IO): it yields a `Request` to send or a `Pause` to sleep, is sent
back the `httpx.Response` (or has the transport error thrown in), and returns the typed result.
The sync and async clients only run that generator over their own httpx client and sleep, so
the retry rules and every endpoint's shape exist in one place.

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
from typing import Any, TypeAlias, TypeVar

import httpx

from mercurio.client.model import (
    JSONValue,
    MercurioError,
    MercurioUnavailable,
    PublishReceipt,
    RetryPolicy,
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
            yield Pause(wait)
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


def _gave_up(where: str, attempts: int, last: httpx.Response | Exception | None) -> MercurioError:
    if isinstance(last, httpx.Response):
        message = f"{error_message(last)} (gave up after {attempts} attempts)"
        return MercurioUnavailable(last.status_code, message)
    return MercurioUnavailable(
        None, f"cannot reach {where}: {last!r} (gave up after {attempts} attempts)"
    )


def _receipt(body: Any) -> PublishReceipt:
    return PublishReceipt(int(body["notificationID"]), str(body["eventID"]))


def _receipts(body: Any) -> list[PublishReceipt]:
    return [_receipt(item) for item in body]


@dataclass(frozen=True, slots=True)
class Publishing:
    """The optional fields every publish call takes."""

    category: str | None = None
    event_id: str | None = None
    source_id: str | None = None


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
    }
    if options.category is not None:
        body["category"] = options.category
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
