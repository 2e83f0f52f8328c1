"""Announcements to everyone, and lossless delivery past a reader that stops reading."""

from __future__ import annotations

import asyncio
import json
import os

import httpx
import pytest

from tests.conftest import PUBLISHER, ServerProcess, bearer, new_client_id, rss_kib
from tests.streams import open_stream

pytestmark = pytest.mark.timeout(180)


async def test_announcement_reaches_everyone_with_their_own_read_state(
    make_server: type[ServerProcess],
) -> None:
    server = make_server()
    a, b = new_client_id(), new_client_id()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as api:
        async with (
            open_stream(api, f"/api/clients/{a}/notifications/stream", headers=bearer(a)) as sa,
            open_stream(api, f"/api/clients/{b}/notifications/stream", headers=bearer(b)) as sb,
        ):
            answer = await api.post(
                "/api/events/announce",
                headers=PUBLISHER,
                json={"sourceID": "ops", "data": "maintenance", "category": "system"},
            )
            nid = answer.json()["notificationID"]
            got_a, got_b = await sa.next_message(), await sb.next_message()
            assert got_a.data["notificationID"] == got_b.data["notificationID"] == nid
            assert got_a.data["clientID"] == a and got_b.data["clientID"] == b
        star = await api.post(
            "/api/events/broadcast",
            headers=PUBLISHER,
            json={"sourceID": "ops", "destinations": ["*"], "data": "again"},
        )
        assert len(star.json()) == 1
        # Never connected before: still sees both, as read (retention: not inherited unread).
        future_user = new_client_id()
        for user in (a, b, future_user):
            listed = (
                await api.get(f"/api/clients/{user}/notifications", headers=bearer(user))
            ).json()
            assert [n["notificationID"] for n in listed["notifications"]] == [
                star.json()[0]["notificationID"],
                nid,
            ]
            assert listed["unreadCount"] == (0 if user == future_user else 2)
        await api.put(f"/api/clients/{a}/notifications/{nid}/read", headers=bearer(a))
        assert (
            await api.get(f"/api/clients/{a}/notifications/unread-count", headers=bearer(a))
        ).json()["unreadCount"] == 1
        assert (
            await api.get(f"/api/clients/{b}/notifications/unread-count", headers=bearer(b))
        ).json()["unreadCount"] == 2
        await api.delete(f"/api/clients/{b}/notifications/{nid}", headers=bearer(b))
        assert (
            await api.get(f"/api/clients/{b}/notifications/{nid}", headers=bearer(b))
        ).status_code == 404
        assert (
            await api.get(f"/api/clients/{a}/notifications/{nid}", headers=bearer(a))
        ).status_code == 200
        marked = await api.put(
            f"/api/clients/{future_user}/notifications/read", headers=bearer(future_user)
        )
        assert marked.json()["updated"] == 0
        # No row per user: the database holds one row per announcement.
        db = server.env["MERCURIO_DB_CONN"].removeprefix("sqlite:///")
        import sqlite3

        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT count(*) FROM notifications").fetchone()[0]
        assert rows == 2


def _ids_in(raw: bytes) -> list[int]:
    """Notification ids of the complete frames in a raw SSE body."""
    ids = []
    for frame in raw.split(b"\n\n")[:-1]:
        for line in frame.split(b"\n"):
            if line.startswith(b"data: {"):
                ids.append(json.loads(line[6:])["notificationID"])
    return ids


async def test_stuck_reader_is_cut_off_alone_and_resumes_losing_nothing(
    make_server: type[ServerProcess],
) -> None:
    """4,000 notifications of 10 KB while one client stops reading: the healthy one gets all
    of them, the stuck one is disconnected, memory stays bounded, and on resume the stuck one
    has every notification exactly once."""
    total = 4_000
    server = make_server(
        {
            "MERCURIO_STREAM_BUFFER": "64",
            "MERCURIO_REPLAY_MAX": "20000",
            "MERCURIO_SSE_HEARTBEAT": "60",
        }
    )
    assert server.proc is not None
    healthy, stuck = new_client_id(), new_client_id()
    payload = "p" * 10_000  # 40 MB in all: far more than the sockets' buffers
    limits = httpx.Limits(max_connections=100)
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as api,
        httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(30, read=None)) as slow,
    ):
        before = rss_kib(server.proc.pid)
        stuck_response = await slow.send(
            slow.build_request(
                "GET", f"/api/clients/{stuck}/notifications/stream", headers=bearer(stuck)
            ),
            stream=True,
        )
        assert stuck_response.status_code == 200
        async with open_stream(
            api, f"/api/clients/{healthy}/notifications/stream", headers=bearer(healthy)
        ) as good:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(total):
                queue.put_nowait(i)
            published: list[int] = []
            peak = before

            async def worker() -> None:
                nonlocal peak
                while not queue.empty():
                    i = queue.get_nowait()
                    answer = await api.post(
                        "/api/events/announce",
                        headers=PUBLISHER,
                        json={"sourceID": "s", "data": f"{i}{payload}"},
                    )
                    published.append(answer.json()["notificationID"])
                    if i % 500 == 0:
                        peak = max(peak, rss_kib(server.proc.pid))  # type: ignore[union-attr]

            await asyncio.gather(*(worker() for _ in range(16)))
            received = [int(m.id) for m in await good.messages(total, timeout=60)]
        assert sorted(received) == sorted(published)
        assert received == sorted(received)
        growth_mib = (peak - before) / 1024
        # An unbounded queue for the stuck reader alone would hold 40 MB.
        assert growth_mib < 30, f"server grew {growth_mib:.1f} MiB"

        raw = b""
        try:
            async for chunk in stuck_response.aiter_raw():
                raw += chunk
        except (httpx.RemoteProtocolError, httpx.ReadError):
            pass  # cut off mid-frame: expected for a reader that stopped reading
        await stuck_response.aclose()
        first_part = _ids_in(raw)
        assert len(first_part) < total, "the stuck reader was never cut off"
        last = first_part[-1] if first_part else 0
        async with open_stream(
            api,
            f"/api/clients/{stuck}/notifications/stream",
            headers={**bearer(stuck), "Last-Event-ID": str(last)},
        ) as again:
            rest = [int(m.id) for m in await again.messages(total - len(first_part), timeout=60)]
        assert first_part + rest == sorted(published)
        log = server.log_path.read_text()
        assert "stream.slow_reader" in log
    assert os.path.exists(f"/proc/{server.proc.pid}")
