"""The ceiling: a bare asyncio server that does only what the wire needs.

It speaks just enough of the service's contract for the benchmark (open a stream, announce,
broadcast, unicast), keeps nothing but a transport per stream, encodes each notification's JSON
once and writes `head + clientID + tail` as one HTTP chunk to each socket: the same frames the
service sends, with no storage, no framework and no per-stream task. What it reaches is what
this machine allows; the service's figures are given as a fraction of it.

    python -m bench.ceiling --port 8123
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
from datetime import UTC, datetime

import orjson

from bench.proc import raise_nofile, run

STREAM = re.compile(rb"/api/clients/([^/]+)/notifications/stream/?")
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"x-accel-buffering: no\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
HELLO = b": connected\n\nretry: 3000\n\n"
MARKER = "\x00client\x00"


def chunk(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(body), body)


def answer(status: int, body: bytes) -> bytes:
    reason = b"OK" if status == 200 else b"Error"
    return b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        status,
        reason,
        len(body),
        body,
    )


class Ceiling:
    def __init__(self) -> None:
        self.by_client: dict[bytes, list[asyncio.Transport]] = {}
        self.next_id = 0

    def frame_parts(self, body: dict[str, object]) -> tuple[bytes, bytes, int, str]:
        self.next_id += 1
        nid = self.next_id
        event_id = str(body.get("id") or f"ceiling-{nid}")
        encoded = orjson.dumps(
            {
                "notificationID": nid,
                "eventID": event_id,
                "sourceID": body.get("sourceID", ""),
                "clientID": MARKER,
                "data": body.get("data"),
                "category": body.get("category", "general"),
                "createdAt": datetime.now(UTC).isoformat(timespec="microseconds"),
            }
        )
        head, _, tail = encoded.partition(orjson.dumps(MARKER))
        return b"id: %d\ndata: %s" % (nid, head), tail + b"\n\n", nid, event_id

    def deliver(self, client: bytes, head: bytes, tail: bytes) -> None:
        transports = self.by_client.get(client)
        if transports:
            data = chunk(head + orjson.dumps(client.decode()) + tail)
            for transport in transports:
                transport.write(data)

    def handle(self, method: bytes, path: bytes, body: bytes, conn: Connection) -> bytes | None:
        if method == b"GET":
            match = STREAM.fullmatch(path.split(b"?", 1)[0])
            if match is None:
                return answer(200, b'{"message":"Welcome to the ceiling"}')
            conn.client = match.group(1)
            assert conn.transport is not None
            self.by_client.setdefault(conn.client, []).append(conn.transport)
            return STREAM_HEAD + chunk(HELLO)
        data = orjson.loads(body) if body else {}
        if path == b"/api/events/announce":
            head, tail, nid, event_id = self.frame_parts(data)
            for client, transports in self.by_client.items():
                framed = chunk(head + orjson.dumps(client.decode()) + tail)
                for transport in transports:
                    transport.write(framed)
            return answer(200, orjson.dumps({"notificationID": nid, "eventID": event_id}))
        if path == b"/api/events/unicast":
            head, tail, nid, event_id = self.frame_parts(data)
            self.deliver(data["destinationID"].encode(), head, tail)
            return answer(200, orjson.dumps({"notificationID": nid, "eventID": event_id}))
        if path == b"/api/events/broadcast":
            out = []
            for destination in data["destinations"]:
                head, tail, nid, event_id = self.frame_parts(data)
                self.deliver(destination.encode(), head, tail)
                out.append({"notificationID": nid, "eventID": event_id})
            return answer(200, orjson.dumps(out))
        return answer(404, b'{"error":"not found"}')

    def forget(self, conn: Connection) -> None:
        transports = self.by_client.get(conn.client or b"")
        if transports and conn.transport in transports:
            transports.remove(conn.transport)
            if not transports:
                del self.by_client[conn.client or b""]


class Connection(asyncio.Protocol):
    __slots__ = ("buf", "client", "server", "transport")

    def __init__(self, server: Ceiling) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.client: bytes | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.client is not None:
            return
        buf = self.buf + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            lines = buf[:end].split(b"\r\n")
            method, path, _ = lines[0].split(b" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(buf) < end + 4 + length:
                break
            body = buf[end + 4 : end + 4 + length]
            buf = buf[end + 4 + length :]
            out = self.server.handle(method, path, body, self)
            if out is not None and self.transport is not None:
                self.transport.write(out)
            if self.client is not None:
                break
        self.buf = buf

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client is not None:
            self.server.forget(self)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = Ceiling()
    listener = await loop.create_server(lambda: Connection(server), host, port, backlog=4096)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    await stop
    listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args()
    raise_nofile()
    run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
