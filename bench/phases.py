"""The measuring phases, run against one server (the service, the peer or the ceiling).

memory     RSS growth of the server per idle open stream;
fan-out    announcements (one notification to everyone) and broadcasts to explicit lists
           (`per_request` destinations per request, one stored row each), as a burst
           (throughput, CPU per delivery) or paced (latency at a given rate);
unicast    durable publishes from N keep-alive connections to the open streams.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from array import array
from typing import Any

from bench.client import HttpClient
from bench.loadgen import Worker, mint_tokens, publisher_worker, stream_worker
from bench.measure import CpuWindow, latency_ms
from bench.servers import HOST, Server

PUBLISHERS = 8  # connections publishing announcements (open loop)
PAD = "You have a new notification: someone commented on your post."


class Bench:
    """Streams held by the load generators, and the phases that publish to them."""

    def __init__(self, server: Server, args: argparse.Namespace) -> None:
        self.server = server
        self.args = args
        self.workers = [Worker(stream_worker, HOST, server.port) for _ in range(args.workers)]
        self.users: list[list[str]] = [[] for _ in self.workers]
        self.publisher_token = mint_tokens(["666"], publisher=True)[0]

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()

    @property
    def open_users(self) -> list[str]:
        return [u for part in self.users for u in part]

    def publisher(self) -> HttpClient:
        return HttpClient(
            HOST, self.server.port, {"authorization": f"Bearer {self.publisher_token}"}
        )

    async def open_streams(self, users: list[str]) -> dict[str, Any]:
        """Open one stream per user, spread over the stream workers."""
        parts = [users[i :: len(self.workers)] for i in range(len(self.workers))]
        started = time.monotonic()
        for worker, part in zip(self.workers, parts, strict=True):
            worker.send("open", part)
        answers = [await w.reply(600) for w in self.workers]
        for mine, part in zip(self.users, parts, strict=True):
            mine.extend(part)
        opened = sum(a["opened"] for a in answers)
        failed = sum(a["failed"] for a in answers)
        if failed:
            errors = sorted({e for a in answers for e in a["errors"]})
            print(f"  ! {failed} streams failed to open: {errors}", file=sys.stderr)
        return {"opened": opened, "failed": failed, "seconds": time.monotonic() - started}

    async def close_streams(self) -> None:
        for worker in self.workers:
            await worker.call("close")
        self.users = [[] for _ in self.workers]

    async def warm_up(self) -> None:
        """Touch every code path once so imports and caches are not counted as stream cost."""
        await self.open_streams([f"warm{i}" for i in range(20)])
        for kind in ("announce", "broadcast"):
            result = await self.fanout(kind, publishes=2, interval=0.0)
            if result["publish_errors"] or result["deliveries"] < result["deliveries_expected"]:
                raise RuntimeError(
                    f"{self.server.name}: warm-up {kind} failed: {result['publish_errors']}, "
                    f"{result['deliveries']} of {result['deliveries_expected']} deliveries; "
                    f"see {self.server.log}"
                )
        await self.close_streams()
        await asyncio.sleep(0.5)

    async def memory(self, count: int, baseline: int) -> dict[str, Any]:
        have = len(self.open_users)
        opened = await self.open_streams([f"s{i}" for i in range(have, count)])
        await asyncio.sleep(1.0)
        rss = self.server.rss()
        streams = len(self.open_users)
        return {
            "streams": streams,
            "rss_mib": rss / 2**20,
            "rss_delta_mib": (rss - baseline) / 2**20,
            "kib_per_stream": (rss - baseline) / 1024 / streams,
            "open_seconds": opened["seconds"],
            "opened": opened["opened"],
            "failed": opened["failed"],
        }

    def destinations(self, kind: str, publishes: int) -> list[list[str] | None]:
        """Each publish's destination list (None: an announcement to everyone).

        Broadcast lists walk round the open streams' users, `per_request` at a time, so every
        stream gets its share and no list names a user twice.
        """
        if kind == "announce":
            return [None] * publishes
        users = self.open_users
        size = min(self.args.per_request, len(users))
        return [[users[(i * size + j) % len(users)] for j in range(size)] for i in range(publishes)]

    async def fanout(self, kind: str, *, publishes: int, interval: float) -> dict[str, Any]:
        """Publish `publishes` announcements, or broadcasts to lists of the open streams' users.

        interval 0 is a burst (back-to-back publishes: throughput); otherwise publishes are
        paced every `interval` seconds (latency at a given rate). Broadcasts go out on
        `--broadcast-connections` connections (2: one request can be stored while the one
        before fans out), so their latency is a request's own, not the queue of a whole burst.
        """
        owner = {u: i for i, part in enumerate(self.users) for u in part}
        counts = [len(part) for part in self.users]
        lists = self.destinations(kind, publishes)

        def per_worker(dests: list[str] | None) -> list[int]:
            if dests is None:
                return counts
            mine = [0] * len(self.workers)
            for user in dests:
                mine[owner[user]] += 1
            return mine

        # Frames due at each stream worker from each publish, if it is answered 200.
        due = [per_worker(dests) for dests in lists]
        for worker in self.workers:
            await worker.call("reset")
        window = CpuWindow(self.server, list(self.workers))
        timeout = 30 + sum(map(sum, due)) * 300e-6
        pool: asyncio.Queue[HttpClient] = asyncio.Queue()
        connections = PUBLISHERS if kind == "announce" else self.args.broadcast_connections
        clients = [self.publisher() for _ in range(min(connections, publishes))]
        for client in clients:
            await client.request("GET", "/")
            pool.put_nowait(client)
        path = "/api/events/announce" if kind == "announce" else "/api/events/broadcast"
        publish_latencies = array("d")
        errors: dict[int, int] = {}
        answered = [False] * publishes

        async def publish(i: int, at: float) -> None:
            # Open loop: each publish starts on time (or as soon as a connection is free),
            # whether or not the ones before it were answered.
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            client = await pool.get()
            try:
                t = time.monotonic()
                body: dict[str, Any] = {"sourceID": "bench", "data": {"t": t, "pad": PAD}}
                if lists[i] is not None:
                    body["destinations"] = lists[i]
                status, _ = await client.request("POST", path, body)
                publish_latencies.append(time.monotonic() - t)
                if status == 200:
                    answered[i] = True
                else:
                    errors[status] = errors.get(status, 0) + 1
            finally:
                pool.put_nowait(client)

        window.start()
        first = time.monotonic()
        await asyncio.gather(*(publish(i, first + i * interval) for i in range(publishes)))
        published = time.monotonic()
        # Stream workers count every stamped frame since the reset; wait for the ones due.
        expected = [
            sum(d[w] for d, ok in zip(due, answered, strict=True) if ok)
            for w in range(len(self.workers))
        ]
        for worker, count in zip(self.workers, expected, strict=True):
            worker.send("wait", count, timeout)
        answers = [await w.reply(timeout + 30) for w in self.workers]
        cpu = window.stop()
        for client in clients:
            await client.close()
        delivered = sum(a["frames"] for a in answers)
        last = max((a["last"] for a in answers if a["frames"]), default=first)
        elapsed = max(last - first, 1e-9)
        n = sum(counts)
        result = {
            "kind": kind,
            "mode": "paced" if interval else "burst",
            "streams": n,
            "publishes": publishes,
            "destinations_per_publish": n if kind == "announce" else len(lists[0] or []),
            "connections": len(clients),
            "publish_errors": errors,
            "offered_per_s": n / interval if interval else None,
            "publish_seconds": published - first,
            "deliveries_expected": sum(expected),
            "deliveries": delivered,
            "seconds": elapsed,
            "deliveries_per_s": delivered / elapsed,
            "latency": latency_ms([a["latencies"] for a in answers]),
            "publish_latency": latency_ms(publish_latencies),
            "streams_lost": sum(a["lost"] for a in answers),
            **cpu,
        }
        result["server_cpu_us_per_delivery"] = cpu["server_cpu_s"] / max(delivered, 1) * 1e6
        result["loadgen_cpu_us_per_delivery"] = cpu["loadgen_cpu_s"] / max(delivered, 1) * 1e6
        if delivered < sum(expected):
            print(
                f"  ! {self.server.name} {kind}: {delivered} of {sum(expected)} deliveries arrived",
                file=sys.stderr,
            )
        return result

    async def unicast(self, concurrency: int, seconds: float) -> dict[str, Any]:
        """Durable unicast publishes from `concurrency` connections, to the open streams."""
        users = self.open_users
        owner = {u: i for i, part in enumerate(self.users) for u in part}
        publisher = Worker(publisher_worker, HOST, self.server.port)
        try:
            for worker in self.workers:
                await worker.call("reset")
            window = CpuWindow(self.server, [*self.workers, publisher])
            window.start()
            answer = await publisher.call(
                "run", users, concurrency, seconds, PAD, timeout=seconds + 120
            )
            ok: int = answer["ok"]
            expected = [0] * len(self.workers)
            for user, count in zip(users, answer["ok_by_user"], strict=True):
                expected[owner[user]] += count
            for worker, count in zip(self.workers, expected, strict=True):
                worker.send("wait", count, 30)
            answers = [await w.reply(60) for w in self.workers]
            cpu = window.stop()
        finally:
            publisher.stop()
        delivered = sum(a["frames"] for a in answers)
        elapsed = answer["ended"] - answer["started"]
        result = {
            "concurrency": concurrency,
            "streams": len(users),
            "publishes": ok,
            "publish_errors": answer["errors"],
            "seconds": elapsed,
            "publishes_per_s": ok / elapsed,
            "publish_latency": latency_ms(answer["latencies"]),
            "deliveries": delivered,
            "delivery_latency": latency_ms([a["latencies"] for a in answers]),
            "publisher_cpu_s": answer["cpu"],
            "publisher_core_share": answer["cpu"] / elapsed,
            **cpu,
        }
        result["server_cpu_us_per_publish"] = cpu["server_cpu_s"] / max(ok, 1) * 1e6
        return result
