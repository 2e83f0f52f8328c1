"""The two clients: thin transports that run the calls of `calls.py` over httpx.

async with AsyncMercurio("http://127.0.0.1:8000", token) as mercurio:
    await mercurio.publish("123", "Hello 123", category="greetings")
    async with mercurio.subscribe("123", token=user_token) as events:
        async for event in events:
            ...

With a user's token the same clients read that user's inbox: list_notifications(),
get_notification(), mark_read(), mark_unread(), mark_all_read(), delete_notification(),
unread_count(), preferences() and set_preferences(). A publisher's retract(event_id) cancels
a scheduled notification (publish with delay= or deliver_at=) or retracts a delivered one.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self, TypeVar, Unpack

import httpx

from mercurio.client import calls
from mercurio.client.calls import (
    RETRY_ERRORS,
    Exchange,
    Identity,
    Pause,
    Publishing,
    PublishOptions,
    Request,
)
from mercurio.client.model import (
    InboxNotification,
    JSONValue,
    NotificationPage,
    PublishReceipt,
    Retraction,
    RetryPolicy,
    TokenProvider,
)
from mercurio.client.stream import NotificationStream

T = TypeVar("T")
OnRetry = Callable[[str], None]
"""Called before each retry's wait with what the client waits for (see calls.Pause)."""
Verify = ssl.SSLContext | bool
"""httpx's `verify`: an SSLContext (e.g. trusting a custom CA, see `trusting`) or a bool."""


def trusting(ca_file: str) -> ssl.SSLContext:
    """A TLS context trusting only the CA certificates in ca_file (PEM), e.g. a private CA."""
    return ssl.create_default_context(cafile=ca_file)


def _build(http: httpx.Client | httpx.AsyncClient, me: Identity, request: Request) -> httpx.Request:
    """The httpx request for a call's Request; both clients build it the same way."""
    return http.build_request(
        request.method,
        me.url + request.path,
        json=request.json,
        params=request.params,
        headers=request.headers,
    )


def run_sync(
    http: httpx.Client, me: Identity, exchange: Exchange[T], on_retry: OnRetry | None = None
) -> T:
    """Drive one call to its result with blocking I/O."""
    try:
        step = next(exchange)
        while True:
            if isinstance(step, Pause):
                if on_retry is not None:
                    on_retry(step.reason)
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


