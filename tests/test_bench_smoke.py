"""The benchmark runs end to end in its tiny mode and writes every section of its JSON; its
typical peer (bench/peer.py) answers the routes the benchmark uses with Mercurio's contract.

No timing is asserted: the machine is shared. Only that each figure exists and is sane.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from bench.loadgen import mint_tokens
from bench.proc import free_port

ROOT = Path(__file__).resolve().parent.parent


def _positive(value: object, where: str) -> None:
    assert isinstance(value, int | float), f"{where}: {value!r} is not a number"
    assert math.isfinite(value) and value > 0, f"{where}: {value!r}"


def _check_fanout(phase: dict[str, Any], where: str) -> None:
    assert not phase["publish_errors"], where
    assert phase["deliveries"] == phase["deliveries_expected"] > 0, where
    _positive(phase["deliveries_per_s"], where)
    _positive(phase["wall_s"], where)
    for key in ("server_cpu_s", "loadgen_cpu_s"):  # 10 ms ticks: may read 0 here
        assert math.isfinite(phase[key]) and phase[key] >= 0, f"{where} {key}"
    for key in ("p50_ms", "p99_ms"):
        _positive(phase["latency"][key], f"{where} latency {key}")
    assert phase["latency"]["samples"] == phase["deliveries"]
    assert math.isfinite(phase["server_cpu_us_per_delivery"])


def _check_unicast(level: dict[str, Any], where: str) -> None:
    assert not level["publish_errors"], where
    assert level["deliveries"] == level["publishes"] > 0, where
    _positive(level["publishes_per_s"], where)
    _positive(level["publish_latency"]["p99_ms"], where)
    _positive(level["delivery_latency"]["p99_ms"], where)
    assert math.isfinite(level["server_cpu_us_per_publish"])


@pytest.mark.timeout(420)
def test_bench_tiny_writes_every_section(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--tiny", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    written = list(tmp_path.glob("*.json"))
    assert len(written) == 1, done.stdout
    report = json.loads(written[0].read_text())
    assert "broadcast CPU µs/delivery" in done.stdout
    assert "KiB per idle stream" in done.stdout

    for side in ("mercurio", "peer", "ceiling"):
        figures = report[side]
        assert figures["memory"], side
        for memory in figures["memory"]:
            assert memory["streams"] == 50 and memory["failed"] == 0
            assert math.isfinite(memory["kib_per_stream"])
            _positive(memory["rss_mib"], f"{side} rss")
        kinds = [(f["kind"], f["mode"]) for f in figures["fanout"]]
        assert kinds == [("broadcast", "burst"), ("announce", "burst"), ("announce", "paced")]
        for phase in figures["fanout"]:
            _check_fanout(phase, f"{side} {phase['kind']} {phase['mode']}")
        broadcast = figures["fanout"][0]
        assert broadcast["destinations_per_publish"] == 50, side
        assert [u["concurrency"] for u in figures["unicast"]] == [1, 4], side
        for level in figures["unicast"]:
            assert level["streams"] == 50, side  # unicasts go to every open stream
            _check_unicast(level, f"{side} unicast c={level['concurrency']}")

    flatness = report["flatness"]
    assert flatness["prefill_rows"] == 5_000
    for side in ("mercurio", "peer"):
        [phase] = flatness[side]["fanout"]
        assert (phase["kind"], phase["streams"]) == ("broadcast", 50)
        _check_fanout(phase, f"{side} prefilled")

    postgres = report["postgres"]
    if "skipped" not in postgres:
        [phase] = postgres["mercurio"]["fanout"]
        _check_fanout(phase, "postgres broadcast")
        [level] = postgres["mercurio"]["unicast"]
        _check_unicast(level, "postgres unicast")

    rows = {row["figure"]: row for row in report["table"]}
    for figure in (
        "broadcast CPU µs/delivery",
        "durable unicast/s",
        "prefilled/empty deliveries/s",
    ):
        for side in ("mercurio", "peer"):
            _positive(rows[figure][side], f"table {figure} {side}")
    _positive(rows["broadcast deliveries/s"]["ceiling"], "table ceiling")
    assert report["machine"]["cpus"] >= 1
    _positive(report["machine"]["fsyncs_per_s"], "fsyncs")


@pytest.fixture
def peer_url(tmp_path: Path) -> Iterator[str]:
    """The typical peer in its own process, as the benchmark starts it."""
    port = free_port()
    command = [sys.executable, "-m", "bench.peer", "--port", str(port)]
    peer = subprocess.Popen([*command, "--db", str(tmp_path / "peer.db")], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert peer.poll() is None, "the peer exited"
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the peer did not answer in 30 s"
                time.sleep(0.1)
        yield url
    finally:
        peer.terminate()
        peer.wait(20)


@pytest.mark.timeout(60)
async def test_peer_answers_the_routes_the_bench_uses(peer_url: str) -> None:
    publisher, alice = mint_tokens(["666"], publisher=True)[0], mint_tokens(["alice"])[0]
    as_publisher = {"authorization": f"Bearer {publisher}"}
    async with httpx.AsyncClient(base_url=peer_url, timeout=10) as api:
        stream_url = "/api/clients/alice/notifications/stream"
        assert (await api.get(stream_url)).status_code == 401
        as_alice = {"authorization": f"Bearer {alice}"}
        wrong = await api.get("/api/clients/bob/notifications/stream", headers=as_alice)
        assert wrong.status_code == 403
        body = {"sourceID": "s", "destinationID": "alice", "data": {"t": 1}}
        refused = await api.post("/api/events/unicast", json=body, headers=as_alice)
        assert refused.status_code == 403

        got: list[dict[str, Any]] = []
        async with aconnect_sse(api, "GET", stream_url, headers=as_alice) as source:
            one = await api.post("/api/events/unicast", json=body, headers=as_publisher)
            many = await api.post(
                "/api/events/broadcast",
                json={"sourceID": "s", "destinations": ["bob", "alice"], "data": 2},
                headers=as_publisher,
            )
            everyone = await api.post(
                "/api/events/announce", json={"sourceID": "s", "data": 3}, headers=as_publisher
            )
            async for event in source.aiter_sse():
                if not event.data:
                    continue  # the opening `retry:` frame
                got.append(json.loads(event.data))
                if len(got) == 3:
                    break
    assert one.status_code == many.status_code == everyone.status_code == 200
    first, (to_bob, to_alice) = one.json(), many.json()
    assert to_bob["notificationID"] < to_alice["notificationID"]  # one per destination, in order
    assert [n["notificationID"] for n in got] == [
        first["notificationID"],
        to_alice["notificationID"],
        everyone.json()["notificationID"],
    ]
    assert [n["clientID"] for n in got] == ["alice", "alice", "*"]
    assert [n["data"] for n in got] == [{"t": 1}, 2, 3]
