"""RabbitMQ (aio-pika): a durable exchange named by the topic, one private queue per node.

As the prototype set it up: the exchange (MERCURIO_MQ_TOPIC, type `topic` unless the URL says
`?exchange_type=fanout`) is durable, so it outlives every node; each node binds its own
exclusive, auto-deleted queue with MERCURIO_MQ_ROUTING_KEY, so the queue dies with the node's
connection and a node that comes back starts clean (and heals from the store, not the queue).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
)

from mercurio.brokers.base import Broker
from mercurio.errors import BrokerUnavailable

EXCHANGE_TYPES = ("topic", "fanout")
HEARTBEAT = 10
"""Seconds; a link that dies without a FIN (cable, NAT) is noticed within about twice this."""
QUEUE_MAX_LENGTH = 100_000
"""A node that stops consuming must not grow the broker's memory: drop the oldest doorbells
(the store heals the node when it catches up)."""


def _split_url(url: str) -> tuple[str, str]:
    """(url for aio-pika with a heartbeat, exchange type) from MERCURIO_MQ_CONN."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    kind = query.pop("exchange_type", "topic").lower()
    if kind not in EXCHANGE_TYPES:
        raise ValueError(f"exchange_type must be one of {', '.join(EXCHANGE_TYPES)}")
    query.setdefault("heartbeat", str(HEARTBEAT))
    return urlunsplit(parts._replace(query=urlencode(query))), kind


class AmqpBroker(Broker):
    """Fan-out through a RabbitMQ exchange."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._connect_url, self.exchange_type = _split_url(url)
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._lost = asyncio.Event()

    async def _connect(self) -> None:
        lost = self._lost = asyncio.Event()
        connection = self._connection = await aio_pika.connect(self._connect_url, timeout=10)
        connection.close_callbacks.add(lambda *_: lost.set())
        # No publisher confirms: a confirm per doorbell costs a round trip, and a doorbell lost
        # with a dying link is healed anyway (the publisher announces its last id on reconnect).
        channel = self._channel = await connection.channel(publisher_confirms=False)
        channel.close_callbacks.add(lambda *_: lost.set())
        self._exchange = await channel.declare_exchange(
            self.topic, self.exchange_type, durable=True
        )
        queue = await channel.declare_queue(
            f"{self.topic}.{self.node_id or 'node'}.{uuid.uuid4().hex[:8]}",
            exclusive=True,
            auto_delete=True,
            arguments={"x-max-length": QUEUE_MAX_LENGTH, "x-overflow": "drop-head"},
        )
        await queue.bind(self._exchange, routing_key=self.routing_key)
        await queue.consume(self._on_delivery, no_ack=True)

    async def _on_delivery(self, message: AbstractIncomingMessage) -> None:
        self._received(message.body)

    async def _run(self) -> None:
        await self._lost.wait()

    async def _disconnect(self) -> None:
        self._channel = None
        self._exchange = None
        connection = self._connection
        if connection is not None and not connection.is_closed:
            try:
                await asyncio.wait_for(connection.close(), 5)
            except Exception:
                pass
        # Dropped only once closed: close() runs this again after cancelling the reconnect
        # loop, which may have been cancelled halfway through it.
        self._connection = None

    async def publish(self, body: bytes) -> None:
        exchange = self._exchange
        if exchange is None or not self.connected:
            raise BrokerUnavailable("RabbitMQ link is down")
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT)
        try:
            await exchange.publish(message, routing_key=self.routing_key)
        except Exception as exc:
            raise BrokerUnavailable(f"RabbitMQ publish failed: {type(exc).__name__}") from exc
