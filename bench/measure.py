"""Figures from raw samples: latency percentiles, and the CPU used over a phase."""

from __future__ import annotations

import math
import os
import time
from array import array
from typing import Protocol

from bench import proc as procstat


class HasCpu(Protocol):
    def cpu(self) -> float: ...


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

    def __init__(self, server: HasCpu, loadgen: list[HasCpu]) -> None:
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
