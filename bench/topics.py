"""The cost of a topic publish: one stored row, fanned out to the subscribers with a stream.

    .venv/bin/python -m bench.topics [--subscribers 100000] [--connected 10000] [--rounds 20]

`--subscribers` clients follow one topic (their subscription rows are written straight into
the SQLite file before the server starts: 100,000 PUTs would only measure fsyncs), and the
first `--connected` of them hold a stream open, from load-generator processes on raw sockets.
Then `--rounds` topic publishes, one at a time, each waited for until every connected stream
got it: the server's CPU seconds per publish (its own process, the load generators apart),
publish-to-last-delivery, and the rows stored. An announcement to the same open streams is
measured the same way beside it: the other one-row publish, whose fan-out is every stream.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import proc as procstat
from bench.client import HttpClient
from bench.loadgen import Worker, mint_tokens, stream_worker
from bench.measure import percentile
from bench.servers import HOST, mercurio, migrate_mercurio, stopping

TOPIC = "bench-news"


def subscribe_directly(db_path: Path, users: list[str]) -> None:
    """Everyone follows TOPIC from the start of the ledger, in one transaction."""
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO topic_subscriptions (client_id, topic, since_id, until_id, created_at)"
            " VALUES (?, ?, 0, NULL, '2026-01-01 00:00:00.000000')",
            ((user, TOPIC) for user in users),
        )
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def count_rows(db_path: Path, client_id: str) -> int:
    db = sqlite3.connect(db_path)
    try:
        query = "SELECT count(*) FROM notifications WHERE client_id = ?"
        return int(db.execute(query, (client_id,)).fetchone()[0])
    finally:
        db.close()


async def rounds(
    server_pid: int,
    client: HttpClient,
    workers: list[Worker],
    route: str,
    body: dict[str, Any],
    count: int,
    expected: list[int],
) -> dict[str, float]:
    """`count` publishes one after another, each until every open stream got it (expected:
    how many streams each worker holds)."""
    last_delivery: list[float] = []
    # The kernel counts CPU in 10 ms ticks: the total over every round, divided, not each one.
    cpu_start = procstat.cpu_seconds(server_pid)
    for _ in range(count):
        for worker in workers:
            await worker.call("reset")
        sent = time.monotonic()
        status, answer = await client.request("POST", route, {**body, "data": {"t": sent}})
        if status != 200:
            raise RuntimeError(f"{route} answered {status}: {answer[:200]!r}")
        results = [
            await worker.call("wait", want, 120)
            for worker, want in zip(workers, expected, strict=True)
        ]
        got = sum(r["frames"] for r in results)
        if got < sum(expected):
            raise RuntimeError(f"{route}: {got} of {sum(expected)} streams got it")
        if any(expected):
            last_delivery.append(max(r["last"] for r in results) - sent)
        await asyncio.sleep(0.05)  # the server's after-work (logs, metrics) counts too
    cpu = procstat.cpu_seconds(server_pid) - cpu_start
    return {
        "cpu_ms": cpu / count * 1000,
        "last_delivery_ms_median": percentile(last_delivery, 50) * 1000 if last_delivery else 0,
        "last_delivery_ms_max": max(last_delivery) * 1000 if last_delivery else 0,
    }


async def main(subscribers: int, connected: int, count: int, workers_n: int) -> None:
    procstat.raise_nofile()
    users = [f"fan-{i}" for i in range(subscribers)]
    with tempfile.TemporaryDirectory(prefix="mercurio-bench-topics-") as tmp:
        folder = Path(tmp)
        db_path = migrate_mercurio(folder, None)
        started = time.monotonic()
        subscribe_directly(db_path, users)
        print(f"{subscribers} subscriptions written in {time.monotonic() - started:.1f} s")
        with stopping(mercurio(folder, connected + 10, None)) as server:
            await server.ready()
            workers = [Worker(stream_worker, HOST, server.port) for _ in range(workers_n)]
            try:
                share = -(-connected // workers_n)
                opened: list[int] = []
                for i, worker in enumerate(workers):
                    part = users[i * share : min(connected, (i + 1) * share)]
                    answer = await worker.call("open", part, 64, timeout=900)
                    opened.append(answer["opened"])
                rss = server.rss() / 2**20
                print(f"{sum(opened)} streams open; server RSS {rss:.0f} MiB")
                (token,) = mint_tokens(["666"], publisher=True)
                client = HttpClient(HOST, server.port, {"authorization": f"Bearer {token}"})
                status, answer = await client.request("GET", f"/api/topics/{TOPIC}")
                print(f"GET /api/topics/{TOPIC}: {status} {answer.decode()}")
                topic = await rounds(
                    server.pid,
                    client,
                    workers,
                    "/api/events/topic",
                    {"topic": TOPIC, "sourceID": "bench"},
                    count,
                    opened,
                )
                nobody = await rounds(
                    server.pid,
                    client,
                    workers,
                    "/api/events/topic",
                    {"topic": "bench-nobody", "sourceID": "bench"},
                    count,
                    [0] * len(workers),
                )
                announce = await rounds(
                    server.pid,
                    client,
                    workers,
                    "/api/events/announce",
                    {"sourceID": "bench"},
                    count,
                    opened,
                )
                await client.close()
            finally:
                for worker in workers:
                    worker.stop()
        rows = count_rows(db_path, f"#{TOPIC}")
    print(f"rows stored for {count} topic publishes: {rows}")
    print(f"{'publish':<34} {'server CPU ms':>14} {'last delivery ms (median/max)':>31}")
    table = (
        (f"topic, {sum(opened)} of {subscribers} connected", topic),
        ("topic nobody follows", nobody),
        (f"announce, {sum(opened)} connected", announce),
    )
    for name, result in table:
        delivery = (
            f"{result['last_delivery_ms_median']:.1f} / {result['last_delivery_ms_max']:.1f}"
            if result["last_delivery_ms_max"]
            else "-"
        )
        print(f"{name:<34} {result['cpu_ms']:>14.2f} {delivery:>31}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--connected", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="stream load-generator processes")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    if args.connected > args.subscribers:
        sys.exit("--connected cannot exceed --subscribers")
    procstat.run(main(args.subscribers, args.connected, args.rounds, args.workers))
