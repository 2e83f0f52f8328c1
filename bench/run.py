"""Run the benchmark: `python -m bench.run` (about 10 minutes), `--quick`, `--tiny` (smoke test).

Issue 11's table, measured in one run on the same sockets for three servers side by side: the
service (`python -m mercurio serve`, a fresh SQLite file, durable writes), the typical peer
(bench/peer.py: FastAPI + sse-starlette + stdlib sqlite3) and the ceiling (bench/ceiling.py, a
bare asyncio server that stores nothing). For each:

  memory     RSS growth of the server per idle open stream (10,000 streams);
  broadcast  POST /api/events/broadcast to lists of 1,000 of the open streams' users: server
             CPU per delivery (the rows included), deliveries per second, latency;
  announce   one notification to everyone, as a burst and paced at 50,000 deliveries/s;
  unicast    durable publishes per second at each concurrency, with every stream still open.

Then the broadcast again on a database already holding 1,000,000 rows (the service and the
peer: flat as the table grows?), and the service on a fresh PostgreSQL database (broadcast and
unicast). The load generators are separate processes (bench/loadgen.py) reading raw sockets;
their CPU is reported next to the server's. The tables are printed and the figures written as
JSON to bench/results/<timestamp>.json (see bench/README.md for every field).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import proc as procstat
from bench import servers
from bench.phases import Bench
from bench.profiling import profiled, traced_memory
from bench.servers import ROOT, Server, stopping
from bench.table import TARGETS, figures, render

RESULTS = Path(__file__).resolve().parent / "results"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PHASES = {"fanout", "unicast", "peer", "ceiling", "flatness", "postgres"}
ANNOUNCE_RATE = 50_000.0  # deliveries/s offered by the paced announce (issue 11's figure)

MODES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        streams=[50], concurrency=[1, 4], unicast_seconds=1.0, paced_seconds=1.0,
        burst_deliveries=500, broadcast_deliveries=500, tracemalloc=0, prefill_rows=5_000,
    ),
    "quick": dict(
        streams=[1000], concurrency=[1, 64], unicast_seconds=2.0, paced_seconds=2.0,
        burst_deliveries=30_000, broadcast_deliveries=20_000, tracemalloc=0,
        prefill_rows=200_000,
    ),
    "full": dict(
        streams=[10000], concurrency=[1, 16, 64], unicast_seconds=5.0, paced_seconds=4.0,
        burst_deliveries=100_000, broadcast_deliveries=50_000, tracemalloc=1000,
        prefill_rows=1_000_000,
    ),
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0]
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="1,000 streams, short phases (~3 min)")
    add("--tiny", action="store_true", help="50 streams, a few publishes (smoke test)")
    add("--streams", help="comma-separated stream counts (default 10000)")
    add("--concurrency", help="unicast concurrencies (default 1,16,64)")
    add("--unicast-seconds", type=float, help="seconds per unicast level")
    add("--paced-seconds", type=float, help="seconds of paced announcements")
    add("--burst-deliveries", type=int, help="deliveries per announce burst")
    add("--broadcast-deliveries", type=int, help="deliveries per broadcast phase")
    add("--per-request", type=int, default=1000, help="destinations per broadcast request")
    add("--broadcast-connections", type=int, default=2, help="connections publishing the "
        "broadcasts, each waiting for its answer before the next")  # fmt: skip
    add("--prefill-rows", type=int, help="rows stored before the flatness broadcast")
    add("--workers", type=int, default=2, help="stream-reading processes")
    add("--tracemalloc", type=int, help="streams to open on a server under tracemalloc")
    add("--pg", default=PG_ADMIN, help="PostgreSQL server (a database to connect to as admin); "
        "a fresh database is created on it for the run and dropped after")  # fmt: skip
    add("--no-ceiling", action="store_true", help="same as --skip ceiling")
    add("--skip", default="", help=f"comma-separated phases to leave out: {sorted(PHASES)}")
    add("--source", type=Path, help="run the service from this source tree (an A/B copy)")
    add("--profile", action="store_true", help="py-spy the service's largest fan-out and "
        "top unicast level into bench/results/ (needs py-spy)")  # fmt: skip
    add("--out", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)
    defaults = MODES["tiny" if args.tiny else "quick" if args.quick else "full"]
    for name in ("streams", "concurrency"):
        text = getattr(args, name)
        setattr(args, name, [int(x) for x in text.split(",")] if text else defaults[name])
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    if args.no_ceiling:
        args.skip.add("ceiling")
    if args.skip - PHASES:
        parser.error(f"--skip: unknown phases {sorted(args.skip - PHASES)}")
    if args.source is not None:
        args.source = args.source.resolve()
        if not (args.source / "mercurio" / "__init__.py").is_file():
            parser.error(f"--source: no mercurio package in {args.source}")
    args.streams.sort()
    return args


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def bench_server(
    server: Server,
    args: argparse.Namespace,
    label: str,
    *,
    fanout: tuple[str, ...] = ("broadcast", "announce"),
    streams: list[int] | None = None,
    concurrency: list[int] | None = None,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Every phase asked for against one server; the figures as a dict."""
    await server.ready()
    bench = Bench(server, args)
    out: dict[str, Any] = {"memory": [], "fanout": [], "unicast": [], "pid": server.pid}
    fanout = () if "fanout" in args.skip else fanout
    try:
        await bench.warm_up()
        baseline = server.rss()
        out["baseline_rss_mib"] = baseline / 2**20
        for count in streams or args.streams:
            memory = await bench.memory(count, baseline)
            out["memory"].append(memory)
            n = memory["streams"]
            say(f"{label}: {n} streams open, {memory['kib_per_stream']:.1f} KiB each")
            for kind, publishes, every in fanout_plan(args, fanout, n):
                result = await bench.fanout(kind, publishes=publishes, interval=every)
                out["fanout"].append(result)
                say(
                    f"{label}: {kind} {result['mode']} x{publishes} to "
                    f"{result['destinations_per_publish']}: "
                    f"{result['deliveries_per_s']:,.0f}/s, "
                    f"{result['server_cpu_us_per_delivery']:.1f} us CPU, "
                    f"p99 {result['latency']['p99_ms']:.0f} ms"
                )
        if profile_dir is not None and fanout:
            n = len(bench.open_users)
            out["profile_fanout"] = await profiled(
                server,
                profile_dir / f"{label}-broadcast-{n}",
                bench.fanout("broadcast", publishes=broadcasts(args, n), interval=0),
            )
        levels = concurrency if concurrency is not None else args.concurrency
        for level in [] if "unicast" in args.skip else levels:
            result = await bench.unicast(level, args.unicast_seconds)
            out["unicast"].append(result)
            say(
                f"{label}: unicast c={level} to {result['streams']} streams: "
                f"{result['publishes_per_s']:,.0f}/s, "
                f"delivery p99 {result['delivery_latency']['p99_ms']:.1f} ms"
            )
        if profile_dir is not None and levels and "unicast" not in args.skip:
            out["profile_unicast"] = await profiled(
                server,
                profile_dir / f"{label}-unicast-c{max(levels)}",
                bench.unicast(max(levels), args.unicast_seconds),
            )
        await bench.close_streams()
    finally:
        bench.close()
    return out


