"""The servers under test, each in its own process, and the databases they start on.

Three of them: the service (`python -m mercurio serve`), the typical peer (bench/peer.py) and
the ceiling (bench/ceiling.py). A database can be prepared beforehand: migrated and filled
with rows of other clients (the flatness phase), or a fresh PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from bench import proc as procstat
from bench.client import HttpClient

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


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
            self.proc = subprocess.Popen(
                command,
                cwd=source or ROOT,
                env=source_env(env, source),
                stdout=out,
                stderr=subprocess.STDOUT,
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

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def source_env(env: dict[str, str], source: Path | None) -> dict[str, str]:
    merged = {**os.environ, **env}
    if source is not None:
        # Put the A/B copy first on the path: it shadows the editable install.
        merged["PYTHONPATH"] = os.pathsep.join([str(source), str(ROOT)])
    return merged


def mercurio_env(folder: Path, max_streams: int, db_conn: str | None = None) -> dict[str, str]:
    return {
        "MERCURIO_ENV": "test",
        "MERCURIO_ENV_DIR": str(folder),
        "MERCURIO_DB_CONN": db_conn or f"sqlite:///{folder}/bench.db",
        "MERCURIO_SSE_HEARTBEAT": "60",
        "MERCURIO_STREAM_BUFFER": "10000",
        "MERCURIO_MAX_DESTINATIONS": str(max(10_000, max_streams)),
        "MERCURIO_MAX_BODY_BYTES": str(16 * 1024 * 1024),
        # Per-stream open/close lines at info level would be measured as stream cost.
        "MERCURIO_LOG_LEVEL": "warning",
        "MERCURIO_LOG_FORMAT": "json",
        # The abuse limits (1,000 publishes/s, 20,000 rows/s by default) would cap the figures.
        "MERCURIO_PUBLISH_RATE": "0",
        "MERCURIO_PUBLISH_ROW_RATE": "0",
        "MERCURIO_PUBLISH_BYTE_RATE": "0",
    }


def mercurio(
    folder: Path, max_streams: int, source: Path | None, db_conn: str | None = None
) -> Server:
    folder.mkdir(parents=True, exist_ok=True)
    return Server(
        "mercurio",
        [sys.executable, "-m", "mercurio", "serve"],
        mercurio_env(folder, max_streams, db_conn),
        folder / "server.log",
        source,
    )


def peer(folder: Path) -> Server:
    """The typical peer always runs from this tree (an A/B source has no say in it)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Server(
        "peer",
        [sys.executable, "-m", "bench.peer", "--db", str(folder / "peer.db")],
        {},
        folder / "peer.log",
    )


def ceiling(folder: Path) -> Server:
    folder.mkdir(parents=True, exist_ok=True)
    return Server("ceiling", [sys.executable, "-m", "bench.ceiling"], {}, folder / "ceiling.log")


# -- databases --------------------------------------------------------------------------------


def migrate_mercurio(folder: Path, source: Path | None) -> Path:
    """`mercurio db upgrade` on the file the service of `folder` will open; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    env = source_env(mercurio_env(folder, 0), source)
    subprocess.run(
        [sys.executable, "-m", "mercurio", "db", "upgrade"],
        cwd=source or ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return folder / "bench.db"


def create_peer_db(folder: Path) -> Path:
    from bench.peer import connect

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "peer.db"
    connect(str(path)).close()
    return path


# What a prefilled row holds, by column name; other columns get NULL, or 0/'' when NOT NULL.
PREFILL_VALUES = {
    "event_id": lambda i: f"pre-{i}",
    "source_id": lambda i: "prefill",
    "publisher_id": lambda i: "prefill",
    # 100,000 clients with 10 rows each, none of them a user the benchmark streams to.
    "client_id": lambda i: f"old{i % 100_000}",
    "category": lambda i: "general",
    "data": lambda i: '"an older notification"',
    "created_at": lambda i: "2026-01-01 00:00:00.000000",
}


def prefill(path: Path, rows: int) -> float:
    """Insert `rows` notifications of other clients in one transaction; seconds it took."""
    started = time.monotonic()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        columns = db.execute("PRAGMA table_info(notifications)").fetchall()
        names: list[str] = []
        makers = []
        for _, name, kind, notnull, default, pk in columns:
            if pk:
                continue  # the rowid: SQLite numbers the rows
            maker = PREFILL_VALUES.get(name)
            if maker is None:
                if not notnull or default is not None:
                    continue
                blank: object = 0 if "INT" in str(kind).upper() else ""
                maker = lambda i, blank=blank: blank  # noqa: E731
            names.append(name)
            makers.append(maker)
        marks = ", ".join("?" for _ in names)
        sql = f"INSERT INTO notifications ({', '.join(names)}) VALUES ({marks})"
        db.execute("BEGIN")
        db.executemany(sql, ([make(i) for make in makers] for i in range(rows)))
        db.execute("COMMIT")
        # Start the server on a checkpointed file, not on a WAL holding a million rows.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def postgres_database(admin_url: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL database on the server of admin_url, dropped on exit."""
    import asyncpg  # type: ignore[import-untyped]

    name = f"mercurio_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_url, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    await admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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


@contextlib.contextmanager
def stopping(server: Server) -> Iterator[Server]:
    """Stop the server on the way out; on a failure, show the tail of its log."""
    try:
        yield server
    except BaseException:
        print(f"--- {server.name} log (tail) ---\n{server.log_tail(4000)}", file=sys.stderr)
        raise
    finally:
        server.stop()
