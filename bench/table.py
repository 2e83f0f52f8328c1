"""The report as tables: issue 11's figures side by side, then every phase in detail.

The first table has one row per figure of the issue's table (and its targets), with the
service, the typical peer and the bare ceiling measured in the same run as columns. The rows
are also written to the JSON (`table`), so a before/after comparison reads them directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

SIDES = ("mercurio", "peer", "ceiling")

# Issue 11's targets: (value, higher is better).
TARGETS: dict[str, tuple[float, bool]] = {
    "broadcast_cpu_us": (25.0, False),
    "broadcast_per_s": (40_000.0, True),
    "broadcast_p99_ms": (250.0, False),
    "unicast_per_s": (5_000.0, True),
    "unicast_delivery_p99_ms": (20.0, False),
    "unicast_cpu_us": (150.0, False),
    "kib_per_stream": (10.0, False),
    "announce_cpu_us": (10.0, False),
    "announce_paced_p99_ms": (100.0, False),
    "flat_cpu_ratio": (1.2, False),
    "flat_rate_ratio": (0.8, True),
    "pg_broadcast_per_s": (20_000.0, True),
    "pg_unicast_per_s": (3_000.0, True),
}

Getter = Callable[[dict[str, Any]], float | None]


def _find(rows: list[dict[str, Any]], **keys: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in keys.items()):
            return row
    return None


def _dig(value: Any, *path: str) -> float | None:
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) else None


def figures(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: its value for each side (None when not measured) and the target."""
    args = report["args"]
    n = max(args["streams"])
    top = max(args["concurrency"])
    per = min(args["per_request"], n)

    def fanout(kind: str, mode: str, *path: str) -> Getter:
        def get(section: dict[str, Any]) -> float | None:
            phase = _find(section.get("fanout", []), kind=kind, mode=mode, streams=n)
            return _dig(phase, *path)

        return get

    def unicast(*path: str) -> Getter:
        def get(section: dict[str, Any]) -> float | None:
            return _dig(_find(section.get("unicast", []), concurrency=top), *path)

        return get

    def memory(section: dict[str, Any]) -> float | None:
        return _dig(_find(section.get("memory", []), streams=n), "kib_per_stream")

    def traced(section: dict[str, Any]) -> float | None:
        value = _dig(section, "bytes_per_stream")
        return None if value is None else value / 1024

    def flat(*path: str) -> Getter:
        burst = fanout("broadcast", "burst", *path)

        def get(side: dict[str, Any]) -> float | None:
            full, empty = burst(side.get("prefilled", {})), burst(side.get("empty", {}))
            return full / empty if full is not None and empty else None

        return get

    stream_at = f"{n:,} streams"
    broadcast_at = f"{stream_at}, {per:,}/request"
    rows: list[tuple[str, str, str, str, Getter, str]] = [
        ("broadcast CPU µs/delivery", broadcast_at, "broadcast_cpu_us", "",
         fanout("broadcast", "burst", "server_cpu_us_per_delivery"), ".1f"),
        ("broadcast deliveries/s", broadcast_at, "broadcast_per_s", "",
         fanout("broadcast", "burst", "deliveries_per_s"), ",.0f"),
        ("broadcast p99 ms", broadcast_at, "broadcast_p99_ms", "",
         fanout("broadcast", "burst", "latency", "p99_ms"), ",.0f"),
        ("durable unicast/s", f"c={top}, {stream_at}", "unicast_per_s", "",
         unicast("publishes_per_s"), ",.0f"),
        ("unicast delivery p99 ms", f"c={top}", "unicast_delivery_p99_ms", "",
         unicast("delivery_latency", "p99_ms"), ",.1f"),
        ("unicast CPU µs/publish", f"c={top}", "unicast_cpu_us", "",
         unicast("server_cpu_us_per_publish"), ",.0f"),
        ("KiB per idle stream (RSS)", stream_at, "kib_per_stream", "", memory, ".1f"),
        ("KiB per idle stream (tracemalloc)", "", "kib_per_stream", "tracemalloc", traced, ".1f"),
        ("announce CPU µs/delivery", f"{stream_at}, burst", "announce_cpu_us", "",
         fanout("announce", "burst", "server_cpu_us_per_delivery"), ".1f"),
        ("announce paced p99 ms", f"{stream_at}, 50,000/s offered", "announce_paced_p99_ms", "",
         fanout("announce", "paced", "latency", "p99_ms"), ",.0f"),
        ("prefilled/empty CPU µs/delivery", "broadcast", "flat_cpu_ratio", "flatness",
         flat("server_cpu_us_per_delivery"), ".2f"),
        ("prefilled/empty deliveries/s", "broadcast", "flat_rate_ratio", "flatness",
         flat("deliveries_per_s"), ".2f"),
        ("PG broadcast deliveries/s", broadcast_at, "pg_broadcast_per_s", "postgres",
         fanout("broadcast", "burst", "deliveries_per_s"), ",.0f"),
        ("PG broadcast CPU µs/delivery", broadcast_at, "", "postgres",
         fanout("broadcast", "burst", "server_cpu_us_per_delivery"), ".1f"),
        ("PG broadcast p99 ms", broadcast_at, "", "postgres",
         fanout("broadcast", "burst", "latency", "p99_ms"), ",.0f"),
        ("PG durable unicast/s", f"c={top}, {stream_at}", "pg_unicast_per_s", "postgres",
         unicast("publishes_per_s"), ",.0f"),
        ("PG unicast delivery p99 ms", f"c={top}", "", "postgres",
         unicast("delivery_latency", "p99_ms"), ",.1f"),
    ]  # fmt: skip
    out = []
    for name, at, target_key, section, get, fmt in rows:
        if section == "flatness":
            stored = report.get("flatness", {})
            # The same broadcast phase, on a database prefilled with rows and on an empty one.
            where = {
                side: {"prefilled": stored[side], "empty": report[side]}
                for side in SIDES
                if side in stored and side in report
            }
            if "prefill_rows" in stored:
                at = f"{stored['prefill_rows']:,} rows stored, {at}"
        elif section == "tracemalloc":
            # Python objects only, over the traced server's streams (the service alone).
            where = {"mercurio": report["tracemalloc"]} if "tracemalloc" in report else {}
            if where:
                at = f"{report['tracemalloc']['streams']:,} streams"
        else:
            where = report.get(section, {}) if section else report
        values = {side: get(where[side]) if side in where else None for side in SIDES}
        target, higher = TARGETS.get(target_key, (None, True))
        ours = values["mercurio"]
        verdict = ""
        if target is not None and ours is not None and math.isfinite(ours):
            verdict = "ok" if (ours >= target if higher else ours <= target) else "MISS"
        out.append(
            {"figure": name, "at": at, **values, "target": target, "higher_better": higher,
             "verdict": verdict, "fmt": fmt}
        )  # fmt: skip
    return out


