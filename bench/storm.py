"""A reconnect storm: `python -m bench.storm --streams 10000 --backlog 200` (a few minutes).

A deploy drops every stream of a node at once and every client comes back with its
Last-Event-ID and a backlog. This phase:

  1. starts the service (bench/run.py's Server, a fresh SQLite file) and opens N streams, one
     user each (load-generator processes, bench/loadgen.py's Worker);
  2. broadcasts one notification to every user, so each stream holds a Last-Event-ID;
  3. deploys: SIGTERM, every stream is dropped; while the service is down the backlog of each
     user is written into the database (with SQL, copying the shape of the real rows: storing
     N x backlog rows through the API is the broadcast phase's business, not this one's);
  4. starts the service again on the same database and reopens every stream at once, each
     with its Last-Event-ID, sampling the new server's RSS from /proc every 20 ms;
  5. reports peak RSS over the idle server's, the time until every stream got its whole
     backlog, in order without gap or duplicate, deliveries/s and server CPU per delivery.

Everything is bounded: counts by the flags, each wait by --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench import proc as procstat
from bench.client import HttpClient, stream_request
from bench.loadgen import Worker, mint_tokens
from bench.phases import PAD
from bench.run import RESULTS, say
from bench.servers import HOST, Server, mercurio_env

FRAME_ID = re.compile(rb"id: (\d+)\ndata:")
BROADCAST = 1000  # destinations per broadcast of the marks


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.storm", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--streams", type=int, default=10_000, help="streams dropped and resumed")
    parser.add_argument("--backlog", type=int, default=200, help="notifications missed per stream")
    parser.add_argument("--workers", type=int, default=2, help="stream-reading processes")
    parser.add_argument("--timeout", type=float, default=600, help="seconds the storm may take")
    parser.add_argument("--source", type=Path, help="run the service from this source tree")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the service")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)
    if args.source is not None:
        args.source = args.source.resolve()
    return args


# -- the stream-reading processes --------------------------------------------------------------


class Resume(asyncio.Protocol):
    """One stream: counts the notification ids after its Last-Event-ID, and checks their order."""

    def __init__(self, tally: Tally, request: bytes, after: int) -> None:
        self.tally, self.request, self.last, self.got, self.bad = tally, request, after, 0, 0
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.done = self.connected = False
        self.opened = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.connected:
            self.connected = True
            self.opened.set()
            self.tally.connected += 1
            self.tally.changed()
        buf = self.buf + data
        end = buf.rfind(b"\n\n")
        if end < 0:
            self.buf = buf
            return
        self.buf = buf[end + 2 :]
        for raw in FRAME_ID.findall(buf, 0, end + 2):
            nid = int(raw)
            if nid <= self.last:
                self.bad += 1  # a duplicate or out of order
            self.last, self.got = max(self.last, nid), self.got + 1
        if not self.done and self.got >= self.tally.target:
            self.done = True
            self.tally.finished(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.tally.lost += 1

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Tally:
    """The streams of one process: how many got their target, and when."""

    def __init__(self) -> None:
        self.target, self.lost, self.connected, self.times = 1, 0, 0, list[float]()
        self.waiter: asyncio.Future[None] | None = None
        self.expected = 0

    def finished(self, stream: Resume) -> None:
        self.times.append(time.monotonic())  # system-wide: comparable across processes
        self.changed()

    def changed(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def until(self, done: Callable[[Tally], bool], timeout: float) -> None:
        """Wait until done(self), or timeout seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done(self) and loop.time() < deadline:
            self.waiter = loop.create_future()
            try:
                await asyncio.wait_for(self.waiter, deadline - loop.time())
            except TimeoutError:
                return


def storm_worker(conn: Connection, users: list[str]) -> None:
    procstat.raise_nofile()
    procstat.run(_worker(conn, users))


async def _worker(conn: Connection, users: list[str]) -> None:
    """Commands: ("open", port, last ids or None, target, timeout): close the streams, open
    new ones, answer once all are connected; ("wait", timeout): answer once each stream got
    its target of notifications, with what they got."""
    tokens = mint_tokens(users)
    streams: list[Resume] = []
    tally = Tally()
    while True:
        message = await asyncio.to_thread(conn.recv)
        if message[0] == "exit":
            return
        if message[0] == "open":
            _, port, after, target, timeout = message
            for stream in streams:
                stream.close()
            tally = Tally()
            tally.target, tally.expected = target, len(users)
            streams = await _open(tally, port, users, tokens, after)
            await tally.until(lambda t: t.connected >= t.expected, timeout)
            conn.send({"connected": tally.connected})
            continue
        await tally.until(lambda t: len(t.times) >= t.expected, message[1])
        conn.send(
            {
                "complete": len(tally.times),
                "bad": sum(s.bad for s in streams),
                "frames": sum(s.got for s in streams),
                "lost": tally.lost,
                "times": tally.times,
                "last_ids": [s.last for s in streams],
            }
        )


