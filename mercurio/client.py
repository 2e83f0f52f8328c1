"""Python clients for Mercurio: publish (async and sync) and subscribe (async) over httpx.

Publishing is retried on connect errors, timeouts, 502/503/504 and 429 (honouring
`Retry-After`), with capped exponential backoff and jitter. That is safe because a publish is
idempotent by its event id: the client fixes the id (a UUID) before the first attempt and sends
the same one on every retry, so the server stores the notification once.

    async with AsyncMercurio("http://127.0.0.1:8000", token) as mercurio:
        await mercurio.publish("123", "Hello 123", category="greetings")
        async with mercurio.subscribe("123", token=user_token) as events:
            async for event in events:
                ...
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import random
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self, TypeAlias

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

from mercurio.backoff import backoff_delay

__all__ = [
    "AsyncMercurio",
    "Backoff",
    "Event",
    "Mercurio",
    "MercurioError",
    "MercurioUnavailable",
    "Notification",
    "Published",
    "ReadState",
    "Reset",
    "Subscription",
    "TokenExpired",
]

JSONValue: TypeAlias = (
    str | int | float | bool | Sequence["JSONValue"] | Mapping[str, "JSONValue"] | None
)
"""Any JSON value a notification can carry (usually a string)."""

TokenProvider: TypeAlias = Callable[[], str | Awaitable[str]]
"""A callable (plain or async) that returns a fresh bearer token."""

USER_AGENT = "mercurio-python/0.1"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
RETRY_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class MercurioError(Exception):
    """The server refused a request (status and its `{"error": ...}` message)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"{status}: {message}" if status is not None else message)
        self.status = status
        self.message = message


class MercurioUnavailable(MercurioError):
    """The server could not be reached, or kept answering 429/5xx, after every retry."""


@dataclass(frozen=True, slots=True)
class Published:
    """What the server answered for one stored notification."""

    notification_id: int
    event_id: str


@dataclass(frozen=True, slots=True)
class Notification:
    """A notification pushed on the stream (an unnamed SSE event)."""

    notification_id: int
    event_id: str
    source_id: str
    client_id: str
    data: Any
    category: str
    created_at: datetime | None


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


Event: TypeAlias = Notification | ReadState | Reset | TokenExpired
"""Everything `subscribe()` yields."""


@dataclass(frozen=True, slots=True)
class Backoff:
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


# -- helpers shared by both clients ------------------------------------------------------------


