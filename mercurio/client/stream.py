"""Reading a client's SSE stream: typed events, resume with Last-Event-ID, reconnect, tokens.

Only async: a stream is a long wait on the network, which a script that needs one runs under
`asyncio.run`; the CLI's `mercurio listen` does exactly that. The event parsing lives in
`model.parse_event` and the request headers in `calls.base_headers`, shared with publishing.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import httpx
from httpx_sse import EventSource, aconnect_sse

from mercurio.client.calls import (
    RETRY_ERRORS,
    RETRY_STATUSES,
    base_headers,
    error_message,
    retry_after,
)
from mercurio.client.model import (
    Event,
    MercurioError,
    ReceivedNotification,
    RetryPolicy,
    TokenExpired,
    TokenProvider,
    parse_event,
)


@dataclass(slots=True)
class _Attempt:
    """The outcome of one connection of a subscription."""

    expired: bool = False
    opened: bool = False
    error: str = ""
    retry_after: float | None = None


class NotificationStream:
    """An async iterator of a client's events that reconnects with Last-Event-ID.

    Yields `ReceivedNotification`, `ReadState`, `Reset` and `TokenExpired`. After a drop it
    waits the server's `retry:` hint (growing with backoff and jitter while the server stays
    away) and resumes after the last notification it yielded, so nothing is lost or repeated.
    It stops with `MercurioError` on 401/403 (after one fresh token from `token_provider`, if
    given) or any other 4xx, and ends after `TokenExpired` when there is no `token_provider`.
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
        backoff: RetryPolicy | None = None,
        idle_timeout: float | None = 60.0,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.last_event_id: str | None = None if last_event_id is None else str(last_event_id)
        self.categories = list(categories) if categories else None
        self.token_provider = token_provider
        self.backoff = backoff or RetryPolicy()
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
            delay = self._reconnect_delay(outcome, failures)
            failures += 1
            reason = outcome.error or ("stream ended" if outcome.opened else "no stream")
            self._status(f"reconnecting in {delay:.1f}s ({reason})")
            await asyncio.sleep(delay)

    def _reconnect_delay(self, outcome: _Attempt, failures: int) -> float:
        if outcome.retry_after is not None:
            return min(outcome.retry_after, self.backoff.retry_after_cap)
        return self.backoff.reconnect(failures, self.retry)

    def _request_headers(self) -> dict[str, str]:
        headers = base_headers(self.token)
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        return headers

    async def _connect(self, outcome: _Attempt) -> AsyncGenerator[Event, None]:
        params = {"categories": ",".join(self.categories)} if self.categories else None
        timeout = httpx.Timeout(10.0, read=self._idle_timeout)
        headers = self._request_headers()
        async with aconnect_sse(
            self._http, "GET", self.url, headers=headers, params=params, timeout=timeout
        ) as source:
            if not await self._opened(source, outcome):
                return
            async for sse in source.aiter_sse():
                if sse.retry is not None:
                    self.retry = sse.retry / 1000
                event = parse_event(sse)
                if event is None:
                    continue
                if isinstance(event, ReceivedNotification):
                    self.last_event_id = sse.id or str(event.notification_id)
                yield event
                if isinstance(event, TokenExpired):
                    outcome.expired = True
                    return

    async def _opened(self, source: EventSource, outcome: _Attempt) -> bool:
        """True when the answer is an event stream; False to retry; raise on a refusal."""
        response = source.response
        if response.status_code != 200:
            await response.aread()
            if response.status_code in RETRY_STATUSES or response.status_code >= 500:
                outcome.error = f"HTTP {response.status_code}"
                outcome.retry_after = retry_after(response)
                return False
            raise MercurioError(response.status_code, error_message(response))
        kind = response.headers.get("content-type", "").partition(";")[0].strip()
        if kind != "text/event-stream":
            outcome.error = f"not an event stream ({kind or 'no content type'})"
            return False
        outcome.opened = True
        self.connections += 1
        self._status("connected")
        return True
