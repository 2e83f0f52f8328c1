"""A reconnect storm: jittered retry hints, replays in bounded pages, a few replays at once."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from mercurio.model import NewNotification
from mercurio.store import Store
from tests.conftest import ServerProcess, bearer, make_token, new_client_id, rss_kib
from tests.helpers import until
from tests.streams import open_stream
from tests.test_stream_position import FRAME, publish, stream_url

pytestmark = pytest.mark.timeout(180)


async def publish_many(api: httpx.AsyncClient, client: str, count: int, data: str) -> list[int]:
    """count notifications to client, 16 publishes at a time; their ids in commit order."""
    ids: list[int] = []
    for start in range(0, count, 16):
        batch = range(start, min(count, start + 16))
        ids += await asyncio.gather(*(publish(api, client, f"{i} {data}") for i in batch))
    return sorted(ids)


def resume_socket(port: int, client: str, last_event_id: int, rcvbuf: int = 0) -> socket.socket:
    """A raw stream request resuming after last_event_id (a small receive window if rcvbuf)."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET {stream_url(client)} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {make_token(client)}\r\n"
        f"Last-Event-ID: {last_event_id}\r\n\r\n".encode()
    )
    return sock


def read_ids(sock: socket.socket, count: int) -> list[int]:
    """Read a raw stream until it carried count notifications (or ended); their ids."""
    sock.settimeout(60)
    raw = b""
    ids: list[int] = []
    while len(ids) < count:
        try:
            chunk = sock.recv(1 << 20)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        raw += chunk
        end = raw.rfind(b"\n\n")
        if end >= 0:
            ids += [json.loads(data)["notificationID"] for _, data in FRAME.findall(raw[: end + 2])]
            raw = raw[end + 2 :]
    return ids


