"""Soak: many open streams for minutes, with churn and publishes; does anything leak?

    .venv/bin/python -m bench.soak                       # 10,000 streams, 10 minutes
    .venv/bin/python -m bench.soak --streams 2000 --minutes 1

Not run in CI. Every `--sample` seconds it reads the server's RSS and open file descriptors
(/proc/<pid>/fd) and the hub's open stream count (/metrics), next to the sockets this side
holds. It reports the RSS slope after the ramp (MiB per minute: a leak shows as a steady
climb), the fd count, and whether the hub's count matches the sockets held once churn stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import proc as procstat
from bench.client import HttpClient, SSEReader, Tally, stream_request
from bench.loadgen import mint_tokens
from bench.servers import HOST, Server, mercurio_env

OPEN_STREAMS = re.compile(rb"^mercurio_open_streams (\d+(?:\.\d+)?)$", re.M)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--churn", type=float, default=100.0, help="reconnects per second")
    parser.add_argument("--publishes", type=float, default=50.0, help="unicasts per second")
    parser.add_argument("--announce-every", type=float, default=30.0, help="seconds")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    return parser.parse_args(argv)


class Soak:
    """The streams this side holds, and the churn and publishes that keep them busy."""

    def __init__(self, args: argparse.Namespace, server: Server) -> None:
        self.args = args
        self.server = server
        self.tally = Tally()
        users = [f"soak{i}" for i in range(args.streams * 2)]
        self.tokens = dict(zip(users, mint_tokens(users), strict=True))
        self.idle = list(users)
        random.shuffle(self.idle)
        self.open: dict[str, SSEReader] = {}
        self.failed = 0
        self.closed_here = 0

    async def connect(self) -> None:
        """Open one stream for a user not streaming now."""
        user = self.idle.pop()
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[int] = loop.create_future()
        request = stream_request(HOST, self.server.port, user, self.tokens[user])
        try:
            _, reader = await loop.create_connection(
                lambda: SSEReader(self.tally, request, ready), HOST, self.server.port
            )
            status = await asyncio.wait_for(ready, 30)
        except (OSError, TimeoutError):
            status = 0
        if status == 200:
            self.open[user] = reader
        else:
            self.failed += 1
            self.idle.insert(0, user)

    def disconnect(self) -> None:
        user = random.choice(list(self.open))
        self.open.pop(user).close()
        self.closed_here += 1
        self.idle.insert(0, user)

    async def ramp(self) -> None:
        todo = self.args.streams
        while todo > 0:
            batch = min(200, todo)
            await asyncio.gather(*(self.connect() for _ in range(batch)))
            todo -= batch

    async def churn(self, until: float) -> None:
        pace = 1 / self.args.churn if self.args.churn > 0 else None
        pending: set[asyncio.Task[None]] = set()
        while pace is not None and time.monotonic() < until:
            if self.open:
                self.disconnect()
            task = asyncio.create_task(self.connect())
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(pace)
        await asyncio.gather(*pending)

    async def publish(self, until: float) -> None:
        api = HttpClient(HOST, self.server.port, {"authorization": f"Bearer {publisher()}"})
        next_announce = time.monotonic() + self.args.announce_every
        pace = 1 / self.args.publishes if self.args.publishes > 0 else 1.0
        try:
            while time.monotonic() < until:
                now = time.monotonic()
                body = {"sourceID": "soak", "data": {"t": now}}
                if now >= next_announce:
                    await api.request("POST", "/api/events/announce", body)
                    next_announce = now + self.args.announce_every
                elif self.args.publishes > 0 and self.open:
                    to = random.choice(list(self.open))
                    await api.request("POST", "/api/events/unicast", {**body, "destinationID": to})
                await asyncio.sleep(pace)
        finally:
            await api.close()

    async def sample(self, started: float) -> dict[str, Any]:
        pid = self.server.pid
        return {
            "t": round(time.monotonic() - started, 1),
            "rss_mib": round(procstat.rss_bytes(pid) / 2**20, 2),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "hub_streams": await hub_streams(self.server.port),
            "held": len(self.open),
        }


def publisher() -> str:
    return mint_tokens(["666"], publisher=True)[0]


async def hub_streams(port: int) -> int:
    client = HttpClient(HOST, port)
    try:
        status, body = await client.request("GET", "/metrics")
    finally:
        await client.close()
    found = OPEN_STREAMS.search(body) if status == 200 else None
    return int(float(found.group(1))) if found else -1


def slope_mib_per_minute(samples: list[dict[str, Any]]) -> float:
    """Least-squares slope of RSS over time."""
    if len(samples) < 2:
        return 0.0
    ts = [s["t"] / 60 for s in samples]
    ys = [s["rss_mib"] for s in samples]
    mt, my = sum(ts) / len(ts), sum(ys) / len(ys)
    var = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var if var else 0.0


async def soak(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    env = {**mercurio_env(folder, args.streams), "MERCURIO_STREAM_BUFFER": "256"}
    command = [sys.executable, "-m", "mercurio", "serve"]
    server = Server("mercurio", command, env, folder / "server.log")
    try:
        await server.ready()
        run = Soak(args, server)
        started = time.monotonic()
        await run.ramp()
        after_ramp = await run.sample(started)
        samples = [after_ramp]
        until = time.monotonic() + args.minutes * 60
        load = asyncio.gather(run.churn(until), run.publish(until))
        while time.monotonic() < until:
            await asyncio.sleep(min(args.sample, max(0.0, until - time.monotonic())))
            samples.append(await run.sample(started))
            print(json.dumps(samples[-1]), flush=True)
        await load
        await asyncio.sleep(2)  # let the last closes reach the server
        settled = await run.sample(started)
        closed_by_server = run.tally.lost - run.closed_here
        for reader in run.open.values():
            reader.close()
        run.open.clear()
        await asyncio.sleep(3)
        closed = await run.sample(started)
        return {
            "streams": args.streams,
            "minutes": args.minutes,
            "rss_slope_mib_per_min": round(slope_mib_per_minute(samples), 3),
            # The first pass over the user pool fills per-user caches; a leak keeps climbing.
            "rss_slope_second_half": round(slope_mib_per_minute(samples[len(samples) // 2 :]), 3),
            "after_ramp": after_ramp,
            "settled": settled,
            "all_closed": closed,
            "frames_received": run.tally.frames,
            "connect_failures": run.failed,
            "closed_by_server": closed_by_server,
        }
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    procstat.raise_nofile()
    with tempfile.TemporaryDirectory(prefix="mercurio-soak-") as folder:
        report = procstat.run(soak(args, Path(folder)))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
