"""Durability across kill -9: what a publish acknowledged survives the process, on SQLite."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import PUBLISHER, ServerProcess, new_client_id, stored_notifications

MakeServer = Callable[..., ServerProcess]


async def _publish_until_killed(
    server: ServerProcess, users: list[str], rounds: int
) -> list[tuple[str, int, str]]:
    """Unicasts and broadcasts from 16 publishers; kill -9 the server half way through.

    Returns (user, notification id, event id) of every delivery answered 200.
    """
    acknowledged: list[tuple[str, int, str]] = []
    enough = asyncio.Event()
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)

    async def publisher(slot: int, client: httpx.AsyncClient) -> None:
        for i in range(rounds):
            user = users[(slot + i) % len(users)]
            if i % 4 == 3:
                route, dests = "broadcast", users[:5]
                body = {"id": f"b-{slot}-{i}", "sourceID": "666", "destinations": dests, "data": i}
            else:
                route, dests = "unicast", [user]
                body = {"id": f"u-{slot}-{i}", "sourceID": "666", "destinationID": user, "data": i}
            try:
                answer = await client.post(f"/api/events/{route}", json=body, headers=PUBLISHER)
            except httpx.HTTPError:
                return  # the process is gone: nothing after this was acknowledged
            if answer.status_code != 200:
                continue
            got = answer.json()
            if len(acknowledged) >= 200:
                enough.set()
            if route == "unicast":
                acknowledged.append((user, got["notificationID"], got["eventID"]))
            else:
                acknowledged.extend(
                    (dest, d["notificationID"], d["eventID"])
                    for dest, d in zip(dests, got, strict=True)
                )

    async with httpx.AsyncClient(base_url=server.url, timeout=10, limits=limits) as client:
        tasks = [asyncio.create_task(publisher(slot, client)) for slot in range(16)]
        await asyncio.wait_for(enough.wait(), 60)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)
        await asyncio.gather(*tasks)
    return acknowledged


@pytest.mark.timeout(120)
async def test_kill_9_keeps_every_acknowledged_publish_and_ids_keep_rising(
    make_server: MakeServer, tmp_path: Path
) -> None:
    users = [new_client_id() for _ in range(8)]
    server = make_server()
    acknowledged = await _publish_until_killed(server, users, rounds=400)
    assert server.proc is not None and server.proc.wait(10) == -signal.SIGKILL

    restarted = make_server({"MERCURIO_TEST_LOG": str(tmp_path / "restarted.log")})
    async with httpx.AsyncClient(base_url=restarted.url, timeout=10) as client:
        stored = await stored_notifications(client, users)
        missing = set(acknowledged) - stored
        assert not missing, (
            f"{len(missing)} acknowledged publishes lost, e.g. {sorted(missing)[:3]}"
        )
        assert len({nid for _, nid, _ in stored}) == len(stored), "an id was handed out twice"

        body = {"sourceID": "666", "destinationID": users[0], "data": "after"}
        after = await client.post("/api/events/unicast", json=body, headers=PUBLISHER)
        assert after.status_code == 200
        assert after.json()["notificationID"] > max(nid for _, nid, _ in stored)
