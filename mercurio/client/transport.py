"""The two clients: thin transports that run the calls of `calls.py` over httpx.

async with AsyncMercurio("http://127.0.0.1:8000", token) as mercurio:
    await mercurio.publish("123", "Hello 123", category="greetings")
    async with mercurio.subscribe("123", token=user_token) as events:
        async for event in events:
            ...
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self, TypeVar

import httpx

from mercurio.client import calls
from mercurio.client.calls import RETRY_ERRORS, Exchange, Identity, Pause, Publishing, Request
from mercurio.client.model import JSONValue, PublishReceipt, RetryPolicy, TokenProvider
from mercurio.client.stream import NotificationStream

T = TypeVar("T")


def _build(http: httpx.Client | httpx.AsyncClient, me: Identity, request: Request) -> httpx.Request:
    """The httpx request for a call's Request; both clients build it the same way."""
    return http.build_request(
        request.method,
        me.url + request.path,
        json=request.json,
        params=request.params,
        headers=request.headers,
    )


def run_sync(http: httpx.Client, me: Identity, exchange: Exchange[T]) -> T:
    """Drive one call to its result with blocking I/O."""
    try:
        step = next(exchange)
        while True:
            if isinstance(step, Pause):
                time.sleep(step.seconds)
                step = exchange.send(None)
                continue
            try:
                response = http.send(_build(http, me, step))
            except RETRY_ERRORS as exc:
                step = exchange.throw(exc)
            else:
                step = exchange.send(response)
    except StopIteration as done:
        result: T = done.value
        return result


async def run_async(http: httpx.AsyncClient, me: Identity, exchange: Exchange[T]) -> T:
    """Drive one call to its result on the event loop."""
    try:
        step = next(exchange)
        while True:
            if isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
                step = exchange.send(None)
                continue
            try:
                response = await http.send(_build(http, me, step))
            except RETRY_ERRORS as exc:
                step = exchange.throw(exc)
            else:
                step = exchange.send(response)
    except StopIteration as done:
        result: T = done.value
        return result


class _Client:
    """What both clients share: who they are and how they retry."""

    def __init__(
        self, url: str, token: str | None, source_id: str | None, backoff: RetryPolicy | None
    ) -> None:
        self.me = Identity(url.rstrip("/"), token, source_id)
        self.backoff = backoff or RetryPolicy()

    @property
    def url(self) -> str:
        """The server's base URL, without a trailing slash."""
        return self.me.url

    @property
    def token(self) -> str | None:
        """The bearer token sent with every request."""
        return self.me.token


class AsyncMercurio(_Client):
    """Async Mercurio client: publish with safe retries, and subscribe to a client's stream."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        source_id: str | None = None,
        timeout: float = 10.0,
        backoff: RetryPolicy | None = None,
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

    async def publish(
        self,
        destination: str,
        data: JSONValue,
        *,
        category: str | None = None,
        event_id: str | None = None,
        source_id: str | None = None,
    ) -> PublishReceipt:
        """Notify one client; returns the notification id and event id."""
        options = Publishing(category, event_id, source_id)
        call = calls.publish(self.me, self.backoff, destination, data, options)
        return await run_async(self.http, self.me, call)

    async def broadcast(
        self,
        destinations: Sequence[str],
        data: JSONValue,
        *,
        category: str | None = None,
        event_id: str | None = None,
        source_id: str | None = None,
    ) -> list[PublishReceipt]:
        """Notify many clients (one notification each, in the order given)."""
        options = Publishing(category, event_id, source_id)
        call = calls.broadcast(self.me, self.backoff, destinations, data, options)
        return await run_async(self.http, self.me, call)

    async def announce(
        self,
        data: JSONValue,
        *,
        category: str | None = None,
        event_id: str | None = None,
        source_id: str | None = None,
    ) -> PublishReceipt:
        """Notify every user, present and future, with one stored notification."""
        options = Publishing(category, event_id, source_id)
        call = calls.announce(self.me, self.backoff, data, options)
        return await run_async(self.http, self.me, call)

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
    ) -> NotificationStream:
        """Stream a client's notifications as typed events, reconnecting and resuming."""
        return NotificationStream(
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


class Mercurio(_Client):
    """Synchronous publishing client with the same safe retries (for scripts and workers)."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        source_id: str | None = None,
        timeout: float = 10.0,
        backoff: RetryPolicy | None = None,
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

    def publish(
        self,
        destination: str,
        data: JSONValue,
        *,
        category: str | None = None,
        event_id: str | None = None,
        source_id: str | None = None,
    ) -> PublishReceipt:
        """Notify one client; returns the notification id and event id."""
        options = Publishing(category, event_id, source_id)
        call = calls.publish(self.me, self.backoff, destination, data, options)
        return run_sync(self.http, self.me, call)

    def broadcast(
        self,
        destinations: Sequence[str],
        data: JSONValue,
        *,
        category: str | None = None,
        event_id: str | None = None,
        source_id: str | None = None,
    ) -> list[PublishReceipt]:
        """Notify many clients (one notification each, in the order given)."""
        options = Publishing(category, event_id, source_id)
        call = calls.broadcast(self.me, self.backoff, destinations, data, options)
        return run_sync(self.http, self.me, call)

    def announce(
        self,
        data: JSONValue,
        *,
        category: str | None = None,
        event_id: str | None = None,
        source_id: str | None = None,
    ) -> PublishReceipt:
        """Notify every user, present and future, with one stored notification."""
        options = Publishing(category, event_id, source_id)
        call = calls.announce(self.me, self.backoff, data, options)
        return run_sync(self.http, self.me, call)