async def _open(
    tally: Tally, port: int, users: list[str], tokens: list[str], after: list[int] | None
) -> list[Resume]:
    """Open every stream at once (a few hundred connects in flight: the listen backlog)."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(500 if after is not None else 32)

    async def one(i: int) -> Resume:
        request = stream_request(HOST, port, users[i], tokens[i])
        if after is not None:
            request = request[:-2] + b"last-event-id: %d\r\n\r\n" % after[i]
        async with gate:
            _, stream = await loop.create_connection(
                lambda: Resume(tally, request, after[i] if after else 0), HOST, port
            )
            if after is None:  # the streams before the deploy open 32 at a time per worker
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stream.opened.wait(), 60)
        return stream

    return list(await asyncio.gather(*(one(i) for i in range(len(users)))))


# -- the orchestrator ----------------------------------------------------------------------------


async def broadcast_marks(port: int, users: list[str]) -> None:
    token = mint_tokens(["666"], publisher=True)[0]
    client = HttpClient(HOST, port, {"authorization": f"Bearer {token}"})
    try:
        for start in range(0, len(users), BROADCAST):
            body = {"sourceID": "storm", "destinations": users[start : start + BROADCAST]}
            status, answer = await client.request(
                "POST", "/api/events/broadcast", {**body, "data": {"mark": True}}
            )
            if status != 200:
                raise RuntimeError(f"broadcast of the marks: HTTP {status} {answer[:200]!r}")
    finally:
        await client.close()


def seed_backlog(db: Path, backlog: int) -> int:
    """Write `backlog` notifications for every user that got a mark, interleaved as broadcasts
    would store them, copying the marks' columns; how many rows."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        before = conn.execute("SELECT count(*) FROM notifications").fetchone()[0]
        conn.execute(
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?) "
            "INSERT INTO notifications "
            "(event_id, source_id, client_id, category, data, created_at, publisher_id) "
            "SELECT 'storm-' || k.i || '-' || m.id, m.source_id, m.client_id, m.category, "
            "json_object('i', k.i, 'pad', ?), m.created_at, m.publisher_id "
            "FROM k CROSS JOIN notifications AS m WHERE m.source_id = 'storm' "
            "AND m.event_id NOT LIKE 'storm-%' ORDER BY k.i, m.id",
            (backlog, PAD),
        )
        return int(conn.execute("SELECT count(*) FROM notifications").fetchone()[0] - before)


async def sample_rss(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], procstat.rss_bytes(pid))
        except OSError:
            return
        await asyncio.sleep(0.02)


async def round_trip(workers: list[Worker], *message: Any) -> list[dict[str, Any]]:
    """Send a command to every worker (its last part is its timeout); their answers."""
    for worker in workers:
        worker.send(*message)
    return [await w.reply(message[-1] + 120) for w in workers]


async def storm(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    env = {**mercurio_env(folder, args.streams), **dict(e.split("=", 1) for e in args.env)}
    command = [sys.executable, "-m", "mercurio", "serve"]
    users = [f"storm{i}" for i in range(args.streams)]
    parts = [users[i :: args.workers] for i in range(args.workers)]
    workers = [Worker(storm_worker, part) for part in parts]
    first = Server("mercurio", command, env, folder / "first.log", args.source)
    try:
        await first.ready()
        say(f"opening {args.streams:,} streams")
        await round_trip(workers, "open", first.port, None, 1, args.timeout)
        await broadcast_marks(first.port, users)
        marked = await round_trip(workers, "wait", args.timeout)
        marks = [m["last_ids"] for m in marked]
        if sum(m["complete"] for m in marked) < args.streams:
            raise RuntimeError(f"not every stream got its mark: {marked}"[:500])
    finally:
        first.stop()  # the deploy: every stream is dropped at once
    say(f"deployed; writing a backlog of {args.backlog} per stream")
    seeded = seed_backlog(folder / "bench.db", args.backlog)
    second = Server("mercurio", command, env, folder / "second.log", args.source)
    try:
        await second.ready()
        await asyncio.sleep(1.0)
        idle = second.rss()
        peak, stop = [idle], asyncio.Event()
        sampler = asyncio.ensure_future(sample_rss(second.pid, peak, stop))
        cpu0, started = second.cpu(), time.monotonic()
        say(f"storm: {args.streams:,} resumes at once")
        for worker, after in zip(workers, marks, strict=True):
            worker.send("open", second.port, after, args.backlog, args.timeout)
        connected = [await w.reply(args.timeout + 120) for w in workers]
        answers = await round_trip(workers, "wait", args.timeout)
        wall = time.monotonic() - started
        cpu = second.cpu() - cpu0
        stop.set()
        await sampler
    finally:
        second.stop()
        for worker in workers:
            worker.stop()
    times = sorted(t - started for a in answers for t in a["times"])
    complete = sum(a["complete"] for a in answers)
    frames = sum(a["frames"] for a in answers)
    return {
        "streams": args.streams,
        "backlog": args.backlog,
        "rows_seeded": seeded,
        "connected": sum(c["connected"] for c in connected),
        "complete": complete,
        "out_of_order_or_duplicate": sum(a["bad"] for a in answers),
        "deliveries": frames,
        "idle_rss_mib": idle / 2**20,
        "peak_rss_mib": peak[0] / 2**20,
        "peak_growth_mib": (peak[0] - idle) / 2**20,
        "all_resumed_s": times[-1] if complete == args.streams else None,
        "half_resumed_s": times[len(times) // 2] if times else None,
        "wall_s": wall,
        "deliveries_per_s": frames / wall if wall else 0.0,
        "server_cpu_s": cpu,
        "server_cpu_us_per_delivery": cpu / frames * 1e6 if frames else None,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    need = args.streams + 200
    if procstat.raise_nofile() < need:
        raise SystemExit(f"the open-file limit is below the {need} this run needs")
    with tempfile.TemporaryDirectory(prefix="mercurio-storm-") as tmp:
        try:
            report = procstat.run(storm(args, Path(tmp)))
        except BaseException:
            for log in ("first.log", "second.log"):
                path = Path(tmp) / log
                if path.exists():
                    print(f"--- {log} ---\n{path.read_text()[-3000:]}", file=sys.stderr)
            raise
    report["source"] = str(args.source or "this tree")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"storm-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    for name, value in report.items():
        print(f"  {name:28} {value:,.2f}" if isinstance(value, float) else f"  {name:28} {value}")
    print(f"  written to {path}")


if __name__ == "__main__":
    main()
