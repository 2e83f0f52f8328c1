"""PostgreSQL LISTEN/NOTIFY (asyncpg): a cluster that needs nothing but its database.

The channel is named by MERCURIO_MQ_TOPIC and MERCURIO_MQ_ROUTING_KEY, so nodes hear each other
exactly when a RabbitMQ topic exchange would bind them together. NOTIFY keeps nothing for a
session that is not listening, which is the doorbell contract: a node whose link was down heals
from the store on reconnect.

One connection per node both listens and publishes. PostgreSQL delivers a session its own
notifications, in commit order, on the same socket, so the sender hears itself in order like
every other node; the Cluster publishes from one task, so a second connection would add no
throughput, only a second link to watch and a second PostgreSQL backend per node. A lock keeps
the idle keepalive and a publish from overlapping on it (asyncpg runs one query at a time).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from mercurio.brokers.base import Broker
from mercurio.errors import BrokerUnavailable
from mercurio.urls import libpq_url

CHANNEL_BYTES = 63
"""PostgreSQL's identifier limit (NAMEDATALEN - 1): LISTEN would truncate a longer name and
pg_notify refuses it, so a longer channel is shortened here, the same way for every node."""
SAFE_CHANNEL = re.compile(r"[A-Za-z0-9_.:-]+")
KEEPALIVE = 15.0
"""Seconds of an idle link after which `SELECT 1` checks it; no answer within as long again
means the link is dead even though no FIN ever came."""
PUBLISH_TIMEOUT = 10.0


def channel_name(topic: str, routing_key: str) -> str:
    """The NOTIFY channel for a topic and routing key: readable when it can be, always short.

    A name with other characters than SAFE_CHANNEL's, or past CHANNEL_BYTES, keeps a readable
    prefix and ends with a hash of the whole, so two topics never share a channel.
    """
    whole = f"{topic}.{routing_key}"
    if SAFE_CHANNEL.fullmatch(whole) and len(whole) <= CHANNEL_BYTES:
        return whole
    digest = hashlib.sha256(whole.encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9_.:-]", "_", whole)[: CHANNEL_BYTES - len(digest) - 1]
    return f"{readable}_{digest}"


def payload_of(body: bytes, limit: int) -> str:
    """body as the text NOTIFY carries, or ValueError saying why it cannot be."""
    if len(body) > limit:
        raise ValueError(
            f"PostgreSQL NOTIFY carries at most {limit} bytes; this message has {len(body)} "
            "(send a head and let receivers read the store)"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"PostgreSQL NOTIFY carries text; the message is not UTF-8: {exc}"
        ) from None
    if "\x00" in text:
        raise ValueError("PostgreSQL NOTIFY carries text; the message holds a NUL byte")
    return text


class PostgresBroker(Broker):
    """Fan-out through a PostgreSQL NOTIFY channel."""

    max_message_bytes = 7999
    """NOTIFY's payload must be shorter than 8000 bytes (the server's default build)."""

    def __init__(self, url: str, *, keepalive: float = KEEPALIVE, **options: Any) -> None:
        super().__init__(url, **options)
        self.keepalive = keepalive
        self.channel = channel_name(self.topic, self.routing_key)
        self._connection: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._lock = asyncio.Lock()

    async def _connect(self) -> None:
        lost = self._lost = asyncio.Event()
        connection = self._connection = await asyncpg.connect(
            libpq_url(self.url),
            timeout=10,
            server_settings={"application_name": f"mercurio-broker {self.node_id}"[:63]},
        )
        connection.add_termination_listener(lambda _connection: lost.set())
        await connection.add_listener(self.channel, self._on_notify)

    def _on_notify(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        self._received(payload.encode("utf-8"))

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), self.keepalive)
            except TimeoutError:
                await self._keepalive()
                continue
            raise ConnectionError("PostgreSQL connection closed")

    async def _keepalive(self) -> None:
        connection = self._connection
        if connection is None:
            raise ConnectionError("PostgreSQL connection dropped")
        async with self._lock:
            await connection.fetchval("SELECT 1", timeout=self.keepalive)

    async def _disconnect(self) -> None:
        connection = self._connection
        if connection is not None and not connection.is_closed():
            try:
                await connection.close(timeout=5)
            except Exception:
                connection.terminate()
        # Dropped only once closed: close() runs this again after cancelling the reconnect
        # loop, which may have been cancelled halfway through it.
        self._connection = None

    async def publish(self, body: bytes) -> None:
        payload = payload_of(body, self.max_message_bytes)
        connection = self._connection
        if connection is None or not self.connected:
            raise BrokerUnavailable("PostgreSQL link is down")
        try:
            async with self._lock:
                await connection.execute(
                    "SELECT pg_notify($1, $2)", self.channel, payload, timeout=PUBLISH_TIMEOUT
                )
        except Exception as exc:
            # A connection that failed a query (or timed out in one) is not trusted again:
            # the reconnect loop replaces it, and the owner heals from the store.
            self._lost.set()
            raise BrokerUnavailable(f"PostgreSQL publish failed: {type(exc).__name__}") from exc
