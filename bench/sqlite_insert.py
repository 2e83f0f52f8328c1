"""SQLite inserts beside a busy event loop: executemany against one multi-row INSERT.

    .venv/bin/python -m bench.sqlite_insert

The writer's thread inserts a broadcast's 1,000 rows (WAL, synchronous=FULL, the service's
schema) while the main thread spins in Python, as the event loop does during a fan-out. The
stdlib driver lets go of the GIL around every sqlite3_step; executemany steps once a row, so it
must win the GIL back once a row, and each time waits out the switch interval. One multi-row
INSERT steps once per 500 rows. Both are run alone and contended, in one run.

Measured 2026-12-05: alone 4.8 -> 4.1 µs a row; beside the spinning thread 1,510 -> 24 µs a
row of wall time. In the server (bench.run A/B, three rounds) the change did not show: the
event loop waits in epoll often enough that the writer wins the GIL back, so the writer still
uses executemany.
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from mercurio.schema import metadata
from mercurio.store.sqlite_writes import _INSERT

# The writer's own statement; the multi-row form repeats its row of marks.
_HEAD, _ROW_MARKS = _INSERT.split(" VALUES ")
INSERT_CHUNK = 500  # rows per multi-row statement: 5,000 parameters

ROWS = 1000
Row = tuple[object, ...]


def _database(folder: Path) -> sqlite3.Connection:
    path = folder / "insert.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    engine.dispose()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _rows(first: int, batch: int) -> list[Row]:
    data = '{"t": 1733390000.123, "text": "hello there"}'
    moment = "2026-12-05 12:00:00.000000+00:00"
    return [
        (first + i, f"ev{batch}", "src", f"c{i}", "default", data, moment, "pub", None, None)
        for i in range(ROWS)
    ]


def executemany(conn: sqlite3.Connection, rows: list[Row]) -> None:
    conn.executemany(_INSERT, rows)


def multirow(conn: sqlite3.Connection, rows: list[Row]) -> None:
    for start in range(0, len(rows), INSERT_CHUNK):
        part = rows[start : start + INSERT_CHUNK]
        marks = ", ".join([_ROW_MARKS] * len(part))
        conn.execute(f"{_HEAD} VALUES {marks}", [v for r in part for v in r])


def _spin(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(range(1000))


def measure(insert: Callable[[sqlite3.Connection, list[Row]], None], contended: bool) -> str:
    with tempfile.TemporaryDirectory() as folder:
        conn = _database(Path(folder))
        stop = threading.Event()
        spinner = threading.Thread(target=_spin, args=(stop,)) if contended else None
        if spinner is not None:
            spinner.start()
        batches = 20
        wall, cpu = time.perf_counter(), time.thread_time()
        for batch in range(batches):
            conn.execute("BEGIN IMMEDIATE")
            insert(conn, _rows(batch * ROWS + 1, batch))
            conn.execute("COMMIT")
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        stop.set()
        if spinner is not None:
            spinner.join()
        conn.close()
    per_row = 1e6 / (batches * ROWS)
    return f"{wall * per_row:8.1f} µs wall  {cpu * per_row:6.2f} µs CPU per row"


def main() -> None:
    for contended in (False, True):
        for insert in (executemany, multirow):
            label = f"{insert.__name__:12s} {'beside a busy loop' if contended else 'alone':18s}"
            print(label, measure(insert, contended), flush=True)


if __name__ == "__main__":
    main()