def _error_message(response: httpx.Response) -> str:
    """The server's `{"error": ...}` message, or a short excerpt of what it said."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    text = response.text.strip()
    return text[:200] or response.reason_phrase or "request failed"


def _retry_after(response: httpx.Response) -> float | None:
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


def _token_subject(token: str | None) -> str | None:
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


def _published(body: Any) -> Published:
    return Published(int(body["notificationID"]), str(body["eventID"]))


@dataclass(slots=True)
class _Call:
    """One publish request, its event id fixed before the first attempt."""

    path: str
    body: dict[str, Any]


class _Publisher:
    """Builds publish requests; the clients only differ in how they send them."""

    def __init__(
        self,
        url: str,
        token: str | None,
        source_id: str | None,
        backoff: Backoff | None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.source_id = source_id
        self.backoff = backoff or Backoff()

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _call(
        self,
        path: str,
        data: JSONValue,
        *,
        category: str | None,
        event_id: str | None,
        source_id: str | None,
        **fields: Any,
    ) -> _Call:
        source = source_id or self.source_id or _token_subject(self.token)
        if not source:
            raise ValueError("source_id is required (the token names no user to default to)")
        body: dict[str, Any] = {
            "id": event_id or str(uuid.uuid4()),
            "sourceID": source,
            **fields,
            "data": data,
        }
        if category is not None:
            body["category"] = category
        return _Call(path, body)

    def _final(self, response: httpx.Response) -> bool:
        """True for a 2xx answer, False for a retryable one (429, 502-504); else raise."""
        status = response.status_code
        if status < 300:
            return True
        if status in RETRY_STATUSES:
            return False
        raise MercurioError(status, _error_message(response))

    def _give_up(self, call: _Call, last: httpx.Response | Exception | None) -> MercurioError:
        where = f"{self.url}{call.path}"
        if isinstance(last, httpx.Response):
            return MercurioUnavailable(
                last.status_code,
                f"{_error_message(last)} (gave up after {self.backoff.attempts} attempts)",
            )
        return MercurioUnavailable(
            None, f"cannot reach {where}: {last!r} (gave up after {self.backoff.attempts} attempts)"
        )


# -- async ------------------------------------------------------------------------------------


class AsyncMercurio(_Publisher):
    """Async Mercurio client: publish with safe retries, and subscribe to a client's stream."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        source_id: str | None = None,
        timeout: float = 10.0,
        backoff: Backoff | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(url, token, source_id, backoff)
        self._owns_http = http is None
        self.http = http or httpx.AsyncClient(base_url=self.url, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (when this client created it)."""
        if self._owns_http:
            await self.http.aclose()

    async def _send(self, call: _Call) -> Any:
        last: httpx.Response | Exception | None = None
        wait = 0.0
        for attempt in range(self.backoff.attempts):
            if attempt:
                await asyncio.sleep(wait)
            try:
                response = await self.http.post(
                    self.url + call.path, json=call.body, headers=self._headers()
                )
            except RETRY_ERRORS as exc:
                last, wait = exc, self.backoff.delay(attempt)
                continue
            if self._final(response):
                return response.json()
            last, wait = response, self.backoff.honour(_retry_after(response), attempt)
        raise self._give_up(call, last) from (last if isinstance(last, Exception) else None)

    async def publish(
        self,
        destination: str,
        data: JSONValue,
        *,
        category: str | None = None,
        event_id: str | None = None,
        source_id: str | None = None,
    ) -> Published:
        """Notify one client; returns the notification id and event id."""
        call = self._call(
            "/api/events/unicast",
            data,
            category=category,
            event_id=event_id,
            source_id=source_id,
            destinationID=destination,
        )
        return _published(await self._send(call))

    async def broadcast(
        self,
        destinations: Sequence[str],
        data: JSONValue,
        *,
        category: str | None = None,
        event_id: str | None = None,
        source_id: str | None = None,
    ) -> list[Published]:
        """Notify many clients (one notification each, in the order given)."""
        call = self._call(
            "/api/events/broadcast",
            data,
            category=category,
            event_id=event_id,
            source_id=source_id,
            destinations=list(destinations),
        )
        return [_published(item) for item in await self._send(call)]

    async def announce(
        self,
        data: JSONValue,
        *,
        category: str | None = None,
        event_id: str | None = None,
        source_id: str | None = None,
    ) -> Published:
        """Notify every user, present and future, with one stored notification."""
        call = self._call(
            "/api/events/announce",
            data,
            category=category,
            event_id=event_id,
            source_id=source_id,
        )
        return _published(await self._send(call))

    def subscribe(
        self,
        client_id: str,
        *,
        token: str | None = None,
        last_event_id: int | str | None = None,
        categories: Sequence[str] | None = None,
        token_provider: TokenProvider | None = None,
        idle_timeout: float | None = 60.0,
        on_status: Callable[[str], None] | None = None,
    ) -> Subscription:
        """Stream a client's notifications as typed events, reconnecting and resuming."""
        return Subscription(
            self.http,
            f"{self.url}/api/clients/{client_id}/notifications/stream",
            token=token or self.token,
            last_event_id=last_event_id,
            categories=categories,
            token_provider=token_provider,
            backoff=self.backoff,
            idle_timeout=idle_timeout,
            on_status=on_status,
        )


@dataclass(slots=True)
class _Attempt:
    """The outcome of one connection of a subscription."""

    expired: bool = False
    opened: bool = False
    error: str = ""
    retry_after: float | None = None


class Subscription:
    """An async iterator of a client's events that reconnects with Last-Event-ID.

    Yields `Notification`, `ReadState`, `Reset` and `TokenExpired`. After a drop it waits the
    server's `retry:` hint (growing with backoff and jitter while the server stays away) and
    resumes after the last notification it yielded, so nothing is lost or repeated. It stops
    with `MercurioError` on 401/403 (after one fresh token from `token_provider`, if given) or
    any other 4xx, and ends after `TokenExpired` when there is no `token_provider`.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        *,
        token: str | None,
        last_event_id: int | str | None = None,
        categories: Sequence[str] | None = None,
        token_provider: TokenProvider | None = None,
        backoff: Backoff | None = None,
        idle_timeout: float | None = 60.0,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.last_event_id: str | None = None if last_event_id is None else str(last_event_id)
        self.categories = list(categories) if categories else None
        self.token_provider = token_provider
        self.backoff = backoff or Backoff()
        self.retry = 1.0
        """Seconds to wait before reconnecting: the server's latest `retry:` hint."""
        self.connections = 0
        """How many times a stream was opened (1 + the reconnections)."""
        self._http = http
        self._idle_timeout = idle_timeout
        self._on_status = on_status
        self._events = self._run()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the open stream and stop iterating."""
        await self._events.aclose()

    def _status(self, text: str) -> None:
        if self._on_status is not None:
            self._on_status(text)

    async def _fresh_token(self) -> bool:
        if self.token_provider is None:
            return False
        token = self.token_provider()
        self.token = await token if inspect.isawaitable(token) else token
        return True

    async def _run(self) -> AsyncGenerator[Event, None]:
        failures = 0
        refreshed = False
        while True:
            outcome = _Attempt()
            try:
                async with aclosing(self._connect(outcome)) as events:
                    async for event in events:
                        yield event
            except RETRY_ERRORS as exc:
                outcome.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except MercurioError as exc:
                if exc.status == 401 and not refreshed and await self._fresh_token():
                    refreshed = True
                    continue
                raise
            if outcome.opened:
                failures, refreshed = 0, False
            if outcome.expired:
                if not await self._fresh_token():
                    return
                refreshed = True
                self._status("token expired: resuming with a fresh token")
                continue
            if outcome.retry_after is not None:
                delay = min(outcome.retry_after, self.backoff.retry_after_cap)
            else:
                delay = self.backoff.reconnect(failures, self.retry)
            failures += 1
            reason = outcome.error or ("stream ended" if outcome.opened else "no stream")
            self._status(f"reconnecting in {delay:.1f}s ({reason})")
            await asyncio.sleep(delay)

    async def _connect(self, outcome: _Attempt) -> AsyncGenerator[Event, None]:
        headers = {"User-Agent": USER_AGENT}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        params = {"categories": ",".join(self.categories)} if self.categories else None
        timeout = httpx.Timeout(10.0, read=self._idle_timeout)
        async with aconnect_sse(
            self._http, "GET", self.url, headers=headers, params=params, timeout=timeout
        ) as source:
            response = source.response
            if response.status_code != 200:
                await response.aread()
                if response.status_code in RETRY_STATUSES or response.status_code >= 500:
                    outcome.error = f"HTTP {response.status_code}"
                    outcome.retry_after = _retry_after(response)
                    return
                raise MercurioError(response.status_code, _error_message(response))
            kind = response.headers.get("content-type", "").partition(";")[0].strip()
            if kind != "text/event-stream":
                outcome.error = f"not an event stream ({kind or 'no content type'})"
                return
            outcome.opened = True
            self.connections += 1
            self._status("connected")
            async for sse in source.aiter_sse():
                if sse.retry is not None:
                    self.retry = sse.retry / 1000
                event = _event(sse)
                if event is None:
                    continue
                if isinstance(event, Notification):
                    self.last_event_id = sse.id or str(event.notification_id)
                yield event
                if isinstance(event, TokenExpired):
                    outcome.expired = True
                    return


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _event(sse: ServerSentEvent) -> Event | None:
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
        return Notification(
            notification_id=int(payload.get("notificationID", sse.id or 0)),
            event_id=str(payload.get("eventID", "")),
            source_id=str(payload.get("sourceID", "")),
            client_id=str(payload.get("clientID", "")),
            data=payload.get("data"),
            category=str(payload.get("category", "general")),
            created_at=_parse_time(payload.get("createdAt")),
        )
    if name == "read-state":
        category = payload.get("category")
        return ReadState(
            notification_id=_int_or_none(payload.get("notificationID")),
            status=str(payload.get("status", "")),
            category=category if isinstance(category, str) else None,
            unread_count=int(payload.get("unreadCount", 0)),
        )
    if name == "reset":
        return Reset(_int_or_none(payload.get("lastEventId")), str(payload.get("reason", "")))
    if name == "token-expired":
        return TokenExpired(_int_or_none(payload.get("lastEventId")))
    return None


# -- sync -------------------------------------------------------------------------------------


class Mercurio(_Publisher):
    """Synchronous publishing client with the same safe retries (for scripts and workers)."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        source_id: str | None = None,
        timeout: float = 10.0,
        backoff: Backoff | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__(url, token, source_id, backoff)
        self._owns_http = http is None
        self.http = http or httpx.Client(base_url=self.url, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (when this client created it)."""
        if self._owns_http:
            self.http.close()

    def _send(self, call: _Call) -> Any:
        last: httpx.Response | Exception | None = None
        wait = 0.0
        for attempt in range(self.backoff.attempts):
            if attempt:
                time.sleep(wait)
            try:
                response = self.http.post(
                    self.url + call.path, json=call.body, headers=self._headers()
                )
            except RETRY_ERRORS as exc:
                last, wait = exc, self.backoff.delay(attempt)
                continue
            if self._final(response):
                return response.json()
            last, wait = response, self.backoff.honour(_retry_after(response), attempt)
        raise self._give_up(call, last) from (last if isinstance(last, Exception) else None)

    def publish(
        self,
        destination: str,
        data: JSONValue,
        *,
        category: str | None = None,
        event_id: str | None = None,
        source_id: str | None = None,
    ) -> Published:
        """Notify one client; returns the notification id and event id."""
        call = self._call(
            "/api/events/unicast",
            data,
            category=category,
            event_id=event_id,
            source_id=source_id,
            destinationID=destination,
        )
        return _published(self._send(call))

    def broadcast(
        self,
        destinations: Sequence[str],
        data: JSONValue,
        *,
        category: str | None = None,
        event_id: str | None = None,
        source_id: str | None = None,
    ) -> list[Published]:
        """Notify many clients (one notification each, in the order given)."""
        call = self._call(
            "/api/events/broadcast",
            data,
            category=category,
            event_id=event_id,
            source_id=source_id,
            destinations=list(destinations),
        )
        return [_published(item) for item in self._send(call)]

    def announce(
        self,
        data: JSONValue,
        *,
        category: str | None = None,
        event_id: str | None = None,
        source_id: str | None = None,
    ) -> Published:
        """Notify every user, present and future, with one stored notification."""
        call = self._call(
            "/api/events/announce",
            data,
            category=category,
            event_id=event_id,
            source_id=source_id,
        )
        return _published(self._send(call))
