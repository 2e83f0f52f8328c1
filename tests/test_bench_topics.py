"""bench.topics at a tiny scale: it runs end to end and reports one row per topic publish."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(300)


def test_bench_topics_tiny_stores_one_row_per_publish_and_prints_the_table() -> None:
    scale = ["--subscribers", "300", "--connected", "40", "--rounds", "3", "--workers", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.topics", *scale],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "40 streams open" in done.stdout
    assert '"subscribers":300' in done.stdout
    assert "rows stored for 3 topic publishes: 3" in done.stdout
    assert re.search(r"topic, 40 of 300 connected +\d+\.\d\d +\d+\.\d / \d+\.\d", done.stdout)
