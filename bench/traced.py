"""`python -m mercurio serve` under tracemalloc: SIGUSR1 dumps a snapshot.

    BENCH_SNAPSHOT=/tmp/snap python -m bench.traced serve --host 127.0.0.1 --port 8124

Each SIGUSR1 writes `<BENCH_SNAPSHOT>.<n>` (n = 1, 2, ...) and then `<...>.<n>.done`; the
benchmark compares two snapshots to see which lines of code hold each open stream's memory.
Only for that memory measurement: tracing slows every allocation.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType


def main() -> None:
    tracemalloc.start(1)
    target = os.environ["BENCH_SNAPSHOT"]
    count = [0]

    def dump(_sig: int, _frame: FrameType | None) -> None:
        count[0] += 1
        gc.collect()
        path = f"{target}.{count[0]}"
        tracemalloc.take_snapshot().dump(path)
        Path(path + ".done").touch()

    signal.signal(signal.SIGUSR1, dump)
    from mercurio.cli import main as mercurio_main

    sys.argv = ["mercurio", *sys.argv[1:]]
    mercurio_main()


if __name__ == "__main__":
    main()
