"""Run the benchmark: `python -m bench.run` (about 4 minutes), `--quick` (about 1 minute).

For the service (`python -m mercurio serve` in its own process, a fresh SQLite file, durable
writes) and then for the ceiling (bench/ceiling.py, a bare asyncio server), it measures:

  memory   RSS growth of the server per idle open stream, at each stream count;
  fan-out  deliveries per second, server CPU per delivery, and publish-to-receive latency for
           announcements (one notification to everyone) and broadcasts (one per destination),
           as a burst (throughput) and paced at the target rate (latency);
  unicast  durable publishes per second and publish/delivery latency at each concurrency.

The load generators are separate processes (bench/loadgen.py) reading raw sockets; their CPU
is reported next to the server's. A table is printed and the figures are written as JSON to
bench/results/<timestamp>.json (see bench/README.md for every field).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import proc as procstat
from bench.client import HttpClient
from bench.loadgen import Worker, mint_tokens, publisher_worker, stream_worker

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
HOST = "127.0.0.1"
PUBLISHERS = 8  # connections publishing fan-out events (open loop)
PAD = "You have a new notification: someone commented on your post."

TARGETS = {
    "kib_per_stream": 20.0,
    "fanout_cpu_us": 10.0,
    "fanout_per_s": 50_000.0,
    "fanout_p99_ms": 250.0,
    "unicast_per_s": 4_000.0,
    "unicast_delivery_p99_ms": 25.0,
}


# -- plan -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="1,000 streams, short phases (~1 min)")
    parser.add_argument(
        "--tiny", action="store_true", help="50 streams, a few publishes (smoke test, ~15 s)"
    )
    parser.add_argument("--streams", help="comma-separated stream counts (default 1000,10000)")
    parser.add_argument("--concurrency", help="unicast concurrencies (default 1,16,64)")
    parser.add_argument("--unicast-seconds", type=float, help="seconds per unicast level")
    parser.add_argument("--paced-seconds", type=float, help="seconds of paced fan-out")
    parser.add_argument("--burst-deliveries", type=int, help="deliveries per burst phase")
    parser.add_argument("--workers", type=int, default=2, help="stream-reading processes")
    parser.add_argument(
        "--tracemalloc",
        type=int,
        help="also open this many streams on a traced server and show where their memory goes",
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the bare-server ceiling")
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated phases to leave out: fanout, unicast (memory always runs)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        help="run the service from this source tree instead (an A/B copy); default: this repo",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after measuring, repeat the largest fan-out and the top unicast level under "
        "py-spy and write collapsed stacks + a summary to bench/results/",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)
    if args.tiny:
        defaults = dict(
            streams=[50],
            concurrency=[1, 4],
            unicast_seconds=1.0,
            paced_seconds=1.0,
            burst_deliveries=500,
            tracemalloc=0,
            unicast_streams=10,
        )
    elif args.quick:
        defaults = dict(
            streams=[1000],
            concurrency=[1, 16, 64],
            unicast_seconds=3.0,
            paced_seconds=3.0,
            burst_deliveries=30_000,
            tracemalloc=0,
            unicast_streams=100,
        )
    else:
        defaults = dict(
            streams=[1000, 10000],
            concurrency=[1, 16, 64],
            unicast_seconds=5.0,
            paced_seconds=4.0,
            burst_deliveries=100_000,
            tracemalloc=1000,
            unicast_streams=100,
        )
    args.streams = (
        [int(x) for x in args.streams.split(",")] if args.streams else defaults["streams"]
    )
    args.concurrency = (
        [int(x) for x in args.concurrency.split(",")]
        if args.concurrency
        else defaults["concurrency"]
    )
    for name in ("unicast_seconds", "paced_seconds", "burst_deliveries", "tracemalloc"):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    args.unicast_streams = defaults["unicast_streams"]
    args.skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    unknown = args.skip - {"fanout", "unicast"}
    if unknown:
        parser.error(f"--skip: unknown phases {sorted(unknown)}")
    if args.source is not None:
        args.source = args.source.resolve()
        if not (args.source / "mercurio" / "__init__.py").is_file():
            parser.error(f"--source: no mercurio package in {args.source}")
    args.streams.sort()
    return args


# -- servers ----------------------------------------------------------------------------------


class Server:
    """A server under test in its own process."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        log: Path,
        source: Path | None = None,
    ) -> None:
        self.name = name
        self.port = procstat.free_port()
        self.log = log
        command = [*command, "--host", HOST, "--port", str(self.port)]
        with open(log, "ab") as out:
            env = {**os.environ, **env}
            if source is not None:
                # Put the A/B copy first on the path: it shadows the editable install.
                env["PYTHONPATH"] = os.pathsep.join([str(source), str(ROOT)])
            self.proc = subprocess.Popen(
                command, cwd=source or ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return procstat.cpu_seconds(self.pid)

    def rss(self) -> int:
        return procstat.rss_bytes(self.pid)

    async def ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            client = HttpClient(HOST, self.port)
            try:
                status, _ = await client.request("GET", "/")
                if status == 200:
                    return
            except OSError:
                pass
            finally:
                await client.close()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start in 60 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def mercurio_env(folder: Path, max_streams: int) -> dict[str, str]:
    return {
        "MERCURIO_ENV": "test",
        "MERCURIO_ENV_DIR": str(folder),
        "MERCURIO_DB_CONN": f"sqlite:///{folder}/bench.db",
        "MERCURIO_SSE_HEARTBEAT": "60",
        "MERCURIO_STREAM_BUFFER": "10000",
        "MERCURIO_MAX_DESTINATIONS": str(max(10_000, max_streams)),
        "MERCURIO_MAX_BODY_BYTES": str(16 * 1024 * 1024),
        # Per-stream open/close lines at info level would be measured as stream cost.
        "MERCURIO_LOG_LEVEL": "warning",
        "MERCURIO_LOG_FORMAT": "json",
        # The abuse limit (1,000 publishes/s by default) would cap the unicast figures.
        "MERCURIO_PUBLISH_RATE": "0",
    }


# -- figures ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    return values[min(len(values) - 1, int(q * len(values)))]


def latency_ms(samples: list[array[float]] | array[float]) -> dict[str, float]:
    if isinstance(samples, array):
        values = sorted(samples)
    else:
        values = sorted(x for part in samples for x in part)
    return {
        "p50_ms": percentile(values, 0.50) * 1000,
        "p99_ms": percentile(values, 0.99) * 1000,
        "max_ms": (values[-1] if values else math.nan) * 1000,
        "samples": len(values),
    }


class CpuWindow:
    """CPU seconds used by the server and by the load generators between start() and stop()."""

    def __init__(self, server: Server, loadgen: list[Worker]) -> None:
        self.server = server
        self.loadgen = loadgen

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.server0 = self.server.cpu()
        self.loadgen0 = sum(w.cpu() for w in self.loadgen) + procstat.cpu_seconds()
        self.machine0 = procstat.machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        server = self.server.cpu() - self.server0
        loadgen = sum(w.cpu() for w in self.loadgen) + procstat.cpu_seconds() - self.loadgen0
        others = procstat.machine_busy_seconds() - self.machine0 - server - loadgen
        return {
            # Cores' worth of CPU that other processes on the machine (not this benchmark)
            # used meanwhile: wall-clock figures are only as good as this is small.
            "others_core_share": max(0.0, others / wall) if wall else math.nan,
            "loadavg_1m": os.getloadavg()[0],
            "wall_s": wall,
            "server_cpu_s": server,
            "loadgen_cpu_s": loadgen,
            "server_core_share": server / wall if wall else math.nan,
            "loadgen_core_share": loadgen / wall if wall else math.nan,
        }


# -- phases -----------------------------------------------------------------------------------


class Bench:
    """The phases, run against one server (the service or the ceiling)."""

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

    async def fanout(self, kind: str, *, publishes: int, interval: float) -> dict[str, Any]:
        """Publish `publishes` announcements (or broadcasts to every open stream's user).

        interval 0 is a burst (back-to-back publishes: throughput); otherwise publishes are
        paced every `interval` seconds (latency at a given rate).
        """
        counts = [len(part) for part in self.users]
        n = sum(counts)
        for worker in self.workers:
            await worker.call("reset")
        window = CpuWindow(self.server, self.workers)
        deliveries_expected = n * publishes
        timeout = 30 + deliveries_expected * 300e-6
        pool: asyncio.Queue[HttpClient] = asyncio.Queue()
        clients = [self.publisher() for _ in range(min(PUBLISHERS, publishes))]
        for client in clients:
            await client.request("GET", "/")
            pool.put_nowait(client)
        path = "/api/events/announce" if kind == "announce" else "/api/events/broadcast"
        destinations = self.open_users
        publish_latencies = array("d")
        errors: dict[int, int] = {}

        async def publish(at: float) -> None:
            # Open loop: each publish starts on time (or as soon as a connection is free),
            # whether or not the ones before it were answered.
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            client = await pool.get()
            try:
                t = time.monotonic()
                body: dict[str, Any] = {"sourceID": "bench", "data": {"t": t, "pad": PAD}}
                if kind == "broadcast":
                    body["destinations"] = destinations
                status, _ = await client.request("POST", path, body)
                publish_latencies.append(time.monotonic() - t)
                if status != 200:
                    errors[status] = errors.get(status, 0) + 1
            finally:
                pool.put_nowait(client)

        window.start()
        first = time.monotonic()
        await asyncio.gather(*(publish(first + i * interval) for i in range(publishes)))
        published = time.monotonic()
        # Stream workers count every stamped frame since the reset; wait for the ones due.
        ok = publishes - sum(errors.values())
        deliveries_expected = n * ok
        for worker, count in zip(self.workers, counts, strict=True):
            worker.send("wait", count * ok, timeout)
        answers = [await w.reply(timeout + 30) for w in self.workers]
        cpu = window.stop()
        for client in clients:
            await client.close()
        delivered = sum(a["frames"] for a in answers)
        last = max((a["last"] for a in answers if a["frames"]), default=first)
        elapsed = max(last - first, 1e-9)
        result = {
            "kind": kind,
            "mode": "paced" if interval else "burst",
            "streams": n,
            "publishes": publishes,
            "publish_errors": errors,
            "offered_per_s": n / interval if interval else None,
            "publish_seconds": published - first,
            "deliveries_expected": deliveries_expected,
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
        if delivered < deliveries_expected:
            print(
                f"  ! {kind}: {delivered} of {deliveries_expected} deliveries arrived",
                file=sys.stderr,
            )
        return result

    async def unicast(self, concurrency: int, seconds: float) -> dict[str, Any]:
        """Durable unicast publishes from `concurrency` connections, to open streams."""
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


async def bench_server(
    server: Server, args: argparse.Namespace, label: str, profile_dir: Path | None
) -> dict[str, Any]:
    """Every phase against one server; the figures as a dict."""
    await server.ready()
    bench = Bench(server, args)
    out: dict[str, Any] = {"memory": [], "fanout": [], "unicast": [], "pid": server.pid}
    try:
        await bench.warm_up()
        baseline = server.rss()
        out["baseline_rss_mib"] = baseline / 2**20
        for count in args.streams:
            memory = await bench.memory(count, baseline)
            out["memory"].append(memory)
            say(
                f"{label}: {memory['streams']} streams open, "
                f"{memory['kib_per_stream']:.1f} KiB each"
            )
            n = memory["streams"]
            burst = max(3, args.burst_deliveries // n)
            # Paced at the target delivery rate (at most 100 publishes a second).
            interval = max(n / TARGETS["fanout_per_s"], 0.01)
            paced = max(5, int(args.paced_seconds / interval))
            phases = (
                ("announce", burst, 0.0),
                ("announce", paced, interval),
                ("broadcast", max(2, burst // 2), 0.0),
            )
            for kind, publishes, every in () if "fanout" in args.skip else phases:
                result = await bench.fanout(kind, publishes=publishes, interval=every)
                out["fanout"].append(result)
                say(
                    f"{label}: {kind} {result['mode']} x{publishes} to {n}: "
                    f"{result['deliveries_per_s']:,.0f}/s, "
                    f"{result['server_cpu_us_per_delivery']:.1f} us CPU, "
                    f"p99 {result['latency']['p99_ms']:.0f} ms"
                )
        if profile_dir is not None and "fanout" not in args.skip:
            n = len(bench.open_users)
            out["profile_fanout"] = await profiled(
                server,
                profile_dir / f"{label}-fanout-{n}",
                bench.fanout("announce", publishes=max(3, args.burst_deliveries // n), interval=0),
            )
        await bench.close_streams()
        await bench.open_streams([f"u{i}" for i in range(args.unicast_streams)])
        for concurrency in [] if "unicast" in args.skip else args.concurrency:
            result = await bench.unicast(concurrency, args.unicast_seconds)
            out["unicast"].append(result)
            say(
                f"{label}: unicast c={concurrency}: {result['publishes_per_s']:,.0f}/s, "
                f"delivery p99 {result['delivery_latency']['p99_ms']:.1f} ms"
            )
        if profile_dir is not None and "unicast" not in args.skip:
            top = max(args.concurrency)
            out["profile_unicast"] = await profiled(
                server,
                profile_dir / f"{label}-unicast-c{top}",
                bench.unicast(top, args.unicast_seconds),
            )
        await bench.close_streams()
    finally:
        bench.close()
    return out


async def profiled(server: Server, stem: Path, phase: Any) -> dict[str, Any]:
    """Run a phase while py-spy samples the server: collapsed stacks, a flame graph, a summary.

    BENCH_PYSPY_ARGS adds flags to py-spy (e.g. "--native" to see C frames).
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raw = stem.with_suffix(".txt")
    svg = stem.with_suffix(".svg")
    extra = shlex.split(os.environ.get("BENCH_PYSPY_ARGS", ""))
    recorders = [
        subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited)
            [
                spy,
                "record",
                "--pid",
                str(server.pid),
                "--rate",
                "250",
                "--nonblocking",
                "--format",
                fmt,
                "--output",
                str(path),
                "--duration",
                "600",
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fmt, path in (("raw", raw), ("flamegraph", svg))
    ]
    await asyncio.sleep(1.0)
    try:
        result = await phase
    finally:
        for recorder in recorders:
            recorder.send_signal(signal.SIGINT)
        for recorder in recorders:
            try:
                recorder.wait(30)
            except subprocess.TimeoutExpired:
                recorder.kill()
    summary = summarize_stacks(raw) if raw.exists() else {}
    return {"stacks": str(raw), "flamegraph": str(svg), "result": result, **summary}


def summarize_stacks(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
            for f in stack.split(";")
        ]
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        if not frames:
            continue
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count

    # Frames on (nearly) every stack (the CLI, the event loop's run) say nothing: left out.
    root = max(inclusive.values(), default=0)
    inclusive = {k: v for k, v in inclusive.items() if v < 0.97 * root}

    def share(table: dict[str, int]) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda kv: -kv[1])[:top]
        return [(name, round(100 * c / max(total, 1), 1)) for name, c in ranked]

    return {"samples": total, "self_pct": share(own), "inclusive_pct": share(inclusive)}


async def traced_memory(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Open streams on a server under tracemalloc; which lines hold each stream's memory."""
    import tracemalloc

    snapshot = folder / "snapshot"
    server = Server(
        "mercurio-traced",
        [sys.executable, "-m", "bench.traced", "serve"],
        {**mercurio_env(folder / "traced", args.tracemalloc), "BENCH_SNAPSHOT": str(snapshot)},
        folder / "traced.log",
        args.source,
    )
    (folder / "traced").mkdir(exist_ok=True)
    try:
        await server.ready()
        bench = Bench(server, args)
        try:
            await bench.warm_up()

            async def take(n: int) -> tracemalloc.Snapshot:
                os.kill(server.pid, signal.SIGUSR1)
                done = Path(f"{snapshot}.{n}.done")
                for _ in range(600):
                    if done.exists():
                        break
                    await asyncio.sleep(0.1)
                return tracemalloc.Snapshot.load(f"{snapshot}.{n}")

            before = await take(1)
            await bench.open_streams([f"t{i}" for i in range(args.tracemalloc)])
            await asyncio.sleep(1.0)
            after = await take(2)
            n = len(bench.open_users)
        finally:
            bench.close()
    finally:
        server.stop()
    diff = after.compare_to(before, "lineno")
    grown = sum(d.size_diff for d in diff)
    return {
        "streams": n,
        "bytes_per_stream": grown / max(n, 1),
        "top": [
            {
                "where": f"{d.traceback[0].filename.replace(str(ROOT) + '/', '')}:"
                f"{d.traceback[0].lineno}",
                "bytes_per_stream": d.size_diff / max(n, 1),
                "blocks_per_stream": d.count_diff / max(n, 1),
            }
            for d in diff[:15]
        ],
    }


def fsync_rate(folder: Path, seconds: float = 1.0) -> float:
    """Appends + fsyncs per second on the disk that holds the database."""
    path = folder / "fsync.probe"
    block = b"x" * 4096
    count = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            os.write(fd, block)
            os.fsync(fd)
            count += 1
    finally:
        os.close(fd)
        path.unlink()
    return count / seconds


# -- report -----------------------------------------------------------------------------------


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _match(rows: list[dict[str, Any]], **keys: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in keys.items()):
            return row
    return None


def table(report: dict[str, Any]) -> str:
    """The figures as a text table: the service, the ceiling, their ratio, the target."""
    service = report["mercurio"]
    ceiling = report.get("ceiling") or {"memory": [], "fanout": [], "unicast": []}
    lines: list[tuple[str, ...]] = [
        ("measure", "at", "mercurio", "ceiling", "of ceiling", "target", ""),
    ]

    def row(
        name: str,
        at: str,
        ours: float,
        best: float | None,
        target: float | None,
        fmt: str,
        higher_better: bool,
    ) -> None:
        ratio = ""
        if best is not None and ours and best and math.isfinite(ours) and math.isfinite(best):
            ratio = f"{(ours / best if higher_better else best / ours):.0%}"
        verdict = ""
        if target is not None and math.isfinite(ours):
            verdict = "ok" if (ours >= target if higher_better else ours <= target) else "MISS"
        lines.append(
            (
                name,
                at,
                format(ours, fmt),
                "" if best is None else format(best, fmt),
                ratio,
                "" if target is None else ("≥ " if higher_better else "≤ ") + format(target, fmt),
                verdict,
            )
        )

    def shares(name: str, at: str, ours: dict[str, Any], best: dict[str, Any] | None) -> None:
        def text(phase: dict[str, Any] | None) -> str:
            if not phase:
                return ""
            keys = ("server_core_share", "loadgen_core_share", "others_core_share")
            return "/".join(f"{100 * phase[k]:.0f}" for k in keys)

        lines.append((name, at, text(ours), text(best), "", "", ""))

    for mem in service["memory"]:
        theirs = _match(ceiling["memory"], streams=mem["streams"])
        row(
            "KiB per idle stream",
            f"{mem['streams']:,} streams",
            mem["kib_per_stream"],
            theirs and theirs["kib_per_stream"],
            TARGETS["kib_per_stream"],
            ".1f",
            False,
        )
        row(
            "stream opens/s (while opening)",
            f"{mem['streams']:,} streams",
            mem["opened"] / max(mem["open_seconds"], 1e-9),
            theirs and theirs["opened"] / max(theirs["open_seconds"], 1e-9),
            None,
            ",.0f",
            True,
        )

    def measured(
        name: str,
        at: str,
        ours: dict[str, Any],
        best: dict[str, Any] | None,
        *path: str,
        target: float | None = None,
        fmt: str = ".1f",
        higher_better: bool = False,
    ) -> None:
        """A row whose figure sits at the same key path in our phase and the ceiling's."""

        def dig(phase: dict[str, Any]) -> float:
            value: Any = phase
            for key in path:
                value = value[key]
            return float(value)

        row(name, at, dig(ours), best and dig(best), target, fmt, higher_better)

    for f in service["fanout"]:
        theirs = _match(ceiling["fanout"], kind=f["kind"], mode=f["mode"], streams=f["streams"])
        big = f["streams"] >= 10_000 and f["kind"] == "announce"
        burst = f["mode"] == "burst"
        at = f"{f['streams']:,} {f['mode']}"
        name = f"{f['kind']} "
        measured(
            name + ("deliveries/s" if burst else "deliveries/s (offered)"),
            at,
            f,
            theirs,
            "deliveries_per_s",
            target=TARGETS["fanout_per_s"] if big and burst else None,
            fmt=",.0f",
            higher_better=True,
        )
        measured(
            name + "server CPU µs/delivery",
            at,
            f,
            theirs,
            "server_cpu_us_per_delivery",
            target=TARGETS["fanout_cpu_us"] if big and burst else None,
        )
        measured(name + "latency p50 ms", at, f, theirs, "latency", "p50_ms")
        measured(
            name + "latency p99 ms",
            at,
            f,
            theirs,
            "latency",
            "p99_ms",
            target=TARGETS["fanout_p99_ms"] if big and not burst else None,
        )
        shares(name + "CPU % srv/loadgen/other", at, f, theirs)
    for u in service["unicast"]:
        theirs = _match(ceiling["unicast"], concurrency=u["concurrency"])
        top = u["concurrency"] >= 64
        at = f"c={u['concurrency']}"
        measured(
            "unicast publishes/s",
            at,
            u,
            theirs,
            "publishes_per_s",
            target=TARGETS["unicast_per_s"] if top else None,
            fmt=",.0f",
            higher_better=True,
        )
        measured("unicast publish p99 ms", at, u, theirs, "publish_latency", "p99_ms")
        measured("unicast delivery p50 ms", at, u, theirs, "delivery_latency", "p50_ms")
        measured(
            "unicast delivery p99 ms",
            at,
            u,
            theirs,
            "delivery_latency",
            "p99_ms",
            target=TARGETS["unicast_delivery_p99_ms"] if top else None,
        )
        measured(
            "unicast server CPU µs/publish", at, u, theirs, "server_cpu_us_per_publish", fmt=".0f"
        )
        shares("unicast CPU % srv/loadgen/other", at, u, theirs)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    rendered = []
    for i, line in enumerate(lines):
        cells = [
            cell.ljust(widths[j]) if j < 2 else cell.rjust(widths[j]) for j, cell in enumerate(line)
        ]
        rendered.append("  ".join(cells).rstrip())
        if i == 0:
            rendered.append("  ".join("-" * w for w in widths))
    notes = [
        "",
        "of ceiling: the service's figure as a share of the bare asyncio server's on the same",
        "sockets in the same run (throughput: ours/theirs; CPU, latency, memory: theirs/ours).",
        "CPU %: CPU time / wall time in % of one core, for the server, the load generators",
        "(stream readers, publishers, this process) and everything else on the machine.",
        f"machine: {report['machine']['cpus']} CPUs; disk fsyncs/s: "
        f"{report['machine']['fsyncs_per_s']:,.0f}.",
    ]
    traced = report.get("tracemalloc")
    if traced:
        notes.append(
            f"tracemalloc: {traced['bytes_per_stream'] / 1024:.1f} KiB of Python objects per "
            f"stream over {traced['streams']:,} streams; top sites:"
        )
        for site in traced["top"][:8]:
            notes.append(
                f"  {site['bytes_per_stream']:8.0f} B  {site['blocks_per_stream']:5.1f} blocks"
                f"  {site['where']}"
            )
    return "\n".join(rendered + notes)


# -- main -------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    nofile = procstat.raise_nofile()
    need = max(args.streams) + 200
    if nofile < need:
        raise SystemExit(f"open-file limit {nofile} is below the {need} this run needs")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    profile_dir = args.out if args.profile else None
    report: dict[str, Any] = {
        "started": stamp,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "targets": TARGETS,
        "machine": {
            "cpus": procstat.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "nofile": nofile,
        },
        "git": _git_revision(),
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mercurio-bench-") as tmp:
        folder = Path(tmp)
        report["machine"]["fsyncs_per_s"] = fsync_rate(folder)
        say(f"disk: {report['machine']['fsyncs_per_s']:,.0f} fsyncs/s")
        env = mercurio_env(folder, max(args.streams))
        server = Server(
            "mercurio",
            [sys.executable, "-m", "mercurio", "serve"],
            env,
            folder / "server.log",
            args.source,
        )
        try:
            report["mercurio"] = await bench_server(server, args, "mercurio", profile_dir)
        except BaseException:
            tail = (folder / "server.log").read_text(errors="replace")[-4000:]
            print(f"--- server log (tail) ---\n{tail}", file=sys.stderr)
            raise
        finally:
            server.stop()
            log = (folder / "server.log").read_text(errors="replace")
            report["mercurio_log_tail"] = log[-3000:]
        if not args.no_ceiling:
            ceiling = Server(
                "ceiling", [sys.executable, "-m", "bench.ceiling"], {}, folder / "ceiling.log"
            )
            try:
                report["ceiling"] = await bench_server(ceiling, args, "ceiling", None)
            finally:
                ceiling.stop()
        if args.tracemalloc:
            say(f"tracemalloc over {args.tracemalloc:,} streams")
            report["tracemalloc"] = await traced_memory(args, folder)
    report["seconds"] = time.monotonic() - started
    path = args.out / f"{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=_jsonable, allow_nan=True))
    report["path"] = str(path)
    return report


def _jsonable(value: Any) -> Any:
    if isinstance(value, array):
        return None
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(type(value).__name__)


def _git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = procstat.run(main_async(args))
    print(table(report))
    print(f"\nwritten: {report['path']} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
