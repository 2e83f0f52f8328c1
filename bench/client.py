"""Minimal HTTP/1.1 clients on raw asyncio: keep-alive requests, and SSE stream readers.

httpx would cost more CPU per event than the server under test; these readers only find the
send timestamp the publisher put in each notification's data (`"t":<monotonic seconds>`),
count it and keep the latency, so 10,000 streams fit in a fraction of a core.
"""

from __future__ import annotations

import asyncio
import re
import time
from array import array

import orjson

STAMP = re.compile(rb'"t": ?([0-9.]+)')  # the peer's json.dumps puts a space


class HttpError(Exception):
    pass


class HttpClient:
    """One keep-alive HTTP/1.1 connection; requests are sequential on it."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._fixed = f"host: {host}:{port}\r\n{extra}".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        """Send one request, return (status, body). Reconnects once if the server hung up."""
        payload = b"" if body is None else orjson.dumps(body)
        head = (
            f"{method} {path} HTTP/1.1\r\n".encode()
            + self._fixed
            + b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(payload)
        )
        for attempt in (0, 1):
            if self._writer is None or self._reader is None or self._reader.at_eof():
                await self.close()
                await self._connect()
            assert self._reader is not None and self._writer is not None
            try:
                self._writer.write(head + payload)
                return await self._response(self._reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt:
                    raise
        raise HttpError("unreachable")

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if length is not None:
            return status, await reader.readexactly(length)
        if chunked:
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return status, b"".join(parts)
                parts.append(await reader.readexactly(size + 2))
                parts[-1] = parts[-1][:-2]
        raise HttpError("response without a length")

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass


class Tally:
    """What all the streams of one process received since the last reset."""

    def __init__(self) -> None:
        self.reset()
        self.open = 0
        self.lost = 0
        self.waiter: asyncio.Future[None] | None = None

    def reset(self) -> None:
        self.frames = 0
        self.latencies = array("d")
        self.first = 0.0
        self.last = 0.0
        self.target = 1 << 62


class SSEReader(asyncio.Protocol):
    """One open stream: GET, wait for 200, then count stamped frames as they come."""

    __slots__ = ("_request", "buf", "ready", "status", "tally", "transport")

    def __init__(self, tally: Tally, request: bytes, ready: asyncio.Future[int]) -> None:
        self.tally = tally
        self.buf = b""
        self.ready: asyncio.Future[int] | None = ready
        self.status = 0
        self.transport: asyncio.Transport | None = None
        self._request = request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self._request)
        self._request = b""

    def data_received(self, data: bytes) -> None:
        if self.ready is not None:
            self._head(data)
            return
        buf = self.buf + data if self.buf else data
        # Frames end with a blank line; the HTTP chunk framing sits between whole frames
        # because the server writes whole frames, so only complete frames are scanned.
        end = buf.rfind(b"\n\n")
        if end < 0:
            self.buf = buf
            return
        self.buf = buf[end + 2 :]
        stamps = STAMP.findall(buf, 0, end)
        if stamps:
            now = time.monotonic()
            tally = self.tally
            if not tally.frames:
                tally.first = now
            tally.last = now
            tally.frames += len(stamps)
            tally.latencies.extend([now - float(s) for s in stamps])
            if tally.frames >= tally.target and tally.waiter is not None:
                if not tally.waiter.done():
                    tally.waiter.set_result(None)

    def _head(self, data: bytes) -> None:
        buf = self.buf + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self.buf = buf
            return
        ready, self.ready = self.ready, None
        assert ready is not None
        self.status = int(buf[: buf.find(b"\r\n")].split()[1])
        self.buf = b""
        if not ready.done():
            ready.set_result(self.status)
        if self.status != 200:
            if self.transport is not None:
                self.transport.close()
            return
        self.tally.open += 1
        rest = buf[end + 4 :]
        if rest:
            self.data_received(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ready is not None:
            if not self.ready.done():
                self.ready.set_exception(exc or ConnectionError("closed before the answer"))
            return
        if self.status == 200:
            self.tally.open -= 1
            self.tally.lost += 1

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def stream_request(host: str, port: int, client_id: str, token: str) -> bytes:
    return (
        f"GET /api/clients/{client_id}/notifications/stream HTTP/1.1\r\n"
        f"host: {host}:{port}\r\naccept: text/event-stream\r\n"
        f"authorization: Bearer {token}\r\n\r\n"
    ).encode()