async def run_async(
    http: httpx.AsyncClient, me: Identity, exchange: Exchange[T], on_retry: OnRetry | None = None
) -> T:
    """Drive one call to its result on the event loop."""
    try:
        step = next(exchange)
        while True:
            if isinstance(step, Pause):
                if on_retry is not None:
                    on_retry(step.reason)
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
        self,
        url: str,
        token: str | None,
        source_id: str | None,
        backoff: RetryPolicy | None,
        on_retry: OnRetry | None,
    ) -> None:
        self.me = Identity(url.rstrip("/"), token, source_id)
        self.backoff = backoff or RetryPolicy()
        self.on_retry = on_retry

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
        verify: Verify = True,
        on_retry: OnRetry | None = None,
    ) -> None:
        super().__init__(url, token, source_id, backoff, on_retry)
        self._owns_http = http is None
        self.http = http or httpx.AsyncClient(base_url=self.url, timeout=timeout, verify=verify)

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
        **options: Unpack[PublishOptions],
    ) -> PublishReceipt:
        """Notify one client; returns the notification id and event id."""
        call = calls.publish(self.me, self.backoff, destination, data, Publishing(**options))
        return await self._run(call)

    async def broadcast(
        self,
        destinations: Sequence[str],
        data: JSONValue,
        **options: Unpack[PublishOptions],
    ) -> list[PublishReceipt]:
        """Notify many clients (one notification each, in the order given)."""
        call = calls.broadcast(self.me, self.backoff, destinations, data, Publishing(**options))
        return await self._run(call)

    async def announce(
        self,
        data: JSONValue,
        **options: Unpack[PublishOptions],
    ) -> PublishReceipt:
        """Notify every user, present and future, with one stored notification."""
        call = calls.announce(self.me, self.backoff, data, Publishing(**options))
        return await self._run(call)

    async def retract(self, event_id: str) -> Retraction:
        """Cancel a scheduled notification, or retract a delivered one from every inbox."""
        return await self._run(calls.retract(self.me, self.backoff, event_id))

    async def publish_topic(
        self,
        topic: str,
        data: JSONValue,
        **options: Unpack[PublishOptions],
    ) -> PublishReceipt:
        """Notify the topic's subscribers with one stored notification."""
        return await self._run(
            calls.publish_topic(self.me, self.backoff, topic, data, Publishing(**options))
        )

    async def topic_subscribers(self, topic: str) -> int:
        """How many clients follow the topic now (a publisher's token)."""
        return await self._run(calls.topic_subscribers(self.me, self.backoff, topic))

    async def topics(self, *, client_id: str | None = None) -> list[str]:
        """The topics the client (the token's user unless client_id) follows."""
        return await self._run(calls.list_topics(self.me, self.backoff, client_id))

    async def subscribe_topic(self, topic: str, *, client_id: str | None = None) -> None:
        """Subscribe the client to the topic's notifications from now on."""
        await self._run(calls.subscribe_topic(self.me, self.backoff, client_id, topic))

    async def unsubscribe_topic(self, topic: str, *, client_id: str | None = None) -> None:
        """Unsubscribe the client; what it received stays in its inbox."""
        await self._run(calls.unsubscribe_topic(self.me, self.backoff, client_id, topic))

    async def _run(self, call: Exchange[T]) -> T:
        return await run_async(self.http, self.me, call, self.on_retry)

    async def list_notifications(
        self,
        client_id: str | None = None,
        *,
        status: str = "all",
        limit: int | None = None,
        before: int | None = None,
        category: str | None = None,
    ) -> NotificationPage:
        """A page of the inbox (the token's user unless client_id), newest first."""
        call = calls.list_notifications(
            self.me,
            self.backoff,
            client_id,
            status=status,
            limit=limit,
            before=before,
            category=category,
        )
        return await self._run(call)

    async def get_notification(
        self, notification_id: int, *, client_id: str | None = None
    ) -> InboxNotification:
        """One notification of the inbox; MercurioError 404 when it is not there."""
        return await self._run(
            calls.get_notification(self.me, self.backoff, client_id, notification_id)
        )

    async def mark_read(self, notification_id: int, *, client_id: str | None = None) -> None:
        """Mark one notification read."""
        await self._run(calls.set_read(self.me, self.backoff, client_id, notification_id, True))

    async def mark_unread(self, notification_id: int, *, client_id: str | None = None) -> None:
        """Mark one notification unread."""
        await self._run(calls.set_read(self.me, self.backoff, client_id, notification_id, False))

    async def mark_all_read(
        self, *, category: str | None = None, client_id: str | None = None
    ) -> int:
        """Mark every notification (of one category) read; returns how many changed."""
        return await self._run(calls.mark_all_read(self.me, self.backoff, client_id, category))

    async def delete_notification(
        self, notification_id: int, *, client_id: str | None = None
    ) -> None:
        """Remove one notification from the inbox."""
        await self._run(
            calls.delete_notification(self.me, self.backoff, client_id, notification_id)
        )

    async def unread_count(self, *, client_id: str | None = None) -> int:
        """How many notifications are unread."""
        return await self._run(calls.unread_count(self.me, self.backoff, client_id))

    async def preferences(self, *, client_id: str | None = None) -> list[str]:
        """The muted categories (stored, not pushed live)."""
        return await self._run(calls.get_preferences(self.me, self.backoff, client_id))

    async def set_preferences(
        self, muted: Sequence[str], *, client_id: str | None = None
    ) -> list[str]:
        """Replace the muted categories; returns them as stored."""
        return await self._run(calls.set_preferences(self.me, self.backoff, client_id, muted))

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
        verify: Verify = True,
        on_retry: OnRetry | None = None,
    ) -> None:
        super().__init__(url, token, source_id, backoff, on_retry)
        self._owns_http = http is None
        self.http = http or httpx.Client(base_url=self.url, timeout=timeout, verify=verify)

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
        **options: Unpack[PublishOptions],
    ) -> PublishReceipt:
        """Notify one client; returns the notification id and event id."""
        call = calls.publish(self.me, self.backoff, destination, data, Publishing(**options))
        return self._run(call)

    def broadcast(
        self,
        destinations: Sequence[str],
        data: JSONValue,
        **options: Unpack[PublishOptions],
    ) -> list[PublishReceipt]:
        """Notify many clients (one notification each, in the order given)."""
        call = calls.broadcast(self.me, self.backoff, destinations, data, Publishing(**options))
        return self._run(call)

    def announce(
        self,
        data: JSONValue,
        **options: Unpack[PublishOptions],
    ) -> PublishReceipt:
        """Notify every user, present and future, with one stored notification."""
        call = calls.announce(self.me, self.backoff, data, Publishing(**options))
        return self._run(call)

    def retract(self, event_id: str) -> Retraction:
        """Cancel a scheduled notification, or retract a delivered one from every inbox."""
        return self._run(calls.retract(self.me, self.backoff, event_id))

    def publish_topic(
        self,
        topic: str,
        data: JSONValue,
        **options: Unpack[PublishOptions],
    ) -> PublishReceipt:
        """Notify the topic's subscribers with one stored notification."""
        return self._run(
            calls.publish_topic(self.me, self.backoff, topic, data, Publishing(**options))
        )

    def topic_subscribers(self, topic: str) -> int:
        """How many clients follow the topic now (a publisher's token)."""
        return self._run(calls.topic_subscribers(self.me, self.backoff, topic))

    def topics(self, *, client_id: str | None = None) -> list[str]:
        """The topics the client (the token's user unless client_id) follows."""
        return self._run(calls.list_topics(self.me, self.backoff, client_id))

    def subscribe_topic(self, topic: str, *, client_id: str | None = None) -> None:
        """Subscribe the client to the topic's notifications from now on."""
        self._run(calls.subscribe_topic(self.me, self.backoff, client_id, topic))

    def unsubscribe_topic(self, topic: str, *, client_id: str | None = None) -> None:
        """Unsubscribe the client; what it received stays in its inbox."""
        self._run(calls.unsubscribe_topic(self.me, self.backoff, client_id, topic))

    def _run(self, call: Exchange[T]) -> T:
        return run_sync(self.http, self.me, call, self.on_retry)

    def list_notifications(
        self,
        client_id: str | None = None,
        *,
        status: str = "all",
        limit: int | None = None,
        before: int | None = None,
        category: str | None = None,
    ) -> NotificationPage:
        """A page of the inbox (the token's user unless client_id), newest first."""
        call = calls.list_notifications(
            self.me,
            self.backoff,
            client_id,
            status=status,
            limit=limit,
            before=before,
            category=category,
        )
        return self._run(call)

    def get_notification(
        self, notification_id: int, *, client_id: str | None = None
    ) -> InboxNotification:
        """One notification of the inbox; MercurioError 404 when it is not there."""
        return self._run(calls.get_notification(self.me, self.backoff, client_id, notification_id))

    def mark_read(self, notification_id: int, *, client_id: str | None = None) -> None:
        """Mark one notification read."""
        self._run(calls.set_read(self.me, self.backoff, client_id, notification_id, True))

    def mark_unread(self, notification_id: int, *, client_id: str | None = None) -> None:
        """Mark one notification unread."""
        self._run(calls.set_read(self.me, self.backoff, client_id, notification_id, False))

    def mark_all_read(self, *, category: str | None = None, client_id: str | None = None) -> int:
        """Mark every notification (of one category) read; returns how many changed."""
        return self._run(calls.mark_all_read(self.me, self.backoff, client_id, category))

    def delete_notification(self, notification_id: int, *, client_id: str | None = None) -> None:
        """Remove one notification from the inbox."""
        self._run(calls.delete_notification(self.me, self.backoff, client_id, notification_id))

    def unread_count(self, *, client_id: str | None = None) -> int:
        """How many notifications are unread."""
        return self._run(calls.unread_count(self.me, self.backoff, client_id))

    def preferences(self, *, client_id: str | None = None) -> list[str]:
        """The muted categories (stored, not pushed live)."""
        return self._run(calls.get_preferences(self.me, self.backoff, client_id))

    def set_preferences(self, muted: Sequence[str], *, client_id: str | None = None) -> list[str]:
        """Replace the muted categories; returns them as stored."""
        return self._run(calls.set_preferences(self.me, self.backoff, client_id, muted))