def first_retry(port: int, client: str) -> int:
    """The `retry:` hint a fresh stream of client gets first, in milliseconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"GET {stream_url(client)} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {make_token(client)}\r\n\r\n".encode()
        )
        raw = b""
        while (found := re.search(rb"retry: (\d+)\r?\n", raw)) is None:
            chunk = sock.recv(4096)
            assert chunk, f"the stream ended before its retry hint: {raw!r}"
            raw += chunk
        return int(found.group(1))


async def test_retry_hints_are_spread_from_the_base_to_twice_it_per_stream(
    make_server: type[ServerProcess],
) -> None:
    server = make_server({"MERCURIO_SSE_RETRY_MS": "1000"})
    hints = [await asyncio.to_thread(first_retry, server.port, new_client_id()) for _ in range(30)]
    assert all(1000 <= ms <= 2000 for ms in hints), hints
    # One value for all would bring every client of a deploy back in the same instant.
    assert len(set(hints)) > 10, hints


async def test_resumes_queued_behind_one_replay_slot_get_backlog_then_live_once_in_order(
    make_server: type[ServerProcess],
) -> None:
    server = make_server({"MERCURIO_STREAM_REPLAY_CONCURRENCY": "1"})
    users = [new_client_id() for _ in range(8)]
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as api, AsyncExitStack() as open_:
        marks = {u: await publish(api, u, "seen") for u in users}
        backlog = {u: await publish_many(api, u, 150, "missed") for u in users}
        streams = []
        for user in users:  # all resumed at once: one replays, the others wait their turn
            headers = {**bearer(user), "Last-Event-ID": str(marks[user])}
            streams.append(
                await open_.enter_async_context(open_stream(api, stream_url(user), headers=headers))
            )
        # Published while the resumes wait or replay: it comes after the backlog, once.
        live = {u: [await publish(api, u, "live") for _ in range(3)] for u in users}
        for user, stream in zip(users, streams, strict=True):
            got = [int(m.id) for m in await stream.messages(153, timeout=60)]
            assert got == backlog[user] + live[user], user


async def test_a_reader_stuck_in_its_replay_gives_up_the_only_replay_slot_as_a_slow_reader(
    make_server: type[ServerProcess],
) -> None:
    """The one replay slot must not be held for ever by a client that stopped reading: past a
    heartbeat without taking a page it is closed as a slow reader, and the next one replays."""
    server = make_server(
        {
            "MERCURIO_STREAM_REPLAY_CONCURRENCY": "1",
            "MERCURIO_SSE_HEARTBEAT": "1",
            "MERCURIO_LOG_FORMAT": "json",
        }
    )
    stuck, next_ = new_client_id(), new_client_id()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as api:
        await publish_many(api, stuck, 100, "p" * 60_000)  # one page: 6 MB, never read
        waiting = [await publish(api, next_, i) for i in range(3)]
        sock = resume_socket(server.port, stuck, 0, rcvbuf=4096)
        try:
            await until(lambda: "stream.open" in server.log_path.read_text(), what="the open")
            headers = {**bearer(next_), "Last-Event-ID": "0"}
            async with open_stream(api, stream_url(next_), headers=headers) as stream:
                got = [int(m.id) for m in await stream.messages(3, timeout=30)]
        finally:
            sock.close()
    assert got == waiting
    closes = [
        json.loads(line)
        for line in server.log_path.read_text().splitlines()
        if '"stream.close"' in line
    ]
    assert [c["reason"] for c in closes if c["client_id"] == stuck] == ["slow-reader"]


async def test_stuck_resumes_of_a_long_backlog_hold_a_page_each_not_the_backlog(
    make_server: type[ServerProcess],
) -> None:
    """4 resumes of 2,000 x 10 kB (20 MB each) whose readers stop: read whole, they would
    hold ~80 MB in the server; a page each is ~4 MB. Read afterwards, each is complete."""
    total = 2000
    server = make_server({"MERCURIO_REPLAY_MAX": "5000", "MERCURIO_SSE_HEARTBEAT": "60"})
    assert server.proc is not None
    client = new_client_id()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as api:
        published = await publish_many(api, client, total, "p" * 10_000)
    await asyncio.sleep(0.5)
    before = peak = rss_kib(server.proc.pid)
    socks = [resume_socket(server.port, client, 0, rcvbuf=4096) for _ in range(4)]
    try:
        for _ in range(40):  # the replays run until the readers' windows are full
            await asyncio.sleep(0.1)
            peak = max(peak, rss_kib(server.proc.pid))
        growth_mib = (peak - before) / 1024
        got = await asyncio.gather(*(asyncio.to_thread(read_ids, s, total) for s in socks))
    finally:
        for sock in socks:
            sock.close()
    assert all(ids == published for ids in got)
    assert growth_mib < 30, f"server grew {growth_mib:.1f} MiB"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(f"sqlite:///{tmp_path}/storm.db")
    await store.start()
    yield store
    await store.close()


def item(client: str, n: int) -> NewNotification:
    return NewNotification(f"e{n}", "src", client, "general", '"d"')


async def test_replay_pages_are_bounded_ordered_and_keep_the_newest_past_the_limit(
    store: Store,
) -> None:
    ids = [n.id for n in await store.publish([item("a", i) for i in range(250)])]
    await store.publish([item("b", i) for i in range(10)])
    pages = [p async for p in store.replay("a", ids[9], limit=1000, page=100)]
    assert [len(p.notifications) for p in pages] == [100, 100, 40]
    assert [n.id for p in pages for n in p.notifications] == ids[10:]
    assert not any(p.truncated for p in pages)
    newest = [p async for p in store.replay("a", 0, limit=150, page=100)]
    assert [n.id for p in newest for n in p.notifications] == ids[-150:]
    assert [p.truncated for p in newest] == [True, False]
    exact = [p async for p in store.replay("a", ids[49], limit=200, page=100)]
    assert [n.id for p in exact for n in p.notifications] == ids[50:]
    assert not any(p.truncated for p in exact)
    assert [p async for p in store.replay("a", ids[-1], limit=10, page=100)] == []
