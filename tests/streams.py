"""A test-side SSE reader: a real httpx-sse client reading in a background task."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse


@dataclass
class Received:
    event: str
    id: str
    data: Any


class Stream:
    """Events of one open stream, awaited one by one with a timeout."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Received | None] = asyncio.Queue()
        self.status: int | None = None
        self.headers: httpx.Headers | None = None
        self.opened = asyncio.Event()

    async def next(self, timeout: float = 10) -> Received:
        item = await asyncio.wait_for(self.queue.get(), timeout)
        if item is None:
            raise EOFError("stream ended")
        return item

    async def next_message(self, timeout: float = 10) -> Received:
        """The next notification (unnamed event), skipping named ones."""
        while True:
            item = await self.next(timeout)
            if item.event == "message":
                return item

    async def messages(self, count: int, timeout: float = 10) -> list[Received]:
        return [await self.next_message(timeout) for _ in range(count)]

    async def ended(self, timeout: float = 10) -> list[Received]:
        """Wait for the server to end the stream; return what came before the end."""
        seen = []
        while True:
            item = await asyncio.wait_for(self.queue.get(), timeout)
            if item is None:
                return seen
            seen.append(item)

    def pending(self) -> list[Received]:
        out = []
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item is not None:
                out.append(item)
        return out


def _decode(sse: ServerSentEvent) -> Received:
    try:
        data = json.loads(sse.data) if sse.data else None
    except json.JSONDecodeError:
        data = sse.data
    return Received(sse.event, sse.id, data)


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> AsyncIterator[Stream]:
    """Open a stream; the context waits until the response headers arrived."""
    stream = Stream()

    async def read() -> None:
        try:
            async with aconnect_sse(
                client,
                "GET",
                url,
                headers=dict(headers or {}),
                params=params,
                timeout=httpx.Timeout(10, read=None),
            ) as source:
                stream.status = source.response.status_code
                stream.headers = source.response.headers
                stream.opened.set()
                if stream.status != 200:
                    await source.response.aread()
                    return
                async for sse in source.aiter_sse():
                    # A block without data (retry hint, heartbeat comment) dispatches nothing
                    # in browsers; httpx-sse yields it, carrying the last id.
                    if sse.data:
                        await stream.queue.put(_decode(sse))
        except (httpx.HTTPError, httpx.StreamError):
            pass
        finally:
            stream.opened.set()
            await stream.queue.put(None)

    task = asyncio.create_task(read())
    await asyncio.wait_for(stream.opened.wait(), 10)
    try:
        yield stream
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