def _columns(lines: list[tuple[str, ...]], left: int) -> list[str]:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    rendered = []
    for i, line in enumerate(lines):
        cells = [c.ljust(widths[j]) if j < left else c.rjust(widths[j]) for j, c in enumerate(line)]
        rendered.append("  ".join(cells).rstrip())
        if i == 0:
            rendered.append("  ".join("-" * w for w in widths))
    return rendered


def issue_table(rows: list[dict[str, Any]]) -> list[str]:
    lines: list[tuple[str, ...]] = [("figure", "at", *SIDES, "target", "")]
    for row in rows:
        fmt = row["fmt"]
        cells = ["" if row[s] is None else format(row[s], fmt) for s in SIDES]
        target = row["target"]
        wanted = (
            "" if target is None else ("≥ " if row["higher_better"] else "≤ ") + format(target, fmt)
        )
        lines.append((row["figure"], row["at"], *cells, wanted, row["verdict"]))
    return _columns(lines, 2)


def _share(phase: dict[str, Any]) -> str:
    keys = ("server_core_share", "loadgen_core_share", "others_core_share")
    return "/".join(f"{100 * phase[k]:.0f}" for k in keys)


def detail_table(report: dict[str, Any]) -> list[str]:
    """Every phase of every server: rate, CPU, latency and who used the machine meanwhile."""
    sections: list[tuple[str, dict[str, Any]]] = [(s, report[s]) for s in SIDES if s in report]
    for group in ("flatness", "postgres"):
        for side, section in report.get(group, {}).items():
            if isinstance(section, dict) and section.get("fanout"):
                sections.append((f"{side} {group}", section))
    lines: list[tuple[str, ...]] = [
        ("server", "phase", "at", "per s", "CPU µs", "p50 ms", "p99 ms", "CPU % srv/lg/other")
    ]
    for label, section in sections:
        for f in section.get("fanout", []):
            lines.append((
                label, f"{f['kind']} {f['mode']}", f"{f['streams']:,}x{f['publishes']}",
                f"{f['deliveries_per_s']:,.0f}", f"{f['server_cpu_us_per_delivery']:.1f}",
                f"{f['latency']['p50_ms']:.1f}", f"{f['latency']['p99_ms']:.1f}", _share(f),
            ))  # fmt: skip
        for u in section.get("unicast", []):
            lines.append((
                label, "unicast", f"c={u['concurrency']}", f"{u['publishes_per_s']:,.0f}",
                f"{u['server_cpu_us_per_publish']:.0f}",
                f"{u['delivery_latency']['p50_ms']:.1f}", f"{u['delivery_latency']['p99_ms']:.1f}",
                _share(u),
            ))  # fmt: skip
    return _columns(lines, 3)


def render(report: dict[str, Any]) -> str:
    notes = [
        "",
        "peer: a typical FastAPI + sse-starlette service, stdlib sqlite3 (bench/peer.py);",
        "ceiling: a bare asyncio server, the same frames, no storage (bench/ceiling.py).",
        "Rates and latencies are wall clock on a shared machine; CPU µs (the server's utime +",
        "stime over the phase) is the figure that stays honest under contention.",
        f"machine: {report['machine']['cpus']} CPUs; disk fsyncs/s: "
        f"{report['machine']['fsyncs_per_s']:,.0f}.",
    ]
    traced = report.get("tracemalloc")
    if traced:
        notes.append(
            f"tracemalloc (mercurio): {traced['bytes_per_stream'] / 1024:.1f} KiB of Python "
            f"objects per stream over {traced['streams']:,} streams; top sites:"
        )
        for site in traced["top"][:8]:
            notes.append(
                f"  {site['bytes_per_stream']:8.0f} B  {site['blocks_per_stream']:5.1f} blocks"
                f"  {site['where']}"
            )
    skipped = report.get("postgres", {}).get("skipped")
    if skipped:
        notes.append(f"postgres: skipped ({skipped})")
    return "\n".join([*issue_table(figures(report)), "", *detail_table(report), *notes])


def main() -> None:
    """`python -m bench.table RESULT.json`: print a written report's tables again."""
    import json
    import sys

    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench.table bench/results/<timestamp>.json")
    with open(sys.argv[1]) as f:
        print(render(json.load(f)))


if __name__ == "__main__":
    main()
