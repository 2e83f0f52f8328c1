"""Where the time and memory go: py-spy over a phase, tracemalloc over open streams."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.phases import Bench
from bench.servers import ROOT, Server, mercurio_env, stopping


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
    (folder / "traced").mkdir(exist_ok=True)
    server = Server(
        "mercurio-traced",
        [sys.executable, "-m", "bench.traced", "serve"],
        {**mercurio_env(folder / "traced", args.tracemalloc), "BENCH_SNAPSHOT": str(snapshot)},
        folder / "traced.log",
        args.source,
    )
    with stopping(server):
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
    diff = after.compare_to(before, "lineno")
    trees = [str(t) + "/" for t in (args.source, ROOT) if t is not None]

    def where(filename: str) -> str:
        for tree in trees:
            filename = filename.replace(tree, "")
        return filename

    grown = sum(d.size_diff for d in diff)
    return {
        "streams": n,
        "bytes_per_stream": grown / max(n, 1),
        "top": [
            {
                "where": f"{where(d.traceback[0].filename)}:{d.traceback[0].lineno}",
                "bytes_per_stream": d.size_diff / max(n, 1),
                "blocks_per_stream": d.count_diff / max(n, 1),
            }
            for d in diff[:40]
        ],
    }
