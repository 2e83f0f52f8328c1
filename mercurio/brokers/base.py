"""The broker contract: a doorbell between nodes, and the reconnect loop every engine shares.

An engine only says how to open its link (`_connect`), how to wait on it until it breaks
(`_run`) and how to drop it (`_disconnect`), plus `publish`. The loop here keeps the link up:
capped exponential backoff with jitter between attempts, `connected` while it is up, and
`on_reconnect` after every connection so the owner can heal from the store (DESIGN.md
invariant 5: whatever was published while the link was down is gone from the broker's side).
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable

import structlog

from mercurio.backoff import backoff_delay
from mercurio.urls import redact_url

log = structlog.get_logger("mercurio.broker")

OnMessage = Callable[[bytes], None]
OnReconnect = Callable[[], None]


class Backoff:
    """Capped exponential delays with jitter: each delay is half fixed, half random."""

    def __init__(self, first: float = 0.2, cap: float = 10.0) -> None:
        self.first = first
        self.cap = cap
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next attempt."""
        delay = backoff_delay(self.attempt, self.first, self.cap)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


class Broker(ABC):
    """Fans bytes out to every node subscribed to the same topic, the publisher included."""

    max_message_bytes: int | None = None
    """The largest body publish accepts, or None when the engine sets no practical limit;
    the owner sends a bigger message some other way (the Cluster sends a head)."""

    def __init__(
        self,
        url: str,
        *,
        topic: str,
        routing_key: str = "notifications",
        node_id: str = "",
        on_message: OnMessage | None = None,
        on_reconnect: OnReconnect | None = None,
        reconnect_first: float = 0.2,
        reconnect_cap: float = 10.0,
    ) -> None:
        self.url = url
        self.topic = topic
        self.routing_key = routing_key
        self.node_id = node_id
        self.on_message = on_message
        """Called for each message received, in the order the broker hands them over."""
        self.on_reconnect = on_reconnect
        """Called after every (re)connection, the first included: anything published while
        the link was down never reached this node, so the owner catches up from the store."""
        self.connects = 0
        self._backoff = Backoff(reconnect_first, reconnect_cap)
        self._up = asyncio.Event()
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """True while the link is up: messages flow both ways."""
        return self._up.is_set()

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    async def start(self, on_message: OnMessage | None = None, *, wait: float = 0.0) -> None:
        """Keep the link up from now on; wait up to `wait` seconds for the first connection.

        An on_message given here replaces the one given when the broker was built.
        """
        if on_message is not None:
            self.on_message = on_message
        self._supervisor = asyncio.create_task(self._supervise(), name="mercurio-broker")
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._up.wait(), wait)

    async def close(self) -> None:
        """Drop the link and stop reconnecting (idempotent)."""
        self._closing = True
        self._up.clear()
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()

    @abstractmethod
    async def publish(self, body: bytes) -> None:
        """Send body to every subscribed node; raise BrokerUnavailable when the link is down."""

    @abstractmethod
    async def _connect(self) -> None:
        """Open the link and subscribe; raise when that fails."""

    @abstractmethod
    async def _run(self) -> None:
        """Wait (receiving) until the link breaks; return or raise when it does."""

    @abstractmethod
    async def _disconnect(self) -> None:
        """Release whatever _connect opened; never raise."""

    def _received(self, body: bytes) -> None:
        if self.on_message is not None:
            self.on_message(body)

    async def _supervise(self) -> None:
        while not self._closing:
            try:
                await self._connect()
            except Exception as exc:
                log.warning(
                    "broker.connect_failed",
                    url=self.redacted_url,
                    error=f"{type(exc).__name__}: {exc}",
                )
                await self._disconnect()
                await asyncio.sleep(self._backoff.next())
                continue
            self._backoff.reset()
            self.connects += 1
            self._up.set()
            log.info("broker.connected", url=self.redacted_url, topic=self.topic)
            if self.on_reconnect is not None:
                self.on_reconnect()
            try:
                await self._run()
                error = "link closed"
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            finally:
                self._up.clear()
            await self._disconnect()
            if self._closing:
                return
            log.warning("broker.disconnected", url=self.redacted_url, error=error)
            await asyncio.sleep(self._backoff.next())
