"""Redis pub/sub (redis-py asyncio) on the channel MERCURIO_MQ_TOPIC.

Pub/sub keeps nothing: a node whose link is down simply misses messages, which is the doorbell
contract (it heals from the store on reconnect). redis-py would quietly reconnect a broken
pub/sub connection and resubscribe; we turn its retries off so every break surfaces here, the
node learns of it, and catches up.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mercurio.brokers.base import Broker
from mercurio.errors import BrokerUnavailable

IDLE_PING = 15.0
"""Seconds of silence after which the subscriber pings; no answer within as long again means
the link is dead even though no FIN ever came."""


class RedisBroker(Broker):
    """Fan-out through a Redis pub/sub channel."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._client: Redis | None = None
        self._pubsub: PubSub | None = None

    async def _connect(self) -> None:
        client = self._client = Redis.from_url(
            self.url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=5,
            socket_keepalive=True,
        )
        pubsub = self._pubsub = client.pubsub()
        await pubsub.subscribe(self.topic)
        await client.ping()

    async def _run(self) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=IDLE_PING)
            if message is None:
                if pinged:
                    raise ConnectionError(f"no answer to PING in {IDLE_PING:.0f} s")
                await pubsub.ping()
                pinged = True
                continue
            pinged = False
            if message["type"] == "message":
                self._received(message["data"])

    async def _disconnect(self) -> None:
        # Each reference is dropped only once closed: close() runs this again after cancelling
        # the reconnect loop, which may have been cancelled halfway through it.
        if self._pubsub is not None:
            try:
                # Untyped before redis 8.2, typed since: either way mypy passes.
                await self._pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            except Exception:
                pass
            self._pubsub = None
        if self._client is not None:
            try:
                await self._client.aclose()
            except Exception:
                pass
            self._client = None

    async def publish(self, body: bytes) -> None:
        client = self._client
        if client is None or not self.connected:
            raise BrokerUnavailable("Redis link is down")
        try:
            await client.publish(self.topic, body)
        except Exception as exc:
            raise BrokerUnavailable(f"Redis publish failed: {type(exc).__name__}") from exc
