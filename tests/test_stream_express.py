"""Live frames written straight to an idle stream's socket (mailbox express), or by its task
when the socket is backed up: in id order, once each, timed, against a real server."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import PUBLISHER, ServerProcess, bearer, new_client_id
from tests.streams import open_stream
from tests.test_metrics import scrape, value

MakeServer = Callable[..., ServerProcess]
IDS = re.compile(rb"^id: (\d+)$", re.MULTILINE)

pytestmark = pytest.mark.timeout(120)


async def _unicast(api: httpx.AsyncClient, user: str, data: object) -> int:
    body = {"sourceID": "x", "destinationID": user, "data": data}
    answer = await api.post("/api/events/unicast", json=body, headers=PUBLISHER)
    assert answer.status_code == 200, answer.text
    nid: int = answer.json()["notificationID"]
    return nid


def _read_ids(reader: socket.socket, received: bytes, count: int) -> bytes:
    """Read until `count` id lines came; a read may end mid-line, so only whole lines count."""
    parts = [received]
    ids, tail = 0, received
    while True:
        whole, _, tail = tail.rpartition(b"\n")
        ids += len(IDS.findall(whole + b"\n")) if whole else 0
        if ids >= count:
            return b"".join(parts)
        chunk = reader.recv(1 << 20)
        assert chunk, "the stream ended early"
        parts.append(chunk)
        tail += chunk


async def test_idle_and_busy_writes_arrive_in_order_once_and_are_timed(
    make_server: MakeServer,
) -> None:
    server = make_server()
    user = new_client_id()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
        before = await scrape(api)
        url = f"/api/clients/{user}/notifications/stream"
        async with open_stream(api, url, headers=bearer(user)) as stream:
            sent = [await _unicast(api, user, i) for i in range(30)]  # one by one: idle
            for burst in range(3):  # ten at once: frames queue while others are written
                sent += await asyncio.gather(*(_unicast(api, user, burst) for _ in range(10)))
            got = [int(m.id) for m in await stream.messages(len(sent))]
        after = await scrape(api)
    assert got == sorted(sent), "frames out of order or missing"
    timed = value(after, "mercurio_publish_to_deliver_seconds_count") - value(
        before, "mercurio_publish_to_deliver_seconds_count"
    )
    assert timed >= 30, "writes to an idle stream went untimed"


async def test_a_reader_that_pauses_gets_everything_in_order_when_it_reads_again(
    make_server: MakeServer,
) -> None:
    # More than the kernel's largest send buffer (tcp_wmem: 4 MiB) goes out while the reader
    # reads nothing: the rest waits in the transport and the mailbox, the task's flow control.
    server = make_server(
        {
            "MERCURIO_STREAM_BUFFER": "5000",
            "MERCURIO_STREAM_BUFFER_BYTES": str(64 << 20),
            "MERCURIO_SSE_HEARTBEAT": "60",
        }
    )
    user = new_client_id()
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a few frames
    reader.connect(("127.0.0.1", server.port))
    token = bearer(user)["Authorization"]
    reader.sendall(
        f"GET /api/clients/{user}/notifications/stream HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: {token}\r\n\r\n".encode()
    )
    received = reader.recv(65536)
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    pad = "p" * 8000
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
        sent: list[int] = []
        for group in range(70):
            sent += await asyncio.gather(
                *(_unicast(api, user, {"i": group, "pad": pad}) for _ in range(10))
            )
    reader.settimeout(10)
    received = await asyncio.to_thread(_read_ids, reader, received, len(sent))
    reader.close()
    assert [int(nid) for nid in IDS.findall(received)] == sorted(sent)
