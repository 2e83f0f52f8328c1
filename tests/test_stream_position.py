"""A fresh stream's position is the head, and a slow reader's buffer is bounded in bytes."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import httpx
import pytest

from mercurio.stream import Subscription
from tests.conftest import PUBLISHER, ServerProcess, bearer, make_token, new_client_id, rss_kib
from tests.streams import open_stream

pytestmark = pytest.mark.timeout(120)

FRAME = re.compile(rb"id: (\d+)\ndata: ([^\n]*)\n\n")


def stream_url(client: str) -> str:
    return f"/api/clients/{client}/notifications/stream"


async def publish(api: httpx.AsyncClient, client: str, data: object = "x") -> int:
    answer = await api.post(
        "/api/events/unicast",
        headers=PUBLISHER,
        json={"sourceID": "s", "destinationID": client, "data": data},
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["notificationID"])


async def test_token_expired_on_a_fresh_stream_reports_the_head_not_zero(
    api: httpx.AsyncClient,
) -> None:
    client = new_client_id()
    old = [await publish(api, client, i) for i in range(5)]
    headers = {"Authorization": f"Bearer {make_token(client, ttl=2)}"}
    async with open_stream(api, stream_url(client), headers=headers) as stream:
        events = await stream.ended(timeout=15)
    assert events and events[-1].event == "token-expired"
    position = events[-1].data["lastEventId"]
    assert position == old[-1]
    # Resuming from it replays nothing old; what comes next arrives once.
    resume = {**bearer(client), "Last-Event-ID": str(position)}
    async with open_stream(api, stream_url(client), headers=resume) as again:
        fresh = await publish(api, client, "new")
        got = await again.next_message()
        assert int(got.id) == fresh
        await asyncio.sleep(0.5)
        assert [e for e in again.pending() if e.event == "message"] == []


async def test_token_expired_reports_the_last_live_id_past_the_head(
    api: httpx.AsyncClient,
) -> None:
    client = new_client_id()
    await publish(api, client, "old")
    headers = {"Authorization": f"Bearer {make_token(client, ttl=3)}"}
    async with open_stream(api, stream_url(client), headers=headers) as stream:
        await asyncio.sleep(0.3)
        live = await publish(api, client, "live")
        assert int((await stream.next_message()).id) == live
        events = await stream.ended(timeout=15)
    assert events[-1].event == "token-expired"
    assert events[-1].data["lastEventId"] == live


def open_stuck_stream(server: ServerProcess, client: str) -> socket.socket:
    """A stream whose reader never reads, with a small receive window."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(
        f"GET {stream_url(client)} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {make_token(client)}\r\n\r\n".encode()
    )
    return sock


def ids_in(raw: bytes) -> list[int]:
    """Notification ids of the complete frames a raw (chunked) response carried."""
    return [json.loads(data)["notificationID"] for _, data in FRAME.findall(raw)]


def read_until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(15)
    raw = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return raw
        if not chunk:
            return raw
        raw += chunk


async def test_slow_reader_is_closed_over_the_byte_budget_under_the_frame_count(
    make_server: type[ServerProcess],
) -> None:
    """800 x 60 kB to a reader that stopped: 48 MB, far under 10,000 frames. The stream is
    closed once its buffer passes 1 MiB, the server stays small, and the resume has every
    notification exactly once."""
    total = 800
    server = make_server(
        {
            "MERCURIO_STREAM_BUFFER": "10000",
            "MERCURIO_STREAM_BUFFER_BYTES": str(1024 * 1024),
            "MERCURIO_REPLAY_MAX": "5000",
            "MERCURIO_SSE_HEARTBEAT": "60",
        }
    )
    assert server.proc is not None
    stuck = new_client_id()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as api:
        before = peak = rss_kib(server.proc.pid)
        sock = open_stuck_stream(server, stuck)
        await asyncio.sleep(0.3)
        published = []
        for i in range(total):
            published.append(await publish(api, stuck, f"{i}" + "p" * 60_000))
            if i % 50 == 0:
                peak = max(peak, rss_kib(server.proc.pid))
        first_part = ids_in(await asyncio.to_thread(read_until_closed, sock))
        sock.close()
        assert len(first_part) < total, "the slow reader was never cut off"
        growth_mib = (peak - before) / 1024
        # Unbounded by bytes, the stuck stream alone would buffer 48 MB.
        assert growth_mib < 20, f"server grew {growth_mib:.1f} MiB"
        log = server.log_path.read_text()
        assert "stream.slow_reader" in log
        last = first_part[-1] if first_part else 0
        resume = {**bearer(stuck), "Last-Event-ID": str(last)}
        async with open_stream(api, stream_url(stuck), headers=resume) as again:
            rest = [int(m.id) for m in await again.messages(total - len(first_part), 30)]
        assert first_part + rest == published


def test_buffer_over_its_byte_budget_closes_as_slow_reader_under_its_frame_count() -> None:
    sub = Subscription("a", limit=1000, max_bytes=100)
    assert sub.push(1, b"x" * 500, 0.0), "one frame larger than the budget still goes through"
    assert not sub.push(2, b"y", 0.0)
    assert sub.closed and sub.reason == "slow-reader" and len(sub.buffer) == 1
    small = Subscription("a", limit=1000, max_bytes=100)
    assert all(small.push(i, b"z" * 30, 0.0) for i in range(3))
    assert not small.push(4, b"z" * 30, 0.0)
