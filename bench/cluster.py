"""Cluster benchmark: deliveries/s and publish-to-receive latency across 3 nodes.

    .venv/bin/python -m bench.cluster                 (~1 minute)
    .venv/bin/python -m bench.cluster --streams 300 --notifications 2000

For each setup, on a fresh PostgreSQL database: one node alone (MERCURIO_MQ=off, the
reference), then three nodes fanned out by RabbitMQ, then by Redis. Streams (one user each)
are spread round-robin over the nodes; publishers (keep-alive connections) too, so most
notifications cross the broker. Three workloads:

- paced: `--paced` unicasts one at a time, from node 0: the latency of the hop itself;
- unicast: `--notifications` unicasts, each to the next user, on `--concurrency` connections;
- announce: `--announcements` announcements, each reaching every open stream.

Figures: deliveries/s = frames received / (last receive - first publish); latency = receive
time - the send time the publisher put in the notification's data (one clock, one process);
CPU seconds of each node, of the broker's and PostgreSQL's processes (read from /proc), and the
nodes' cluster counters (broker messages, store reads), to show where the time goes. Prints a
table and writes JSON to bench/results/cluster-<UTC timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from bench.client import HttpClient, SSEReader, Tally, stream_request
from bench.loadgen import mint_tokens
from bench.proc import cpu_seconds, free_port, raise_nofile

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PG_ADMIN = os.environ.get("MERCURIO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BROKERS = {
    "rabbitmq": os.environ.get("MERCURIO_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/"),
    "redis": os.environ.get("MERCURIO_TEST_REDIS", "redis://127.0.0.1:6379/0"),
}
SERVICE_PROCESSES: dict[str, tuple[str, ...]] = {
    "rabbitmq": ("beam.smp",),
    "redis": ("redis-server",),
    "postgres": ("postgres",),
}


class NodeProcess:
    """`python -m mercurio serve` on a free loopback port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mercurio", "serve", "--port", str(self.port)],
                env={**os.environ, **env, "MERCURIO_HTTP_HOST": "127.0.0.1"},
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def ready(self) -> None:
        client = HttpClient("127.0.0.1", self.port)
        deadline = time.monotonic() + 60
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"node exited: {self.log.read_text()[-2000:]}")
                try:
                    status, _ = await client.request("GET", "/readyz")
                    if status == 200:
                        return
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node not ready in 60 s: {self.log.read_text()[-2000:]}")
                await asyncio.sleep(0.1)
        finally:
            await client.close()

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def cluster_stats(self) -> dict[str, Any]:
        """The node's last `cluster.stats` log line (written when it stops)."""
        found: dict[str, Any] = {}
        for line in self.log.read_text().splitlines():
            if '"cluster.stats"' in line:
                found = json.loads(line)
        return {
            k: v for k, v in found.items() if k not in ("event", "level", "logger", "timestamp")
        }


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling a node into collapsed stacks (one line per stack with its count)."""
    spy = str(Path(sys.executable).parent / "py-spy")
    command = [spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw"]
    return subprocess.Popen(
        [*command, "--nonblocking", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def service_cpu(names: tuple[str, ...]) -> float:
    """CPU seconds of every process with one of these names (a shared service, read-only)."""
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm") as f:
                if f.read().strip() in names:
                    total += cpu_seconds(int(entry.name))
        except OSError:
            continue
    return total


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def phase(
    name: str,
    nodes: list[NodeProcess],
    publishers: list[HttpClient],
    tally: Tally,
    path: str,
    bodies: list[dict[str, Any]],
    expected: int,
    services: dict[str, tuple[str, ...]],
) -> dict[str, Any]:
    """Publish bodies (stamped at send time) and wait for `expected` frames."""
    loop = asyncio.get_running_loop()
    tally.reset()
    tally.target = expected
    tally.waiter = loop.create_future()
    cpu_nodes = [n.cpu() for n in nodes]
    cpu_services = {k: service_cpu(v) for k, v in services.items()}
    jobs = iter(bodies)
    answers: list[float] = []

    async def work(client: HttpClient) -> None:
        for body in jobs:
            body["data"] = {"t": time.monotonic()}
            sent = time.monotonic()
            status, text = await client.request("POST", path, body)
            if status != 200:
                raise RuntimeError(f"publish answered {status}: {text[:200]!r}")
            answers.append(time.monotonic() - sent)

    started = time.monotonic()
    await asyncio.gather(*(work(c) for c in publishers))
    published = time.monotonic()
    try:
        await asyncio.wait_for(tally.waiter, 60)
    except TimeoutError:
        print(f"  {name}: only {tally.frames} of {expected} frames arrived", file=sys.stderr)
    elapsed = max(tally.last, published) - started
    latencies = list(tally.latencies)
    return {
        "workload": name,
        "notifications": len(bodies),
        "deliveries": tally.frames,
        "expected": expected,
        "seconds": round(elapsed, 3),
        "publishes_per_s": round(len(bodies) / (published - started), 1),
        "deliveries_per_s": round(tally.frames / elapsed, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50) * 1000, 2),
            "p99": round(percentile(latencies, 0.99) * 1000, 2),
            "max": round(max(latencies, default=float("nan")) * 1000, 2),
        },
        "publish_answer_ms_p50": round(percentile(answers, 0.5) * 1000, 2),
        "cpu_s": {
            **{
                f"node{i}": round(n.cpu() - c, 2)
                for i, (n, c) in enumerate(zip(nodes, cpu_nodes, strict=True))
            },
            **{k: round(service_cpu(v) - cpu_services[k], 2) for k, v in services.items()},
        },
    }


async def run_setup(
    label: str, broker: str | None, args: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    database = f"mercurio_bench_{uuid.uuid4().hex[:8]}"
    await admin(f'CREATE DATABASE "{database}"')
    base = PG_ADMIN.rsplit("/", 1)[0]
    count = 3 if broker else 1
    env = {
        "MERCURIO_ENV": "test",
        "MERCURIO_DB_CONN": f"{base}/{database}",
        "MERCURIO_SSE_HEARTBEAT": "60",
        "MERCURIO_STREAM_BUFFER": "10000",
        "MERCURIO_PUBLISH_RATE": "0",
        "MERCURIO_LOG_FORMAT": "json",
        "MERCURIO_LOG_LEVEL": "info",
    }
    if broker:
        env |= {
            "MERCURIO_MQ": "on",
            "MERCURIO_MQ_CONN": BROKERS[broker],
            "MERCURIO_MQ_TOPIC": f"bench-{uuid.uuid4().hex[:8]}",
        }
    nodes: list[NodeProcess] = []
    readers: list[SSEReader] = []
    publishers: list[HttpClient] = []
    try:
        # One node first (it migrates the new database), then the others together.
        nodes.append(NodeProcess({**env, "MERCURIO_NID": "node0"}, logs / f"{label}-node0.log"))
        await nodes[0].ready()
        for i in range(1, count):
            nodes.append(
                NodeProcess({**env, "MERCURIO_NID": f"node{i}"}, logs / f"{label}-node{i}.log")
            )
        await asyncio.gather(*(n.ready() for n in nodes[1:]))

        users = [f"b{uuid.uuid4().hex[:10]}" for _ in range(args.streams)]
        tokens = mint_tokens(users)
        tally = Tally()
        loop = asyncio.get_running_loop()
        for i, (user, token) in enumerate(zip(users, tokens, strict=True)):
            node = nodes[i % count]
            ready: asyncio.Future[int] = loop.create_future()
            request = stream_request("127.0.0.1", node.port, user, token)
            _, reader = await loop.create_connection(
                functools.partial(SSEReader, tally, request, ready), "127.0.0.1", node.port
            )
            readers.append(reader)
            if await ready != 200:
                raise RuntimeError("stream refused")
        publisher_token = mint_tokens(["666"], publisher=True)[0]
        auth = {"authorization": f"Bearer {publisher_token}"}
        publishers = [
            HttpClient("127.0.0.1", nodes[i % count].port, auth) for i in range(args.concurrency)
        ]
        services: dict[str, tuple[str, ...]] = {"postgres": SERVICE_PROCESSES["postgres"]}
        if broker:
            services[broker] = SERVICE_PROCESSES[broker]

        def unicasts(n: int) -> list[dict[str, Any]]:
            return [{"sourceID": "bench", "destinationID": users[i % len(users)]} for i in range(n)]

        # Warm up: connections, caches, the JIT-less interpreter's first calls.
        await phase(
            "warm-up", nodes, publishers, tally, "/api/events/unicast", unicasts(100), 100, services
        )
        spy = None
        if args.profile:
            # Sample the last node (a receiver for two thirds of the traffic) during the run.
            spy = start_profiler(nodes[-1].proc.pid, logs / f"{label}-node{count - 1}.pyspy.txt")
            await asyncio.sleep(1)
        results = [
            await phase(
                "paced",
                nodes,
                publishers[:1],
                tally,
                "/api/events/unicast",
                unicasts(args.paced),
                args.paced,
                services,
            ),
            await phase(
                "unicast",
                nodes,
                publishers,
                tally,
                "/api/events/unicast",
                unicasts(args.notifications),
                args.notifications,
                services,
            ),
            await phase(
                "announce",
                nodes,
                publishers[: args.announce_concurrency],
                tally,
                "/api/events/announce",
                [{"sourceID": "bench"} for _ in range(args.announcements)],
                args.announcements * len(users),
                services,
            ),
        ]
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
    finally:
        for client in publishers:
            await client.close()
        for reader in readers:
            reader.close()
        for node in nodes:
            node.stop()
        await admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return {
        "setup": label,
        "nodes": count,
        "broker": broker,
        "streams": args.streams,
        "results": results,
        "cluster_stats": [n.cluster_stats() for n in nodes] if broker else [],
    }


def table(runs: list[dict[str, Any]]) -> str:
    head = (
        f"{'setup':<22} {'workload':<9} {'notes':>6} {'deliv':>6} {'deliv/s':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'nodes CPU s':>11} {'broker CPU s':>12} {'pg CPU s':>8}"
    )
    lines = [head, "-" * len(head)]
    for run in runs:
        for r in run["results"]:
            cpu = r["cpu_s"]
            nodes_cpu = sum(v for k, v in cpu.items() if k.startswith("node"))
            broker_cpu = cpu.get(run["broker"] or "", float("nan"))
            lines.append(
                f"{run['setup']:<22} {r['workload']:<9} {r['notifications']:>6} "
                f"{r['deliveries']:>6} {r['deliveries_per_s']:>9.0f} "
                f"{r['latency_ms']['p50']:>8.2f} "
                f"{r['latency_ms']['p99']:>8.2f} {nodes_cpu:>11.2f} {broker_cpu:>12.2f} "
                f"{cpu.get('postgres', float('nan')):>8.2f}"
            )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=30)
    parser.add_argument("--paced", type=int, default=200, help="unicasts one at a time")
    parser.add_argument("--announcements", type=int, default=20)
    parser.add_argument("--announce-concurrency", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="py-spy one node (collapsed)")
    parser.add_argument("--only", choices=["single", "rabbitmq", "redis"], action="append")
    args = parser.parse_args()
    raise_nofile()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    logs = RESULTS / f"cluster-{stamp}-logs"
    logs.mkdir()
    setups = [
        ("1 node (MQ off)", None),
        ("3 nodes + RabbitMQ", "rabbitmq"),
        ("3 nodes + Redis", "redis"),
    ]
    chosen = args.only or ["single", "rabbitmq", "redis"]
    runs = []
    for label, broker in setups:
        if (broker or "single") in chosen:
            print(f"running {label}…", file=sys.stderr)
            runs.append(await run_setup((broker or "single"), broker, args, logs))
            runs[-1]["setup"] = label
    report = table(runs)
    print(report)
    out = RESULTS / f"cluster-{stamp}.json"
    out.write_text(
        json.dumps(
            {"when": stamp, "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "runs": runs},
            indent=2,
        )
    )
    print(f"\nwritten {out.relative_to(ROOT)}; node logs in {logs.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
