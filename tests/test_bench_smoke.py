"""The benchmark runs end to end in its tiny mode and writes every section of its JSON.

No timing is asserted: the machine is shared. Only that each figure exists and is sane.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(240)


def _positive(value: object, where: str) -> None:
    assert isinstance(value, int | float), f"{where}: {value!r} is not a number"
    assert math.isfinite(value) and value > 0, f"{where}: {value!r}"


def test_bench_tiny_writes_every_section(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--tiny", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    written = list(tmp_path.glob("*.json"))
    assert len(written) == 1, done.stdout
    report = json.loads(written[0].read_text())
    assert "KiB per idle stream" in done.stdout

    for side in ("mercurio", "ceiling"):
        figures = report[side]
        assert figures["memory"], side
        for memory in figures["memory"]:
            assert memory["streams"] == 50 and memory["failed"] == 0
            assert math.isfinite(memory["kib_per_stream"])
            _positive(memory["rss_mib"], f"{side} rss")

        kinds = {(f["kind"], f["mode"]) for f in figures["fanout"]}
        assert kinds == {("announce", "burst"), ("announce", "paced"), ("broadcast", "burst")}
        for phase in figures["fanout"]:
            where = f"{side} {phase['kind']} {phase['mode']}"
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

        levels = [u["concurrency"] for u in figures["unicast"]]
        assert levels == [1, 4], side
        for level in figures["unicast"]:
            where = f"{side} unicast c={level['concurrency']}"
            assert not level["publish_errors"], where
            assert level["deliveries"] == level["publishes"] > 0, where
            _positive(level["publishes_per_s"], where)
            _positive(level["publish_latency"]["p99_ms"], where)
            _positive(level["delivery_latency"]["p99_ms"], where)
            assert math.isfinite(level["server_cpu_us_per_publish"])

    assert report["machine"]["cpus"] >= 1
    _positive(report["machine"]["fsyncs_per_s"], "fsyncs")