def broadcasts(args: argparse.Namespace, streams: int) -> int:
    return max(2, int(args.broadcast_deliveries) // min(int(args.per_request), streams))


def fanout_plan(
    args: argparse.Namespace, kinds: tuple[str, ...], streams: int
) -> list[tuple[str, int, float]]:
    """(kind, publishes, interval) of each fan-out phase; interval 0 is a burst."""
    plan: list[tuple[str, int, float]] = []
    if "broadcast" in kinds:
        # First, while the database holds only the warm-up's rows: the "empty" figure.
        plan.append(("broadcast", broadcasts(args, streams), 0.0))
    if "announce" in kinds:
        # Paced at the target delivery rate (at most 100 publishes a second).
        interval = max(streams / ANNOUNCE_RATE, 0.01)
        plan.append(("announce", max(3, args.burst_deliveries // streams), 0.0))
        plan.append(("announce", max(5, int(args.paced_seconds / interval)), interval))
    return plan


async def measure(server: Server, args: argparse.Namespace, label: str, **plan: Any) -> Any:
    with stopping(server):
        result = await bench_server(server, args, label, **plan)
    result["log_tail"] = server.log_tail(1500)
    return result


async def flatness(args: argparse.Namespace, folder: Path, sides: list[str]) -> dict[str, Any]:
    """The broadcast phase again, on a database that already holds `prefill_rows` rows."""
    out: dict[str, Any] = {"prefill_rows": args.prefill_rows}
    top = [max(args.streams)]
    for side in sides:
        where = folder / f"{side}-prefilled"
        if side == "mercurio":
            path = servers.migrate_mercurio(where, args.source)
        else:
            path = servers.create_peer_db(where)
        # The server starts once the rows are in: nothing else writes to the file meanwhile.
        seconds = await asyncio.to_thread(servers.prefill, path, args.prefill_rows)
        say(f"{side}: {args.prefill_rows:,} rows stored in {seconds:.1f} s")
        if side == "mercurio":
            server = servers.mercurio(where, top[0], args.source)
        else:
            server = servers.peer(where)
        result = await measure(
            server, args, f"{side} prefilled", fanout=("broadcast",), streams=top, concurrency=[]
        )
        out[side] = {**result, "prefill_seconds": seconds}
        shutil.rmtree(where, ignore_errors=True)
    return out


async def postgres(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The service on a fresh PostgreSQL database: the broadcast and the top unicast level."""
    try:
        database = servers.postgres_database(args.pg)
        url = await database.__aenter__()
    except Exception as exc:  # unreachable, no asyncpg, no rights: said, not fatal
        return {"skipped": f"{type(exc).__name__}: {exc}"}
    try:
        server = servers.mercurio(folder / "postgres", max(args.streams), args.source, url)
        result = await measure(
            server, args, "mercurio postgres", fanout=("broadcast",),
            streams=[max(args.streams)], concurrency=[max(args.concurrency)],
        )  # fmt: skip
    finally:
        await database.__aexit__(None, None, None)
    return {"mercurio": result}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    nofile = procstat.raise_nofile()
    need = max(args.streams) + 200
    if nofile < need:
        raise SystemExit(f"open-file limit {nofile} is below the {need} this run needs")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
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
        "git": _git_revision(args.source or ROOT),
    }
    started = time.monotonic()
    top = max(args.streams)
    with tempfile.TemporaryDirectory(prefix="mercurio-bench-") as tmp:
        folder = Path(tmp)
        report["machine"]["fsyncs_per_s"] = servers.fsync_rate(folder)
        say(f"disk: {report['machine']['fsyncs_per_s']:,.0f} fsyncs/s")
        report["mercurio"] = await measure(
            servers.mercurio(folder / "mercurio", top, args.source),
            args,
            "mercurio",
            profile_dir=args.out if args.profile else None,
        )
        if "peer" not in args.skip:
            report["peer"] = await measure(servers.peer(folder / "peer"), args, "peer")
        if "ceiling" not in args.skip:
            report["ceiling"] = await measure(servers.ceiling(folder / "ceiling"), args, "ceiling")
        if args.tracemalloc:
            say(f"tracemalloc over {args.tracemalloc:,} streams")
            report["tracemalloc"] = await traced_memory(args, folder)
        if not {"flatness", "fanout"} & args.skip:
            sides: list[str] = [s for s in ("mercurio", "peer") if s in report]
            report["flatness"] = await flatness(args, folder, sides)
        if "postgres" not in args.skip:
            report["postgres"] = await postgres(args, folder)
    report["seconds"] = time.monotonic() - started
    report["table"] = figures(report)
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


def _git_revision(tree: Path) -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = procstat.run(main_async(args))
    print(render(report))
    print(f"\nwritten: {report['path']} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
