"""The in-process broker: the reference implementation, and the one unit tests run on.

`memory://name` names a broker "server" that lives in this process; every MemoryBroker on the
same name and topic hears the others. The server can be taken down and brought back
(`memory_server(url).down()` / `.up()`), which is how tests cut the link without sockets.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from mercurio.brokers.base import Broker
from mercurio.errors import BrokerUnavailable


class MemoryServer:
    """A broker service inside this process: topics and the brokers subscribed to them."""

    def __init__(self) -> None:
        self.topics: dict[str, set[MemoryBroker]] = {}
        self.running = True

    def down(self) -> None:
        """Drop every link and refuse new ones, like a broker that went away."""
        self.running = False
        for subscribers in self.topics.values():
            for broker in list(subscribers):
                broker._lost.set()
        self.topics.clear()

    def up(self) -> None:
        """Accept links again (the brokers reconnect on their own)."""
        self.running = True

    def send(self, topic: str, body: bytes) -> None:
        loop = asyncio.get_running_loop()
        for broker in self.topics.get(topic, ()):
            # Delivered on a later turn of the loop, as a network broker would; call_soon
            # keeps the publisher's order.
            loop.call_soon(broker._deliver, body)


_servers: dict[str, MemoryServer] = {}


def memory_server(url: str) -> MemoryServer:
    """The in-process server a memory:// URL names (created on first use)."""
    parts = urlsplit(url)
    name = (parts.netloc + parts.path).strip("/") or "default"
    return _servers.setdefault(name, MemoryServer())


class MemoryBroker(Broker):
    """Fan-out between brokers of one process."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.server = memory_server(url)
        self._lost = asyncio.Event()
        self._linked = False

    async def _connect(self) -> None:
        if not self.server.running:
            raise ConnectionRefusedError("memory broker is down")
        self._lost = asyncio.Event()
        self.server.topics.setdefault(self.topic, set()).add(self)
        self._linked = True

    async def _run(self) -> None:
        await self._lost.wait()

    async def _disconnect(self) -> None:
        self._linked = False
        subscribers = self.server.topics.get(self.topic)
        if subscribers is not None:
            subscribers.discard(self)

    def _deliver(self, body: bytes) -> None:
        if self._linked and self.connected:
            self._received(body)

    async def publish(self, body: bytes) -> None:
        limit = self.max_message_bytes
        if limit is not None and len(body) > limit:
            # None by default; a test sets it to stand in for an engine with a payload limit.
            raise ValueError(f"memory broker carries at most {limit} bytes; got {len(body)}")
        if not (self.connected and self.server.running):
            raise BrokerUnavailable("memory broker link is down")
        self.server.send(self.topic, body)
