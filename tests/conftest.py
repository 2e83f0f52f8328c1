"""Fixtures: real servers on free loopback ports, real databases, tokens."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mercurio.auth import Authenticator
from mercurio.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("MERCURIO_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def services_required() -> bool:
    """On CI the service-backed tests are mandatory; on a laptop they may skip."""
    return os.environ.get("CI") == "true" or os.environ.get("MERCURIO_REQUIRE_SERVICES") == "1"


def skip_or_fail(reason: str) -> None:
    if services_required():
        pytest.fail(f"{reason} (required on CI)")
    pytest.skip(reason)


def rsa_pair() -> tuple[Any, str]:
    """A new RSA private key and its public key as PEM text."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public_pem


def rss_kib(pid: int) -> int:
    """The resident memory of a process, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def authenticator() -> Authenticator:
    return Authenticator(load_settings({"MERCURIO_ENV": "test"}))


def make_token(user: str, *, publisher: bool = False, ttl: float | None = 3600) -> str:
    return authenticator().mint_token(user, publisher=publisher, ttl=ttl)


def bearer(user: str, *, publisher: bool = False, ttl: float | None = 3600) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(user, publisher=publisher, ttl=ttl)}"}


PUBLISHER = bearer("666")


async def stored_notifications(
    client: httpx.AsyncClient, users: list[str]
) -> set[tuple[str, int, str]]:
    """(user, notification id, event id) of everything in these users' inboxes (500 each)."""
    stored: set[tuple[str, int, str]] = set()
    for user in users:
        page = await client.get(
            f"/api/clients/{user}/notifications", params={"limit": "500"}, headers=bearer(user)
        )
        assert page.status_code == 200, page.text
        stored |= {(user, n["notificationID"], n["eventID"]) for n in page.json()["notifications"]}
    return stored


def new_client_id() -> str:
    """A client id no other test uses, so tests can share one server."""
    return f"u{uuid.uuid4().hex[:12]}"


def server_files(folder: Path) -> dict[str, str]:
    """Settings that put a test server's SQLite database and its log in folder."""
    return {
        "MERCURIO_DB_CONN": f"sqlite:///{folder}/mercurio.db",
        "MERCURIO_TEST_LOG": str(folder / "server.log"),
    }


class ServerProcess:
    """`python -m mercurio serve` in its own process, as users run it."""

    def __init__(
        self,
        env: dict[str, str],
        port: int | None = None,
        *,
        args: tuple[str, ...] = (),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.port = port or free_port()
        self.env = env
        self.args = args
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(env.get("MERCURIO_TEST_LOG", os.devnull))

    @classmethod
    def in_folder(
        cls, folder: Path, env: dict[str, str] | None = None, **options: Any
    ) -> ServerProcess:
        """A server keeping its SQLite database and its log in folder."""
        return cls({**server_files(folder), **(env or {})}, **options)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        env = {**os.environ, "MERCURIO_ENV": "test", **self.env}
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mercurio",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *self.args,
            ],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        # Generous: on a shared 2-core machine a start (imports, migrations) once took > 30 s.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail()}")
            try:
                verify = self.tls if self.tls is not None else True
                if httpx.get(self.url + "/", timeout=1, verify=verify).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("server did not start in 30 s")

    def tail(self) -> str:
        try:
            return self.log_path.read_text()[-3000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One shared server on SQLite; tests keep apart by using fresh client ids."""
    folder = tmp_path_factory.mktemp("server")
    proc = ServerProcess.in_folder(
        folder,
        {
            "MERCURIO_SSE_HEARTBEAT": "1",
            "MERCURIO_REPLAY_MAX": "50",
            "MERCURIO_STREAM_BUFFER": "64",
        },
    ).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def announce_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A shared server for tests that announce to everyone.

    An announcement reaches every user of its database, so on the shared `server` it would
    show up in every other test's lists and unread counts.
    """
    folder = tmp_path_factory.mktemp("announce-server")
    proc = ServerProcess.in_folder(folder).start()
    yield proc
    proc.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[type[ServerProcess]]:
    """Start servers with their own settings; all are stopped after the test."""
    started: list[ServerProcess] = []

    def _make(env: dict[str, str] | None = None, port: int | None = None) -> ServerProcess:
        proc = ServerProcess.in_folder(tmp_path, env, port=port)
        started.append(proc)
        return proc.start()

    yield _make  # type: ignore[misc]
    for proc in started:
        proc.stop(signal.SIGKILL)


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped on exit."""
    name = f"mercurio_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        import asyncpg
    except ImportError:
        skip_or_fail("asyncpg is not installed")

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        skip_or_fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database shared by this test session (announcements land in every list)."""
    with postgres_database() as url:
        yield url
